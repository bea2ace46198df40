"""Small helpers shared by the experiments that test the tutorials' other claims
(``convergence``, ``batchnorm``, ``recurrent``, ``droppath``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from dropkit.experiments import plan
from dropkit.experiments.options import option
from dropkit.experiments.plan import model_settings
from dropkit.experiments.train import RunSpec


def variant_runs(config: dict[str, Any], models: Sequence[str],
                 variants: Sequence[str]) -> list[RunSpec]:
    """seeds x models x variants x p, seed outermost; variant ``"none"`` runs once
    at p = 0 without dropout, every other variant with dropout at each of the
    model's p. The variant is carried in ``RunSpec.extra``."""
    specs = []
    for seed in config["seeds"]:
        for model in models:
            for variant in variants:
                for p in [0.0] if variant == "none" else model_settings(config, model)["p"]:
                    specs.append(
                        plan.spec(
                            config,
                            model=model,
                            regularizer="none" if variant == "none" else "dropout",
                            p=p,
                            seed=seed,
                            extra={"variant": variant},
                        )
                    )
    return specs


def first_reaching(history: dict[str, list], field: str, target: float) -> int | None:
    """Index of the first epoch whose ``field`` is >= ``target`` (None if never)."""
    for i, value in enumerate(history[field]):
        if value >= target:
            return i
    return None


def nanmean(values: Sequence[float | None]) -> float:
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    return sum(v) / len(v) if v else math.nan


def variant_label(r: dict[str, Any], _records: Any = None) -> str:
    """``none``, or ``<variant> p=<p>``: the curve label of the variant experiments."""
    return r["variant"] if r["variant"] == "none" else f"{r['variant']} p={r['p']:g}"


#: the dropout implementations convergence and step-time compare
IMPLS = ("torch", "dropkit")


def impl_option() -> Any:
    """``--impl torch,dropkit``: one declaration for convergence and step-time (the
    ``dropkit run`` parser holds each flag once; each experiment checks its own)."""
    return option(IMPLS, "dropout implementation(s)", choices=IMPLS,
                  what="dropout implementation")
