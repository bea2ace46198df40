"""``dropkit run data-size``: with and without dropout as the training set shrinks.

Each fraction of the training set is a stratified random subset (drawn with the
run's seed). The number of optimiser steps is held fixed: a run on 10% of the
data trains for 10x the epochs, so small sets are not simply under-trained
(``--fixed-epochs`` turns that off). The test set is always the full one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dropkit.experiments.options import CommonOptions, between, option
from dropkit.experiments.plan import grid
from dropkit.experiments.registry import Experiment, register
from dropkit.experiments.summary import difference, group, significance, summary_table
from dropkit.experiments.train import RunSpec
from dropkit.experiments.wording import percent as pct


@dataclass(frozen=True)
class DataSizeOptions(CommonOptions):
    seeds: tuple[int, ...] = (0, 1)
    fractions: tuple[float, ...] = option(
        (0.1, 0.25, 0.5, 1.0), "fractions of the training set",
        check=between(0, 1, low_open=True, name="fraction"),
    )
    fixed_epochs: bool = option(
        False, "train every fraction for the same number of epochs (off: the same number "
        "of optimiser steps)",
    )


@register
class DataSize(Experiment):
    name = "data-size"
    help = "With and without dropout as the training set shrinks (10%..100%)."
    options = DataSizeOptions
    plot_name = "data_size.png"

    def runs(self, config: dict[str, Any]) -> list[RunSpec]:
        specs = []
        for spec in grid(config):
            for f in config["fractions"]:
                epochs = spec.epochs if config["fixed_epochs"] else math.ceil(spec.epochs / f)
                specs.append(RunSpec(**{**spec.to_dict(), "train_fraction": f, "epochs": epochs}))
        return specs

    def table(self, records, config):
        return summary_table(records, by=("dataset", "model", "regularizer", "p", "train_size"))

    def curves(self, records, config):
        return dict(
            panel=lambda r: f"{r['model']}, {r['train_size']} training examples",
        )

    def figures(self, records, config, out_dir):
        from dropkit.experiments.plots import errorbar_lines, pyplot, save

        plt = pyplot()
        fig, (ax, ax_gain) = plt.subplots(1, 2, figsize=(11, 4.2))
        errorbar_lines(
            ax,
            records,
            lambda r: r["train_size"],
            lambda r: r["test_acc"],
            lambda r: f"{r['model']} {r['regularizer']}" + (f" p={r['p']:g}" if r["p"] else ""),
        )
        ax.set_xscale("log")
        ax.set_xlabel("training examples (log scale)")
        ax.set_ylabel("test accuracy (best validation epoch)")
        ax.set_title("Test accuracy against training set size")
        gains = gain_rows(records)
        for (model, reg, p), rows in group(gains, ("model", "regularizer", "p")).items():
            xs = [r["train_size"] for r in rows]
            ax_gain.errorbar(
                xs,
                [r["gain"] for r in rows],
                yerr=[2 * r["se"] for r in rows],
                fmt="-o",
                capsize=3,
                label=f"{model}: {reg} p={p:g} minus none",
            )
        ax_gain.axhline(0, color="k", lw=0.8)
        ax_gain.set_xscale("log")
        ax_gain.set_xlabel("training examples (log scale)")
        ax_gain.set_ylabel("test accuracy difference (± 2 s.e.)")
        ax_gain.set_title("What dropout buys at each size")
        sizes = sorted({r["train_size"] for r in records})
        for a in (ax, ax_gain):
            a.set_xticks(sizes, [str(n) for n in sizes])
            a.minorticks_off()
            a.grid(alpha=0.3)
            a.legend(fontsize=8)
        return [save(fig, Path(out_dir) / self.plot_name)]

    def reading(self, records, config):
        gains = gain_rows(records)
        paragraphs = []
        for (model, reg, p), rows in group(gains, ("model", "regularizer", "p")).items():
            rows = sorted(rows, key=lambda r: r["train_size"])
            parts = [
                f"{r['train_size']} examples: {100 * r['gain']:+.1f} points "
                f"({significance(r['gain'], r['se'])}; none at {pct(r['base'])})"
                for r in rows
            ]
            best = max(rows, key=lambda r: r["gain"])
            text = (
                f"{model}, {reg} (p = {p:g}) against no regularization, by training set size: "
                + "; ".join(parts)
                + f". The largest gain is at {best['train_size']} examples."
            )
            smallest, largest = rows[0], rows[-1]
            if best is smallest and len(rows) > 1:
                text += " Here dropout helps most when data is scarce."
            elif best is largest and len(rows) > 1:
                text += " Here the gain grows with the training set."
            elif len(rows) > 2:
                text += (
                    " The gain rises and then falls with the size of the training set, the "
                    "shape of the dropout paper's data-set-size experiment (its fig. 10)."
                )
            paragraphs.append(text)
        if not paragraphs:
            paragraphs.append("Run with 'none' among the regularizers to measure the gain.")
        return paragraphs


def gain_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Test accuracy of each regularizer minus 'none', per model and training set size."""
    rows = []
    for (model, size), runs in group(records, ("model", "train_size")).items():
        base = [r["test_acc"] for r in runs if r["regularizer"] == "none"]
        if not base:
            continue
        for (reg, p), rs in group(runs, ("regularizer", "p")).items():
            if reg == "none":
                continue
            d, se = difference(base, [r["test_acc"] for r in rs])
            rows.append(
                {
                    "model": model,
                    "regularizer": reg,
                    "p": p,
                    "train_size": size,
                    "gain": d,
                    "se": se,
                    "base": sum(base) / len(base),
                }
            )
    return rows
