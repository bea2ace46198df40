"""Options, declared once: one frozen dataclass per experiment.

Each field is an option. Its annotation (``int``, ``float``, ``str``, ``bool``,
``tuple[X, ...]`` for a list, ``X | None`` when it may be absent), its default
and the :func:`option` metadata (help, choices, a check of each value) generate
three things that used to be written by hand and drifted apart:

- the command line: the flag ``--name-with-dashes``, an argparse type that
  converts and checks, and ``--help`` showing the real default;
- the validation shared by the command line and the Python API
  (:func:`resolve`), so a value is checked in one place whichever way it came;
- the JSON form written to ``results.json`` (tuples become lists).

An experiment subclasses :class:`CommonOptions` and redeclares a common field to
change its default (``models: tuple[str, ...] = ("gru",)``); relations between
options go in ``__post_init__``, which raises ``ValueError`` with a message a
user can act on.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

_KEY = "dropkit.option"


@dataclass(frozen=True)
class Declared:
    """What :func:`option` records about a field, besides its type and default."""

    #: the help text, or a function returning it (for lists known only at run time)
    help: str | Callable[[], str]
    metavar: str | None = None
    #: other spellings of the flag, e.g. ``("--model",)`` beside ``--models``
    aliases: tuple[str, ...] = ()
    #: the allowed values (of each item, for a list), or a function returning them
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None
    #: what a choice is called in the error message ("model", "variant")
    what: str = "value"
    #: ``check(value) -> message | None`` for each value (each item of a list)
    check: Callable[[Any], str | None] | None = None
    #: a command-line token -> value, replacing the conversion the type implies
    parse: Callable[[str], Any] | None = None
    #: several tokens after the flag (``--models a b``), each itself a comma list
    many: bool = False
    #: how ``--help`` shows a default of None ("per model")
    none_means: str | None = None


def option(default: Any, help: str | Callable[[], str], **declared: Any) -> Any:
    """A dataclass field that is a command-line option (see :class:`Declared`)."""
    if isinstance(default, list):
        default = tuple(default)
    return field(default=default, metadata={_KEY: Declared(help, **declared)})


# ------------------------------------------------------------------- checks
def positive(value: float) -> str | None:
    return None if value >= 1 else "expected a positive integer"


def at_least(low: float, *, strict: bool = False) -> Callable[[float], str | None]:
    def check(value: float) -> str | None:
        ok = math.isfinite(value) and (value > low if strict else value >= low)
        sign = ">" if strict else ">="
        return None if ok else f"expected a finite number {sign} {low:g}"

    return check


def between(low: float, high: float, *, low_open: bool = False, high_open: bool = False,
            name: str = "value") -> Callable[[float], str | None]:
    """A check of ``low <(=) value <(=) high``: ``between(0, 1, high_open=True, name="p")``."""
    left, right = ("<" if low_open else "<="), ("<" if high_open else "<=")

    def check(value: float) -> str | None:
        ok = (
            not math.isnan(value)
            and (value > low if low_open else value >= low)
            and (value < high if high_open else value <= high)
        )
        return None if ok else f"expected {low:g} {left} {name} {right} {high:g}"

    return check


# ---------------------------------------------------------------- the fields
@dataclass(frozen=True)
class Field:
    """One option as the generators see it."""

    name: str
    default: Any
    declared: Declared
    item: type  #: int, float, str or bool
    is_list: bool
    optional: bool  #: None is a valid value

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def choices(self) -> list[Any] | None:
        c = self.declared.choices
        return list(c() if callable(c) else c) if c is not None else None


def _kind(annotation: Any) -> tuple[type, bool, bool]:
    """``tuple[float, ...] | None`` -> (float, is_list=True, optional=True)."""
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        (annotation,) = args
    if typing.get_origin(annotation) is tuple:
        return typing.get_args(annotation)[0], True, optional
    return annotation, False, optional


@functools.cache
def fields(options: type) -> tuple[Field, ...]:
    """The options of a dataclass, in declaration order (common ones first).

    A field redeclared by a subclass to change its default keeps the metadata of
    its first declaration. Cached: a class's fields do not change, and the command
    line asks for them many times while it is built.
    """
    hints = typing.get_type_hints(options)
    declared: dict[str, Declared] = {}
    for klass in reversed(options.__mro__):
        for f in getattr(klass, "__dataclass_fields__", {}).values():
            if _KEY in f.metadata and f.name not in declared:
                declared[f.name] = f.metadata[_KEY]
    out = []
    for f in dataclasses.fields(options):
        if f.name not in declared:
            raise TypeError(f"{options.__qualname__}.{f.name} is not declared with option()")
        item, is_list, optional = _kind(hints[f.name])
        out.append(Field(f.name, f.default, declared[f.name], item, is_list, optional))
    return tuple(out)


def defaults(options: type) -> dict[str, Any]:
    """The declared defaults, in their JSON form."""
    return {f.name: to_json(f.default) for f in fields(options)}


def to_json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# --------------------------------------------------------------- conversion
def _one(f: Field, value: Any) -> Any:
    """One value (one item of a list) converted to the field's type and checked.

    Raises ValueError with the problem, without the flag (the callers add it).
    """
    if f.item is bool:
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("expected true or false")
            value = value.lower() in ("true", "1", "yes")
        value = bool(value)
    elif f.item in (int, float):
        try:
            number = f.item(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected {'an integer' if f.item is int else 'a number'}") from None
        if f.item is int and isinstance(value, float) and value != number:
            raise ValueError("expected an integer")
        value = number
    else:
        value = str(value).strip()
    choices = f.choices()
    if choices is not None and value not in choices:
        raise ValueError(
            f"unknown {f.declared.what} {value!r}. Choose one of: "
            + ", ".join(str(c) for c in choices)
        )
    problem = f.declared.check(value) if f.declared.check is not None else None
    if problem:
        raise ValueError(problem)
    return value


def convert(f: Field, value: Any) -> Any:
    """A value given on the command line or to the Python API -> its checked form.

    Lists accept a comma string, a sequence (of comma strings, too) or a scalar;
    a list must not be empty nor repeat a value.
    """
    if value is None:
        if f.optional:
            return None
        raise ValueError("a value is required")
    if not f.is_list:
        return _one(f, value)
    if isinstance(value, str):
        items: list[Any] = [v for v in value.split(",") if v.strip()]
    elif isinstance(value, list | tuple):
        items = []
        for v in value:
            items.extend(v.split(",") if isinstance(v, str) else v if isinstance(v, list | tuple)
                         else [v])
        items = [v for v in items if not (isinstance(v, str) and not v.strip())]
    else:
        items = [value]
    if not items:
        raise ValueError("give at least one value")
    out = [_one(f, v) for v in items]
    repeated = sorted({repr(v) for v in out if out.count(v) > 1})
    if repeated:
        raise ValueError(f"a value is repeated ({repeated[0]})")
    return out


def resolve(options: type, given: dict[str, Any]) -> dict[str, Any]:
    """Declared defaults < ``given`` (None = not given), each value checked, then the
    dataclass's own ``__post_init__`` checks; returns the JSON form.

    Raises ValueError naming the option (``Invalid value for --p: ...``) or the
    ``__post_init__`` message.
    """
    values: dict[str, Any] = {}
    for f in fields(options):
        value = given.get(f.name)
        if value is None:
            value = f.default
        try:
            values[f.name] = convert(f, value)
        except ValueError as e:
            shown = ",".join(map(str, value)) if isinstance(value, list | tuple) else value
            raise ValueError(f"Invalid value for {f.flag}: {e}. Received: {shown}") from None
    instance = options(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    return {f.name: to_json(getattr(instance, f.name)) for f in fields(options)}


# ------------------------------------------------------------- command line
def add_arguments(group: argparse._ArgumentGroup, options: type, *,
                  names: Sequence[str] | None = None,
                  shown: dict[str, Any] | None = None) -> None:
    """Declare ``options``' fields (or those in ``names``) on ``group``.

    Every argument has ``default=None`` so that "not given" is visible (the
    experiment's default is filled in by :func:`resolve`, and ``--resume`` can
    tell a given option from a default). ``shown`` overrides the default that
    ``--help`` prints.
    """
    for f in fields(options):
        if names is not None and f.name not in names:
            continue

        def parse(text: str, f: Field = f) -> Any:
            try:
                return f.declared.parse(text) if f.declared.parse else convert(f, text)
            except ValueError as e:
                raise argparse.ArgumentTypeError(f"{e}. Received: {text}") from None

        default = (shown or {}).get(f.name, f.default)
        if default is None:
            default = f.declared.none_means or "none"
        elif isinstance(default, list | tuple):
            default = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
        elif isinstance(default, bool):
            default = "on" if default else "off"
        base = f.declared.help() if callable(f.declared.help) else f.declared.help
        text = base + (f" (default: {default})" if default not in (None, "") else "")
        kwargs: dict[str, Any] = dict(dest=f.name, default=None, help=text.replace("%", "%%"))
        if f.item is bool and not f.is_list:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=parse, metavar=f.declared.metavar or _metavar(f))
            if f.declared.many:
                kwargs["nargs"] = "+"
        group.add_argument(f.flag, *f.declared.aliases, **kwargs)


def _metavar(f: Field) -> str:
    base = f.name.upper().split("_")[-1]
    return f"{base[:1]}1,{base[:1]}2,.." if f.is_list else base


# ---------------------------------------------------------- common options
def _module(name: str) -> Any:
    """A sibling module, imported when first needed (the registries import heavy things)."""
    import importlib

    return importlib.import_module(f"dropkit.experiments.{name}")


def _names(module: str) -> Callable[[], list[str]]:
    return lambda: _module(module).names()


def _seeds(text: str) -> list[int]:
    """``3`` -> seeds 0, 1, 2; ``4,7`` -> seeds 4 and 7."""
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError("expected integers") from None
    if "," in text:
        return values
    if not values or values[0] < 1:
        raise ValueError("expected a number of seeds >= 1")
    return list(range(values[0]))


def _device(name: str) -> str | None:
    if name in ("auto", "cpu") or name.startswith("cuda"):
        return None
    return "expected auto, cpu or cuda[:N]"


@dataclass(frozen=True)
class CommonOptions:
    """The options every experiment has; an experiment's dataclass subclasses it."""

    dataset: str = option("mnist1d", lambda: "data set: " + ", ".join(_names("data")()))
    models: tuple[str, ...] = option(
        ("wide-mlp",), lambda: "one or more of " + ", ".join(_names("models")())
        + " (space or comma separated; the experiment checks which it trains)",
        aliases=("--model",), many=True, metavar="MODEL",
    )
    regularizers: tuple[str, ...] = option(
        ("none", "dropout"), lambda: "one or more of " + ", ".join(_names("regularizers")()),
        aliases=("--regularizer",),
        many=True, choices=_names("regularizers"), what="regularizer", metavar="REG",
    )
    p: tuple[float, ...] | None = option(
        None, "drop probability/probabilities", many=True, metavar="P",
        check=between(0, 1, high_open=True, name="p"), none_means="per model",
    )
    epochs: int | None = option(
        None, "the budget: at most this many epochs", check=positive, none_means="per model"
    )
    patience: int | None = option(
        50, "stop after this many epochs without a better validation accuracy", check=positive
    )
    val_fraction: float = option(
        0.2, "the part of the training split held out for validation",
        check=between(0, 1, low_open=True, high_open=True, name="fraction"),
    )
    seeds: tuple[int, ...] = option(
        (0, 1, 2), "a number of seeds (3 = seeds 0,1,2) or a comma list of seeds",
        parse=_seeds, metavar="N|S1,S2,..",
    )
    batch_size: int | None = option(None, "mini-batch size", check=positive,
                                    none_means="per model")
    lr: float | None = option(None, "Adam learning rate", check=at_least(0, strict=True),
                              none_means="per model")
    weight_decay: float | None = option(1e-3, "strength of l2", check=at_least(0))
    l1: float | None = option(1e-5, "strength of l1", check=at_least(0))
    max_norm: float | None = option(2.0, "max-norm radius for dropout+maxnorm",
                                    check=at_least(0, strict=True))
    device: str = option("auto", "auto (cuda if present, else cpu), cpu or cuda[:N]",
                         check=_device)
    threads: int | None = option(None, "torch CPU threads per run", check=positive,
                                 none_means="1")
    workers: int | None = option(
        None, "runs at a time: processes with --backend local, CPUs of a local Ray",
        check=positive, none_means="this machine's cores",
    )
    backend: str = option("local", "local (this machine) or ray (Ray tasks; needs dropkit[ray])",
                          choices=lambda: _module("backends").BACKENDS, what="backend")
    ray_address: str | None = option(
        None, "the Ray cluster for --backend ray, e.g. auto or ray://head:10001",
        metavar="ADDR", none_means="start a local Ray",
    )

    def __post_init__(self) -> None:
        if self.ray_address is not None and self.backend != "ray":
            raise ValueError("--ray-address applies to --backend ray only.")
        from dropkit.experiments import regularizers

        if any(regularizers.get(r).droppath for r in self.regularizers):
            bad = [m for m in self.models if m != "resmlp"]
            if bad:
                raise ValueError(
                    f"Regularizer 'droppath' needs residual branches; model(s) "
                    f"{', '.join(bad)} have none. Use --model resmlp."
                )


#: options that describe *how* to run, not *what*: ``--resume`` may change them
RUNTIME_OPTIONS = ("device", "threads", "workers", "backend", "ray_address")


def common_names() -> list[str]:
    return [f.name for f in fields(CommonOptions)]


def own_fields(options: type) -> list[Field]:
    """The fields an experiment adds to the common ones."""
    common = set(common_names())
    return [f for f in fields(options) if f.name not in common]
