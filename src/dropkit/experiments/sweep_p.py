"""``dropkit run sweep-p``: test accuracy and generalization gap against the drop
probability p in 0..0.9 -- the classic U-shaped curve (Srivastava et al. 2014, fig. 9)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dropkit.experiments.options import CommonOptions
from dropkit.experiments.plan import grid
from dropkit.experiments.registry import Experiment, register
from dropkit.experiments.summary import difference, group, mean_std, significance
from dropkit.experiments.train import RunSpec
from dropkit.experiments.wording import percent as pct


@dataclass(frozen=True)
class SweepPOptions(CommonOptions):
    regularizers: tuple[str, ...] = ("dropout",)
    p: tuple[float, ...] | None = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    seeds: tuple[int, ...] = (0, 1)


@register
class SweepP(Experiment):
    name = "sweep-p"
    help = "Test accuracy and generalization gap against the drop probability p = 0..0.9."
    options = SweepPOptions
    plot_name = "sweep_p.png"

    def runs(self, config: dict[str, Any]) -> list[RunSpec]:
        return grid(config)

    def curves(self, records, config):
        return dict(
            color_by=lambda r: r["p"], color_label="drop probability p",
        )

    def figures(self, records, config, out_dir):
        from dropkit.experiments.plots import errorbar_lines, pyplot, save

        # ten p values: curves coloured by p with a colorbar, not a ten-entry legend
        plt = pyplot()
        fig, (ax_acc, ax_gap) = plt.subplots(1, 2, figsize=(11, 4.2))
        for (_dataset, model, reg), runs in group(
            records, ("dataset", "model", "regularizer")
        ).items():
            name = f"{model} ({reg})"
            colors = errorbar_lines(
                ax_acc,
                runs,
                lambda r: r["p"],
                lambda r: r["test_acc"],
                lambda r, name=name: f"{name} test",
            )
            errorbar_lines(
                ax_acc,
                runs,
                lambda r: r["p"],
                lambda r: r["train_acc"],
                lambda r, name=name: f"{name} train",
                style="--s",
                colors={f"{name} train": colors[f"{name} test"]},
            )
            errorbar_lines(
                ax_gap, runs, lambda r: r["p"], lambda r: r["gap"], lambda r, name=name: name
            )
        ax_acc.set_title(f"Accuracy against p on {config['dataset']} (mean ± std over seeds)")
        ax_acc.set_xlabel("drop probability p")
        ax_acc.set_ylabel("accuracy (eval mode, best validation epoch)")
        ax_gap.set_title("Generalization gap (train - test accuracy)")
        ax_gap.set_xlabel("drop probability p")
        ax_gap.set_ylabel("gap")
        ax_gap.axhline(0, color="k", lw=0.8)
        for ax in (ax_acc, ax_gap):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        return [save(fig, Path(out_dir) / self.plot_name)]

    def reading(self, records, config):
        return sweep_reading(records)


def sweep_reading(records: list[dict[str, Any]]) -> list[str]:
    paragraphs = []
    for (dataset, model, reg), runs in group(records, ("dataset", "model", "regularizer")).items():
        by_p = group(runs, ("p",))
        ps = sorted(k[0] for k in by_p)
        acc = {p: mean_std(r["test_acc"] for r in by_p[(p,)])[0] for p in ps}
        gap = {p: mean_std(r["gap"] for r in by_p[(p,)])[0] for p in ps}
        best = max(ps, key=acc.__getitem__)
        text = [f"{model} ({reg}) on {dataset}:"]
        text.append(f"test accuracy peaks at p = {best:g} ({pct(acc[best])}).")
        lo = ps[0]
        if best != lo:
            d, se = difference(
                [r["test_acc"] for r in by_p[(lo,)]], [r["test_acc"] for r in by_p[(best,)]]
            )
            text.append(
                f"That is {100 * d:+.1f} points over p = {lo:g} "
                f"({significance(d, se)} against the seed spread)."
            )
        else:
            text.append(f"No p above {lo:g} improves on it: dropout does not help here.")
        hi = ps[-1]
        if hi != best:
            text.append(
                f"Beyond the peak accuracy falls, to {pct(acc[hi])} at p = {hi:g}"
                + (
                    ": the U shape (too little dropout overfits, too much underfits)."
                    if best != lo
                    else "."
                )
            )
        text.append(
            f"The gap goes from {100 * gap[lo]:.1f} points at p = {lo:g} to "
            f"{100 * gap[hi]:.1f} at p = {hi:g}"
            + (
                ": more dropout, less overfitting, even where accuracy no longer improves."
                if gap[hi] < gap[lo]
                else "."
            )
        )
        paragraphs.append(" ".join(text))
    return paragraphs
