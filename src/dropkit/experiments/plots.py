"""The PNGs: learning curves shared by all experiments, and helpers for the
experiment-specific plots. matplotlib is imported lazily, with the Agg backend."""

from __future__ import annotations

import warnings
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
    """Mean and std over the runs at each epoch, over the runs still training then.

    Runs stop at different epochs (early stopping); a curve ends where its
    longest run ended rather than where its shortest did. Missing values (a
    diverged run's None) are left out.
    """
    length = max(len(r["history"][field]) for r in runs)
    values = np.full((len(runs), length), np.nan)
    for i, r in enumerate(runs):
        row = [np.nan if v is None else v for v in r["history"][field]]
        values[i, : len(row)] = row
    epochs = np.arange(1, length + 1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an epoch where every run is NaN
        return epochs, np.nanmean(values, 0), np.nanstd(values, 0)


def plot_curves(
    records: Sequence[dict[str, Any]],
    path: Path,
    *,
    label: Callable[[dict, Sequence[dict]], str] = default_label,
    panel: Callable[[dict], str] | None = None,
    title: str = "Validation (solid) and train (dashed; a fixed 1000-example sample) accuracy, "
    "mean ± std over seeds",
    color_by: Callable[[dict], float] | None = None,
    color_label: str = "",
) -> Path:
    """Train vs test accuracy over epochs: one panel per dataset/model, one colour per
    regularizer (or ``label``), test solid, train dashed, a band of ± 1 std over seeds.

    ``color_by`` (e.g. ``lambda r: r["p"]``) colours each line by a number on a
    colormap with a colorbar titled ``color_label`` instead of a legend: the way
    to show ten values of p without ten legend entries over the curves. Without
    it, a legend of more than :data:`LEGEND_INSIDE_MAX` entries goes beside the
    panel, not over the curves.
    """
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    panel = panel or (lambda r: f"{r['model']} on {r['dataset']}")
    panels = group(records, lambda r: (panel(r),))
    n = len(panels)
    cols = 2 if n == 4 else min(n, 3)
    rows = (n + cols - 1) // cols
    lines_per_panel = max(len(group(rs, lambda r: (label(r, records),))) for rs in panels.values())
    outside = color_by is None and lines_per_panel > LEGEND_INSIDE_MAX
    width = 5.2 + (1.8 if outside or color_by is not None else 0.0)
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols, 4.0 * rows), squeeze=False, layout="constrained"
    )
    cmap = plt.get_cmap("tab10")
    scale = None
    if color_by is not None:
        from matplotlib.colors import Normalize

        values = [float(color_by(r)) for r in records]
        scale = plt.cm.ScalarMappable(Normalize(min(values), max(values)), "viridis")
    for ax, ((name,), runs) in zip(axes.flat, panels.items(), strict=False):
        lines = group(runs, lambda r: (label(r, records),))
        for i, ((lab,), rs) in enumerate(lines.items()):
            if scale is not None:
                color = scale.to_rgba(float(color_by(rs[0])))
            elif len(lines) <= 10:
                color = cmap(i % 10)
            else:
                color = plt.get_cmap("viridis")(i / len(lines))
            for field, style, legend in (("val_acc", "-", lab), ("train_acc", "--", None)):
                ep, m, s = _history_band(rs, field)
                ax.plot(ep, m, style, color=color, lw=1.6, label=legend)
                ax.fill_between(ep, m - s, m + s, color=color, alpha=0.15, lw=0)
        ax.set_title(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        if scale is not None:
            fig.colorbar(scale, ax=ax, label=color_label)
        elif outside:
            legend_outside(ax)
        else:
            ax.legend(fontsize=8, loc="lower right")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    suptitle(fig, title)
    return save(fig, path)


#: legends with more entries than this go beside the axes (see :func:`legend_outside`)
LEGEND_INSIDE_MAX = 6


def legend_outside(ax: Any, *, fontsize: float = 8, title: str | None = None) -> Any:
    """The legend of ``ax`` to the right of the axes, where it covers no data.

    For many lines (sweep-p's ten values of p). Pair it with a figure made
    with ``layout="constrained"`` or saved by :func:`save` (a tight bounding
    box), so that the legend is inside the PNG.
    """
    return ax.legend(
        fontsize=fontsize,
        title=title,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
    )


def suptitle(fig: Any, text: str, fontsize: float = 11) -> Any:
    """A figure title wrapped to the figure's width, so it is never cut at the edges."""
    import textwrap

    # an average character is about 0.55 em wide; 72 points per inch
    chars = max(20, int(fig.get_figwidth() * 72 / (0.55 * fontsize)))
    return fig.suptitle(textwrap.fill(text, chars), fontsize=fontsize)


def bars(
    ax: Any,
    labels: Sequence[str],
    series: dict[str, Sequence[float]],
    errors: dict[str, Sequence[float]] | None = None,
    *,
    colors: dict[str, Any] | Sequence[Any] | None = None,
    annotate: str | None = "{:.3f}",
    top: float | None = None,
    legend: bool | None = None,
) -> Any:
    """Bars from 0: one group per label, one bar per series, ± ``errors`` as error bars.

    A bar's height is read against zero, so the axis always starts at 0 (a bar
    plot cut at 0.5 makes 0.6 look twice 0.55). ``top`` fixes the upper limit
    (e.g. 1.05 for accuracies); by default it leaves room for the error bars and
    the value written above each bar (``annotate``, a format; None for none).
    ``colors``: a colour per series (dict), or per bar (a list, one series).

    Examples::

        bars(ax, ["none", "dropout"], {"train": [0.99, 0.93], "test": [0.65, 0.69]},
             {"train": [0.00, 0.01], "test": [0.01, 0.01]}, top=1.05)
    """
    names = list(series)
    k = len(names)
    width = 0.8 / k
    x = np.arange(len(labels))
    highest = 0.0
    for j, name in enumerate(names):
        heights = np.asarray(series[name], dtype=float)
        err = None if errors is None or name not in errors else np.asarray(errors[name], float)
        if isinstance(colors, dict):
            color = colors.get(name)
        elif colors is not None and k == 1:
            color = list(colors)
        else:
            color = None
        xs = x + (j - (k - 1) / 2) * width
        ax.bar(xs, heights, width * 0.95, yerr=err, color=color, capsize=3, label=name)
        tops = heights + (0 if err is None else np.nan_to_num(err))
        highest = max(highest, float(np.nanmax(tops)) if len(tops) else 0.0)
        if annotate:
            for xi, h, t in zip(xs, heights, tops, strict=True):
                ax.text(xi, t, annotate.format(h), ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0.0, top if top is not None else max(highest * 1.12, 1e-9))
    ax.set_xticks(x, labels)
    ax.grid(axis="y", alpha=0.3)
    if legend if legend is not None else k > 1:
        ax.legend(fontsize=8)
    return ax


def save(fig: Any, path: Path) -> Path:
    """Lay out, write (110 dpi) and close ``fig``; return ``path``.

    Every PNG goes through here. A figure made without a layout engine is laid
    out with ``tight_layout``; the saved area is the tight bounding box of
    everything drawn, so a legend placed beside the axes or a long title is
    never cut off.
    """
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.15)
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
