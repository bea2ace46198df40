"""The plot helpers: bars from zero, titles within the figure, legends off the curves."""

from __future__ import annotations

import pytest

from dropkit.experiments import plots


def _records(ps=(0.0,), models=("wide-mlp",), seeds=(0, 1)):
    out = []
    for model in models:
        for p in ps:
            for seed in seeds:
                acc = [0.3 + 0.1 * e - 0.2 * p + 0.01 * seed for e in range(5)]
                out.append(
                    {
                        "dataset": "mnist1d",
                        "model": model,
                        "regularizer": "dropout",
                        "p": p,
                        "seed": seed,
                        "history": {
                            "epoch": [1, 2, 3, 4, 5],
                            "test_acc": acc,
                            "val_acc": acc,
                            "train_acc": [a + 0.1 for a in acc],
                        },
                    }
                )
    return out


def _inside(fig, artist) -> bool:
    fig.canvas.draw()
    box = artist.get_window_extent(fig.canvas.get_renderer())
    page = fig.bbox
    return box.x0 >= page.x0 - 0.5 and box.x1 <= page.x1 + 0.5 and box.y1 <= page.y1 + 0.5


def test_curves_title_stays_inside_a_one_panel_figure(tmp_path, monkeypatch):
    seen = {}
    real_save = plots.save
    monkeypatch.setattr(plots, "save", lambda fig, path: seen.setdefault("fig", fig) and path)
    plots.plot_curves(_records(), tmp_path / "curves.png")
    fig = seen["fig"]
    assert "\n" in fig._suptitle.get_text()  # the long default title wrapped
    assert _inside(fig, fig._suptitle)
    real_save(fig, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_many_lines_get_a_legend_beside_the_panel_or_a_colorbar(tmp_path, monkeypatch):
    ps = [i / 10 for i in range(10)]
    figs = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figs.append(fig) or path)
    plots.plot_curves(_records(ps), tmp_path / "a.png")
    ax = figs[0].axes[0]
    legend = ax.get_legend()
    figs[0].canvas.draw()
    renderer = figs[0].canvas.get_renderer()
    # the legend lies right of the axes: it covers none of the curves
    assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1
    plots.plot_curves(_records(ps), tmp_path / "b.png", color_by=lambda r: r["p"],
                      color_label="drop probability p")
    ax, colorbar = figs[1].axes
    assert ax.get_legend() is None and colorbar.get_ylabel() == "drop probability p"


def test_bars_start_at_zero_and_leave_room_for_the_labels(tmp_path):
    plt = plots.pyplot()
    fig, ax = plt.subplots()
    plots.bars(
        ax,
        ["none", "dropout", "l2"],
        {"train": [0.99, 0.93, 0.97], "test": [0.65, 0.69, 0.66]},
        {"train": [0.001, 0.01, 0.004], "test": [0.01, 0.012, 0.008]},
        colors={"train": "#9bbbe0", "test": "#2a5da8"},
    )
    low, high = ax.get_ylim()
    assert low == 0.0 and high >= 0.99 + 0.001
    assert len(ax.patches) == 6 and len(ax.texts) == 6
    assert ax.get_legend() is not None
    path = plots.save(fig, tmp_path / "bars.png")
    assert path.stat().st_size > 0


@pytest.mark.parametrize("top", [None, 1.05])
def test_bars_with_one_series_and_per_bar_colours(top):
    plt = plots.pyplot()
    fig, ax = plt.subplots()
    plots.bars(ax, ["a", "b"], {"test": [0.52, 0.55]}, colors=["r", "g"], top=top)
    assert ax.get_ylim()[0] == 0.0
    assert ax.get_ylim()[1] == pytest.approx(top if top else 0.55 * 1.12)
    assert ax.get_legend() is None
    plt.close(fig)
