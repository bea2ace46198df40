"""``dropkit run recurrent``: does dropout suit recurrent networks?

A 2-layer GRU classifier reads MNIST-1D as a sequence of 40 steps (the
MNIST-1D paper reports about 91% test accuracy for a GRU). The variants (see
``recurrent_models.py`` for the exact placements):

``none``            no dropout;
``naive``           a fresh mask at every time step on the inputs *and* the
                    recurrent state (a hand-written recurrence loop): dropout
                    used as in a feed-forward net, the setting of the claim;
``locked``          ``dk.LockedDropout``: one mask per sequence on each layer's
                    input and on the output (variational dropout);
``weightdrop``      ``dk.WeightDrop`` on the hidden-to-hidden weights (AWD-LSTM);
``between-layers``  torch's ``nn.GRU(dropout=p)`` between the stacked layers
                    (Zaremba et al., 2014).

All dropout variants also drop the classifier's input (``locked`` with its own
mask). Same rate ``p`` everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dropkit.experiments.claims_util import variant_label, variant_runs
from dropkit.experiments.options import CommonOptions, option
from dropkit.experiments.recurrent_models import RECURRENT_VARIANTS, GRUClassifier
from dropkit.experiments.registry import Experiment, register
from dropkit.experiments.summary import (
    difference,
    group,
    mean_std,
    significance,
    summary_table,
)
from dropkit.experiments.train import RunSpec, train_run
from dropkit.experiments.wording import listing, percent, plural, points


@dataclass(frozen=True)
class RecurrentOptions(CommonOptions):
    models: tuple[str, ...] = ("gru",)
    regularizers: tuple[str, ...] = ("dropout",)
    seeds: tuple[int, ...] = (0, 1)
    # The protocol, trimmed for a GRU (1.2-2 s an epoch): stop after 15 epochs
    # without a better validation accuracy, at most 100 epochs; a run cut by the
    # budget is flagged.
    epochs: int | None = 100
    patience: int | None = 15
    rnn_variants: tuple[str, ...] = option(
        RECURRENT_VARIANTS, "recurrent dropout variants", choices=RECURRENT_VARIANTS,
        what="recurrent variant",
    )


@register
class Recurrent(Experiment):
    name = "recurrent"
    wall_time = "12 min 44 s on a 2-core AMD EPYC (2 workers, load average 3-4)"
    help = (
        "Does dropout suit recurrent nets? A GRU on MNIST-1D as a 40-step sequence with no "
        "dropout, naive per-step dropout on inputs and state, locked (variational) dropout, "
        "WeightDrop on the recurrent weights, and dropout between stacked layers."
    )
    options = RecurrentOptions
    accepts = ("gru",)
    plot_name = "recurrent.png"

    def runs(self, config: dict[str, Any]) -> list[RunSpec]:
        return variant_runs(config, ["gru"], config["rnn_variants"])

    def run_one(self, spec, data, ctx):
        def build():
            return GRUClassifier(spec.extra["variant"], spec.p, data.n_classes)

        return train_run(spec, data, ctx, model=build).record

    def table(self, records, config):
        metrics = [(f, f) for f in ("test_acc", "val_acc", "train_acc", "gap", "seconds")]
        return summary_table(records, by=("variant", "p"), metrics=metrics)

    def curves(self, records, config):
        return dict(
            label=variant_label,
            panel=lambda r: f"GRU on {r['dataset']} (40 steps)",
            title="Test (solid) and train (dashed) accuracy",
        )

    def figures(self, records, config, out_dir):
        from dropkit.experiments.plots import bars, pyplot, save

        out_dir = Path(out_dir)

        plt = pyplot()
        fig, ax = plt.subplots(figsize=(8, 4.2))
        by_variant = group(records, ("variant", "p"))
        names = [v if v == "none" else f"{v}\np={p:g}" for v, p in by_variant]
        stats = {
            name: [mean_std(r[field] for r in rs) for rs in by_variant.values()]
            for name, field in (("train", "train_acc"), ("test", "test_acc"))
        }
        bars(
            ax,
            names,
            {name: [m for m, _ in ms] for name, ms in stats.items()},
            {name: [s for _, s in ms] for name, ms in stats.items()},
            colors={"train": "#9bbbe0", "test": "#2a5da8"},
            top=1.05,
            legend=False,
        )
        ax.axhline(0.91, color="grey", ls=":", lw=1, label="MNIST-1D paper's GRU (91%)")
        ax.tick_params(axis="x", labelsize=8)
        ax.set_ylabel("accuracy (eval mode, best validation epoch)")
        ax.set_title(
            "GRU on MNIST-1D: train vs test accuracy per dropout variant (mean ± std over seeds)",
            fontsize=10,
        )
        ax.legend(fontsize=8, loc="lower right")
        return [save(fig, out_dir / self.plot_name)]

    def reading(self, records, config):
        return recurrent_reading(records)


def recurrent_reading(records: list[dict[str, Any]]) -> list[str]:
    base = [r for r in records if r["variant"] == "none"]
    if not records:
        return []
    n_seeds = len({r["seed"] for r in records})
    text = [
        f"GRU on MNIST-1D as 40-step sequences, {plural(n_seeds, 'seed')}, "
        + (
            f"each run until validation accuracy has not improved for "
            f"{plural(records[0]['patience'], 'epoch')} (at most "
            f"{plural(records[0]['epochs'], 'epoch')})."
            if records[0].get("patience")
            else f"{plural(records[0]['epochs'], 'epoch')}."
        )
    ]
    if base:
        tr = mean_std(r["train_acc"] for r in base)[0]
        te = mean_std(r["test_acc"] for r in base)[0]
        text.append(
            f"Without dropout: test {percent(te)}, train {percent(tr)} (gap "
            f"{points(tr - te)}; the MNIST-1D paper's GRU: 91%)."
        )
    hurt, fine, untested = [], [], []
    drops: dict[str, float] = {}
    for (variant, p), rs in group(
        [r for r in records if r["variant"] != "none"], ("variant", "p")
    ).items():
        te = mean_std(r["test_acc"] for r in rs)[0]
        line = f"With {variant} (p = {p:g}): test {percent(te)}"
        if base:
            d, se = difference([r["test_acc"] for r in base], [r["test_acc"] for r in rs])
            word = significance(d, se)
            if word == "untested":  # one seed: no spread to compare the difference with
                line += f", {points(d, signed=True)} against none"
                untested.append(variant)
            else:
                line += f", {points(d, signed=True)} against none ({word})"
                (hurt if d < 0 and word == "clear" else fine).append(variant)
            drops[variant] = d
        text.append(line + ".")
    if base:
        if untested:
            text.append(
                "With one seed there is no estimate of the seed-to-seed noise, so these "
                "differences cannot be called clear or within noise; run more seeds to tell."
            )
        if fine:
            text.append(f"Not clearly worse than no dropout: {listing(fine)}.")
        if hurt:
            text.append(
                f"Clearly worse than no dropout (beyond twice the standard error over "
                f"seeds): {listing(hurt)}."
            )
        aware = [v for v in ("locked", "weightdrop", "between-layers") if v in fine]
        if "naive" in hurt and aware:
            text.append(
                "So the claim holds for dropout applied naively (a new mask on the "
                "recurrent state at every step) and not for "
                f"{listing(aware)}, which {'is' if len(aware) == 1 else 'are'} not clearly "
                "worse than no dropout."
            )
        small = {v: d for v, d in drops.items() if v in hurt and v != "naive" and d > -0.05}
        if small:
            text.append(
                "Clearly but only slightly worse (under 5 points): "
                + ", ".join(f"{v} ({points(d, signed=True)})" for v, d in small.items())
                + "."
            )
    return [" ".join(text)]
