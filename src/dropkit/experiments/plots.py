"""The PNGs: learning curves shared by all experiments, and helpers for the
experiment-specific plots. matplotlib is imported lazily, with the Agg backend."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dropkit.experiments.summary import group


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def default_label(r: dict[str, Any], records: Sequence[dict[str, Any]]) -> str:
    """``regularizer`` (plus ``p=`` when the regularizer uses p)."""
    from dropkit.experiments.regularizers import REGULARIZERS

    reg = REGULARIZERS.get(r["regularizer"])
    if reg is not None and reg.uses_p:
        return f"{r['regularizer']} p={r['p']:g}"
    return r["regularizer"]


def _history_band(runs: Sequence[dict[str, Any]], field: str) -> tuple[np.ndarray, ...]:
    length = min(len(r["history"][field]) for r in runs)
    values = np.array([r["history"][field][:length] for r in runs], dtype=float)
    epochs = np.asarray(runs[0]["history"]["epoch"][:length])
    return epochs, values.mean(0), values.std(0)


def plot_curves(
    records: Sequence[dict[str, Any]],
    path: Path,
    *,
    label: Callable[[dict, Sequence[dict]], str] = default_label,
    panel: Callable[[dict], str] | None = None,
    title: str = "Test (solid) and train (dashed; a fixed 1000-example subset) accuracy, "
    "mean ± std over seeds",
) -> Path:
    """Train vs test accuracy over epochs: one panel per dataset/model, one colour per
    regularizer (or ``label``), test solid, train dashed, a band of ± 1 std over seeds."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    panel = panel or (lambda r: f"{r['model']} on {r['dataset']}")
    panels = group(records, lambda r: (panel(r),))
    n = len(panels)
    cols = 2 if n == 4 else min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, ((name,), runs) in zip(axes.flat, panels.items(), strict=False):
        lines = group(runs, lambda r: (label(r, records),))
        for i, ((lab,), rs) in enumerate(lines.items()):
            color = cmap(i % 10) if len(lines) <= 10 else plt.get_cmap("viridis")(i / len(lines))
            for field, style, legend in (("test_acc", "-", lab), ("train_acc", "--", None)):
                ep, m, s = _history_band(rs, field)
                ax.plot(ep, m, style, color=color, lw=1.6, label=legend)
                ax.fill_between(ep, m - s, m + s, color=color, alpha=0.15, lw=0)
        ax.set_title(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    return save(fig, path)


def save(fig: Any, path: Path) -> Path:
    """Lay out, write (110 dpi) and close ``fig``; return ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return Path(path)


def errorbar_lines(
    ax: Any,
    records: Sequence[dict[str, Any]],
    x: Callable[[dict], float],
    y: Callable[[dict], float],
    line: Callable[[dict], str],
    *,
    style: str = "-o",
    colors: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Mean ± std over seeds of ``y`` against ``x``, one line per ``line(record)``.
    Returns the colour used for each line."""
    plt = pyplot()
    used = {}
    for i, ((name,), runs) in enumerate(group(records, lambda r: (line(r),)).items()):
        by_x = group(runs, lambda r: (x(r),))
        xs = np.array([k[0] for k in by_x])
        order = np.argsort(xs)
        means = np.array([np.mean([y(r) for r in rs]) for rs in by_x.values()])
        stds = np.array([np.std([y(r) for r in rs]) for rs in by_x.values()])
        color = (colors or {}).get(name, plt.get_cmap("tab10")(i % 10))
        ax.errorbar(
            xs[order],
            means[order],
            yerr=stds[order],
            fmt=style,
            color=color,
            capsize=3,
            ms=4,
            lw=1.5,
            label=name,
        )
        used[name] = color
    return used
