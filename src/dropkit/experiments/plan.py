"""The one planner: a resolved configuration -> the ordered list of runs.

Every experiment's run list is a grid over models x regularizers x p x seeds
(seed outermost, so that an interrupted experiment already holds complete
seeds), with the per-model training settings after command-line overrides and
the protocol's settings (validation fraction, patience) from the configuration.
An experiment narrows or extends the grid through the arguments of :func:`grid`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dropkit.experiments import models as model_registry
from dropkit.experiments import regularizers as regularizer_registry
from dropkit.experiments.train import RunSpec


def as_list(value: Any) -> list:
    """``"a,b"``, ``["a", "b,c"]``, a scalar or None -> a flat list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    if isinstance(value, list | tuple):
        out: list = []
        for v in value:
            out.extend(as_list(v) if isinstance(v, str | list | tuple) else [v])
        return out
    return [value]


def model_settings(config: dict[str, Any], model: str) -> dict[str, Any]:
    """A model's budget, batch size, learning rate and p list, after command-line overrides."""
    spec = model_registry.get(model)
    return {
        "epochs": int(config["epochs"] or spec.defaults["epochs"]),
        "batch_size": int(config["batch_size"] or spec.defaults["batch_size"]),
        "lr": float(config["lr"] or spec.defaults["lr"]),
        "p": list(config["p"]) if config["p"] is not None else [spec.defaults["p"]],
        "why": spec.why,
    }


def spec(
    config: dict[str, Any], *, model: str, regularizer: str, p: float, seed: int, **fields: Any
) -> RunSpec:
    """One run with the configuration's settings for ``model`` (budget, batch size,
    learning rate, regularizer strengths, validation fraction, patience); ``fields``
    override any RunSpec field (``extra={"variant": "locked"}``, ``train_fraction=...``)."""
    s = model_settings(config, model)
    settings: dict[str, Any] = dict(
        dataset=config["dataset"],
        model=model,
        regularizer=regularizer,
        p=float(p),
        seed=int(seed),
        epochs=s["epochs"],
        batch_size=s["batch_size"],
        lr=s["lr"],
        weight_decay=float(config["weight_decay"]),
        l1=float(config["l1"]),
        max_norm=float(config["max_norm"]),
        val_fraction=float(config.get("val_fraction", 0.2)),
        patience=config.get("patience", 50),
    )
    settings.update(fields)
    return RunSpec(**settings)


def grid(
    config: dict[str, Any],
    *,
    models: Sequence[str] | None = None,
    regularizers: Sequence[str] | None = None,
    p: Sequence[float] | None = None,
    seeds: Sequence[int] | None = None,
    extra: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
    **fields: Any,
) -> list[RunSpec]:
    """models x regularizers x p (for regularizers that use p) x extra x seeds.

    Each axis defaults to the configuration's (``p`` to the model's settings).
    ``extra`` is one dict of identity fields for every run, or a list of them: one
    more axis (e.g. ``[{"variant": "locked"}, {"variant": "naive"}]``). ``fields``
    override RunSpec fields for every run (e.g. ``train_fraction=0.5``).
    """
    extras = [dict(extra or {})] if extra is None or isinstance(extra, dict) else list(extra)
    specs = []
    for seed in config["seeds"] if seeds is None else seeds:
        for model in config["models"] if models is None else models:
            s = model_settings(config, model)
            for name in config["regularizers"] if regularizers is None else regularizers:
                reg = regularizer_registry.get(name)
                for prob in (s["p"] if p is None else p) if reg.uses_p else [0.0]:
                    for more in extras:
                        specs.append(
                            spec(
                                config, model=model, regularizer=name, p=prob, seed=seed,
                                **{"extra": dict(more), **fields},
                            )
                        )
    return specs
