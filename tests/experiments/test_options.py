"""The options dataclasses: one declaration gives the flags, --help and the checks
that the command line and the Python API share."""

from __future__ import annotations

import argparse
from dataclasses import FrozenInstanceError, dataclass

import pytest

from dropkit.experiments import options, registry
from dropkit.experiments.options import CommonOptions, between, option, positive
from dropkit.experiments.runner import ConfigError, resolve_config


@dataclass(frozen=True)
class _Demo(CommonOptions):
    seeds: tuple[int, ...] = (4, 5)
    fractions: tuple[float, ...] = option(
        (0.5, 1.0), "fractions", check=between(0, 1, low_open=True, name="fraction")
    )
    mode: str = option("a", "a mode", choices=("a", "b"), what="mode")
    reps: int = option(3, "repetitions", check=positive)
    fast: bool = option(False, "go fast")
    target: str | None = option(None, "a column", none_means="the last one")

    def __post_init__(self):
        super().__post_init__()
        if self.mode == "b" and self.reps < 2:
            raise ValueError("--mode b needs --reps >= 2")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="demo")
    options.add_arguments(p, _Demo)
    return p


@pytest.mark.parametrize("name", registry.names())
def test_every_experiment_declares_its_options_with_option(name):
    exp = registry.get(name)
    assert issubclass(exp.options, CommonOptions)
    fields = options.fields(exp.options)  # raises for a field declared without option()
    assert [f.name for f in fields][: len(options.common_names())] == options.common_names()
    assert resolve_config(name, {})  # the defaults pass their own checks


def test_a_redeclared_common_field_keeps_its_help_and_checks():
    seeds = {f.name: f for f in options.fields(_Demo)}["seeds"]
    assert seeds.default == (4, 5) and "number of seeds" in seeds.declared.help
    with pytest.raises(ValueError, match="Invalid value for --p: expected 0 <= p < 1"):
        options.resolve(_Demo, {"p": [0.5, 1.0]})


def test_defaults_are_filled_and_written_as_json():
    config = options.resolve(_Demo, {"reps": 7})
    assert config["seeds"] == [4, 5] and config["fractions"] == [0.5, 1.0]
    assert config["reps"] == 7 and config["fast"] is False and config["target"] is None


@pytest.mark.parametrize(
    "given, expected",
    [
        ({"fractions": "0.25,1"}, [0.25, 1.0]),  # a comma string
        ({"fractions": ["0.25", "0.5,1"]}, [0.25, 0.5, 1.0]),  # tokens of comma lists
        ({"fractions": 0.5}, [0.5]),  # a scalar
        ({"fractions": (1,)}, [1.0]),
    ],
)
def test_lists_take_every_spelling_the_command_line_and_python_use(given, expected):
    assert options.resolve(_Demo, given)["fractions"] == expected


@pytest.mark.parametrize(
    "given, message",
    [
        ({"fractions": [0.0]}, "--fractions: expected 0 < fraction <= 1. Received: 0.0"),
        ({"fractions": [0.5, 0.5]}, "--fractions: a value is repeated (0.5)"),
        ({"fractions": []}, "--fractions: give at least one value"),
        ({"fractions": ["x"]}, "--fractions: expected a number"),
        ({"mode": "c"}, "--mode: unknown mode 'c'. Choose one of: a, b"),
        ({"reps": 0}, "--reps: expected a positive integer"),
        ({"reps": 2.5}, "--reps: expected an integer"),
        ({"mode": "b", "reps": 1}, "--mode b needs --reps >= 2"),  # __post_init__
        ({"backend": "local", "ray_address": "auto"}, "--ray-address applies to --backend ray"),
    ],
)
def test_bad_values_name_the_option(given, message):
    with pytest.raises(ValueError) as e:
        options.resolve(_Demo, given)
    assert message in str(e.value)


def test_the_command_line_uses_the_same_checks(capsys):
    p = _parser()
    args = p.parse_args(["--fractions", "0.25,1", "--mode", "b", "--fast", "--seeds", "3"])
    assert args.fractions == [0.25, 1.0] and args.mode == "b" and args.fast is True
    assert args.seeds == [0, 1, 2]  # "3" = three seeds
    assert p.parse_args(["--no-fast"]).fast is False
    assert p.parse_args([]).reps is None  # not given: the default is filled in later
    with pytest.raises(SystemExit):
        p.parse_args(["--fractions", "0,1"])
    assert "--fractions: expected 0 < fraction <= 1. Received: 0,1" in capsys.readouterr().err


def test_help_shows_the_real_defaults():
    text = " ".join(_parser().format_help().split())
    assert "fractions (default: 0.5,1)" in text
    assert "repetitions (default: 3)" in text
    assert "go fast (default: off)" in text
    assert "a column (default: the last one)" in text
    assert "(default: 4,5)" in text  # the redeclared common default


def test_options_are_frozen():
    with pytest.raises(FrozenInstanceError):
        _Demo().reps = 4  # type: ignore[misc]


def test_a_field_without_option_is_a_declaration_error():
    @dataclass(frozen=True)
    class Bad(CommonOptions):
        undeclared: int = 3

    with pytest.raises(TypeError, match="undeclared is not declared with option"):
        options.fields(Bad)


def test_the_runner_reports_a_bad_value_as_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="--fractions: expected 0 < fraction <= 1"):
        resolve_config("data-size", {"fractions": [0.5, 2.0]})
