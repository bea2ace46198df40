"""Aggregation over seeds (mean +- std) and the small statistics the readings use."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

#: the metrics every summary row carries: (record field, column title)
METRICS = (
    ("test_acc", "test acc"),
    ("val_acc", "val acc"),
    ("best_epoch", "best epoch"),
    ("stopped_epoch", "stopped"),
    ("train_acc", "train acc"),
    ("gap", "gap"),
    ("test_loss", "test loss"),
    ("seconds", "seconds"),
)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    v = [float(x) for x in values if x is not None]
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, 0.0
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def group(
    records: Sequence[dict[str, Any]], by: Sequence[str] | Callable[[dict], tuple]
) -> dict[tuple, list[dict[str, Any]]]:
    """Records grouped by the fields ``by`` (insertion order kept)."""
    key = by if callable(by) else (lambda r: tuple(r.get(f) for f in by))
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(key(r), []).append(r)
    return groups


def summary_table(
    records: Sequence[dict[str, Any]],
    by: Sequence[str] = ("dataset", "model", "regularizer", "p"),
    metrics: Sequence[tuple[str, str]] = METRICS,
) -> list[dict[str, Any]]:
    """One row per group: the ``by`` fields, ``n`` (seeds) and ``(mean, std)`` per metric."""
    rows = []
    for values, runs in group(records, by).items():
        row: dict[str, Any] = dict(zip(by, values, strict=True))
        row["n"] = len(runs)
        for field, _title in metrics:
            row[field] = mean_std(r.get(field) for r in runs)
        rows.append(row)
    return rows


def difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean of ``b`` minus mean of ``a`` and the standard error of that difference."""
    ma, sa = mean_std(a)
    mb, sb = mean_std(b)
    if len(a) < 2 or len(b) < 2:  # one seed: no estimate of the noise
        return mb - ma, math.nan
    se = math.sqrt(sa**2 / len(a) + sb**2 / len(b))
    return mb - ma, se


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean of ``b - a`` over pairs (e.g. two predictors of the same trained network)
    and its standard error: seed-to-seed variation shared by both cancels."""
    d = [y - x for x, y in zip(a, b, strict=True)]
    m, s = mean_std(d)
    return m, s / math.sqrt(len(d)) if len(d) > 1 else math.nan


def significance(diff: float, se: float) -> str:
    """A plain word for how a difference compares with the seed-to-seed noise.

    ``clear`` beyond 2 standard errors, ``small`` between 1 and 2, ``within
    noise`` below 1, ``untested`` with a single seed (no estimate of the noise).
    With 3 seeds this is a rough guide, not a test.
    """
    if math.isnan(se):
        return "untested"
    if se == 0:
        return "clear" if diff != 0 else "within noise"
    z = abs(diff) / se
    return "clear" if z >= 2 else "small" if z >= 1 else "within noise"


def fmt(value: Any, digits: int = 3) -> str:
    """``(mean, std)`` -> ``"0.688 ± 0.004"``; floats -> fixed digits; rest -> str."""
    if isinstance(value, tuple) and len(value) == 2:
        m, s = value
        if isinstance(m, float) and math.isnan(m):
            return "-"
        return f"{m:.{digits}f} ± {s:.{digits}f}"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 and value != 0 else f"{value:.{digits}f}"
    return "" if value is None else str(value)
