r"""``dropkit run batchnorm``: do dropout and BatchNorm clash?

A common claim: "dropout shifts the variance of a layer's output between
training and inference, so the statistics BatchNorm collects are wrong" (Li et
al., CVPR 2019). For a feature of mean :math:`c` and variance :math:`v` through
inverted dropout with keep probability :math:`q`, the BatchNorm input has
variance :math:`(c^2+v)/q - c^2` in training and :math:`v` at inference, a
ratio :math:`q v / (c^2 + v - q c^2)`.

Networks with BatchNorm (``mlp-bn``, ``cnn1d-bn``, see ``models_extra.py``) are
trained in four variants:

``none``                   no dropout;
``before-bn``              dropout feeding every BatchNorm layer (the clash);
``after-bn``               dropout only after the last BatchNorm layer (Li et al.'s advice);
``before-bn+recalibrate``  the clash, then ``dk.bn.recalibrate`` on the training set
                           after training (the same trained network as ``before-bn``).

Per run: test/train accuracy, and for every BatchNorm layer, on 2000 training
examples in training batches, the measured variance ratio and the running
variance against the eval-mode variance (``dk.bn.variance_shift``), and --
where a dropout layer feeds the BatchNorm directly -- the ratio the formula
predicts from the measured per-channel mean and variance of the dropout's input
(``dk.bn.predicted_shift``). For the ``before-bn`` networks, the first
BatchNorm's ratio is also measured with the dropout rate swept over 0..0.9 (no
retraining), beside the formula (``dk.bn.sweep_variance_shift``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import dropkit as dk
from dropkit.experiments import models_extra
from dropkit.experiments.claims_util import (
    nanmean,
    variant_label,
    variant_runs,
)
from dropkit.experiments.options import CommonOptions, option
from dropkit.experiments.registry import Experiment, register
from dropkit.experiments.summary import difference, group, mean_std, significance
from dropkit.experiments.train import RunSpec, evaluate, train_run
from dropkit.experiments.wording import UNCHANGED, change, percent, plural, points

VARIANTS = ("none", "before-bn", "after-bn", "before-bn+recalibrate")
SWEEP_P = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MEASURE_EXAMPLES = 2000


def measure(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, Any]:
    """The record's measurements, all from ``dk.bn``: per BN layer the variance shift
    and eval var / running var, the formula's ratio where a dropout layer feeds the
    BN (1.0 where none does), and the first such BN's ratio swept over ``SWEEP_P``."""
    shift = dk.bn.variance_shift(model, batches)
    predicted = dk.bn.predicted_shift(model, batches)
    out: dict[str, Any] = {
        "bn": {
            name: {
                **rec.as_dict(),
                "eval_over_running": rec.eval_over_running,
                "analytic_ratio": predicted.get(name, 1.0),
            }
            for name, rec in shift.items()
        }
    }
    if predicted:
        sweep = dk.bn.sweep_variance_shift(model, batches, SWEEP_P)
        out["sweep"] = {
            "layer": sweep.layer,
            "p": sweep.rates,
            "measured": sweep.measured,
            "analytic": sweep.predicted,
        }
    return out


@dataclass(frozen=True)
class BatchNormOptions(CommonOptions):
    models: tuple[str, ...] = models_extra.BN_MODELS
    regularizers: tuple[str, ...] = ("dropout",)
    p: tuple[float, ...] | None = (0.2, 0.5)
    seeds: tuple[int, ...] = (0, 1)
    bn_variants: tuple[str, ...] = option(VARIANTS, "dropout placements", choices=VARIANTS,
                                          what="batchnorm variant")


@register
class BatchNormClash(Experiment):
    name = "batchnorm"
    wall_time = "9 min 24 s on a 2-core AMD EPYC (2 workers, load average 2-4)"
    help = (
        "Do dropout and BatchNorm clash? Networks with BatchNorm with dropout before BN, "
        "after BN, and before BN followed by dk.bn.recalibrate; the measured variance shift "
        "per BN layer beside the analytic ratio q*v/(c^2+v-q*c^2)."
    )
    options = BatchNormOptions
    accepts = models_extra.BN_MODELS
    plot_name = "variance_shift.png"

    def runs(self, config: dict[str, Any]) -> list[RunSpec]:
        return variant_runs(config, config["models"], config["bn_variants"])

    def run_one(self, spec, data, ctx):
        variant = spec.extra["variant"]
        placement = "before-bn" if variant.startswith("before-bn") else variant
        # Every run trains its own network, the +recalibrate variant too (the same
        # network as its before-bn twin, trained again): a run is a pure function of
        # its spec, whichever process runs it and whatever ran before.
        result = train_run(
            spec,
            data,
            ctx,
            model=lambda: models_extra.build(
                spec.model, data.n_features, data.n_classes, spec.p, placement
            ),
        )
        model, record, data = result.model, result.record, result.data
        device = ctx.device
        x_train = data.x_train.to(device)
        # What follows training draws dropout masks (recalibration and the variance
        # measurement run dropout in training mode): seeded from the run's own seed.
        torch.manual_seed(spec.seed + 7919)
        if variant == "before-bn+recalibrate":
            t0 = time.perf_counter()
            record["test_acc_before_recalibrate"] = record["test_acc"]
            record["train_acc_before_recalibrate"] = record["train_acc"]
            dk.bn.recalibrate(model, list(torch.split(x_train, spec.batch_size)))
            model.eval()
            record["train_acc"], record["train_loss"] = evaluate(
                model, x_train, data.y_train.to(device)
            )
            record["test_acc"], record["test_loss"] = evaluate(
                model, data.x_test.to(device), data.y_test.to(device)
            )
            record["gap"] = record["train_acc"] - record["test_acc"]
            record["recalibrate_seconds"] = round(time.perf_counter() - t0, 3)
        batches = list(torch.split(x_train[:MEASURE_EXAMPLES], spec.batch_size))
        measured = measure(model, batches)
        record.update(measured)
        for i, (name, rec) in enumerate(measured["bn"].items(), start=1):
            record[f"ratio_bn{i}"] = rec["ratio"]
            record[f"analytic_ratio_bn{i}"] = rec["analytic_ratio"]
            record[f"eval_over_running_bn{i}"] = rec["eval_over_running"]
            record[f"bn{i}"] = name
        return record

    # ------------------------------------------------------------- results
    def table(self, records, config):
        rows = []
        for (model, variant, p), runs in group(records, ("model", "variant", "p")).items():
            row: dict[str, Any] = {
                "model": model,
                "variant": variant,
                "p": p,
                "n": len(runs),
                "test_acc": mean_std(r["test_acc"] for r in runs),
                "train_acc": mean_std(r["train_acc"] for r in runs),
            }
            n_bn = len(runs[0]["bn"])
            row["var ratio eval/train per BN"] = ", ".join(
                f"{nanmean([r[f'ratio_bn{i}'] for r in runs]):.2f}" for i in range(1, n_bn + 1)
            )
            row["eval var / running var per BN"] = ", ".join(
                f"{nanmean([r[f'eval_over_running_bn{i}'] for r in runs]):.2f}"
                for i in range(1, n_bn + 1)
            )
            rows.append(row)
        return rows

    def curves(self, records, config):
        return dict(
            label=variant_label,
            title="Train (dashed) and test (solid) accuracy over epochs "
            "(before recalibration), mean ± std over seeds",
        )

    def figures(self, records, config, out_dir):
        from dropkit.experiments.plots import bars, pyplot, save

        out_dir = Path(out_dir)

        images: list[Path] = []
        plt = pyplot()
        models = list(group(records, ("model",)))
        fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 6.2), squeeze=False)
        for ax, (model,) in zip(axes.flat, models, strict=True):
            runs = [r for r in records if r["model"] == model]
            before = [r for r in runs if r["variant"] == "before-bn" and "sweep" in r]
            if before:
                sw = before[0]["sweep"]
                xs = sw["p"]
                for k, r in enumerate(before):
                    ax.plot(
                        xs,
                        r["sweep"]["analytic"],
                        "-",
                        color="k",
                        lw=1.2,
                        alpha=0.6,
                        label="analytic q v/(c²+v−q c²), measured c, v" if k == 0 else None,
                    )
                    ax.plot(
                        xs,
                        r["sweep"]["measured"],
                        "o",
                        color="#d9534f",
                        ms=4,
                        mfc="none",
                        label=f"measured, {sw['layer']} (rate swept after training)"
                        if k == 0
                        else None,
                    )
                ax.plot(xs, [1 - x for x in xs], ":", color="grey", label="q = 1 − p (c = 0)")
            cmap = plt.get_cmap("tab10")
            # The clash and the advice; 'none' is 1 by construction, and after
            # recalibration the later layers' eval inputs change (see the table).
            for v_i, variant in ((1, "before-bn"), (2, "after-bn")):
                rs = [r for r in runs if r["variant"] == variant]
                if not rs:
                    continue
                n_bn = len(rs[0]["bn"])
                for i in range(1, n_bn + 1):
                    xs = [r["p"] for r in rs]
                    ys = [r[f"ratio_bn{i}"] for r in rs]
                    ax.plot(
                        [x + 0.008 * (i - 1) for x in xs],
                        ys,
                        "sdv^<>"[i % 6],
                        color=cmap(v_i),
                        ms=6,
                        alpha=0.8,
                        label=f"{variant}, BN {i} (trained at p)",
                    )
            ax.set_xlabel("drop probability p")
            ax.set_ylabel("variance ratio eval / train at the BN input")
            ax.set_title(f"{model}: variance shift at the BatchNorm inputs")
            ax.set_ylim(0, 1.15)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
        images.append(save(fig, out_dir / self.plot_name))

        fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.2), squeeze=False)
        for ax, (model,) in zip(axes.flat, models, strict=True):
            runs = [r for r in records if r["model"] == model]
            by_variant = group(runs, ("variant", "p"))
            names = [v if v == "none" else f"{v}\np={p:g}" for v, p in by_variant]
            means = [mean_std(r["test_acc"] for r in rs) for rs in by_variant.values()]
            bars(
                ax,
                names,
                {"test": [m for m, _ in means]},
                {"test": [s for _, s in means]},
                colors=[plt.get_cmap("tab10")(VARIANTS.index(v)) for v, _ in by_variant],
                top=1.05,
            )
            ax.set_xticks(ax.get_xticks(), names, fontsize=7, rotation=30, ha="right")
            ax.set_ylabel("test accuracy (eval mode, mean ± std)")
            ax.set_title(f"{model}: test accuracy per variant")
        images.append(save(fig, out_dir / "batchnorm_accuracy.png"))
        return images

    def reading(self, records, config):
        return batchnorm_reading(records)


def batchnorm_reading(records: list[dict[str, Any]]) -> list[str]:
    paragraphs = []
    for (model,), runs in group(records, ("model",)).items():
        text = []
        base = [r for r in runs if r["variant"] == "none"]
        for p in sorted({r["p"] for r in runs if r["variant"] != "none"}):
            get = {v: [r for r in runs if r["variant"] == v and r["p"] == p] for v in VARIANTS}
            acc = {v: mean_std(r["test_acc"] for r in rs)[0] for v, rs in get.items() if rs}
            sentence = f"For {model} at p = {p:g}, test accuracy is " + ", ".join(
                f"{v} {percent(a)}" for v, a in acc.items()
            )
            if base:
                sentence += f" (none: {percent(mean_std(r['test_acc'] for r in base)[0])})"
            text.append(sentence + ".")
            if get["before-bn"] and get["after-bn"]:
                d, se = difference(
                    [r["test_acc"] for r in get["after-bn"]],
                    [r["test_acc"] for r in get["before-bn"]],
                )
                position = (
                    "level with"
                    if abs(d) < UNCHANGED
                    else f"{points(abs(d))} {'below' if d < 0 else 'above'}"
                )
                text.append(
                    f"Dropout before BN is {position} dropout after BN "
                    f"({significance(d, se)} against the seed spread)."
                )
            rb = get["before-bn"]
            if rb:
                ratios = [
                    nanmean([r[f"ratio_bn{i}"] for r in rb]) for i in range(1, len(rb[0]["bn"]) + 1)
                ]
                mism = [
                    nanmean([r[f"eval_over_running_bn{i}"] for r in rb])
                    for i in range(1, len(rb[0]["bn"]) + 1)
                ]
                text.append(
                    "With dropout before BN the eval/train variance ratio at the BN inputs is "
                    + ", ".join(f"{x:.2f}" for x in ratios)
                    + f" (1 means no shift), so at test time the BN layers divide by a running "
                    f"variance {', '.join(f'{1 / m:.2f}' for m in mism)}x the variance they "
                    "meet."
                )
            if get["before-bn"] and get["after-bn"]:
                tb = mean_std(r["train_acc"] for r in get["before-bn"])[0]
                ta = mean_std(r["train_acc"] for r in get["after-bn"])[0]
                text.append(
                    f"Train accuracy (eval mode): before-bn {percent(tb)}, after-bn {percent(ta)}."
                )
            rr = get["before-bn+recalibrate"]
            if rr:
                before = [r["test_acc_before_recalibrate"] for r in rr]
                after = [r["test_acc"] for r in rr]
                d, se = difference(before, after)
                mism = [
                    nanmean([r[f"eval_over_running_bn{i}"] for r in rr])
                    for i in range(1, len(rr[0]["bn"]) + 1)
                ]
                text.append(
                    f"Recalibrating the BN statistics after training (dk.bn.recalibrate) brings "
                    f"eval/running variance to {', '.join(f'{m:.2f}' for m in mism)} and "
                    f"{change(d, 'test accuracy')} ({significance(d, se)})."
                )
                if get["after-bn"] and "before-bn" in acc and "after-bn" in acc:
                    lost = acc["after-bn"] - acc["before-bn"]
                    if lost > 0.01:
                        share = d / lost
                        recovered = (
                            f"recalibration recovers {100 * share:.0f}%" if share > 0
                            else "recalibration recovers none of it"
                        )
                        text.append(
                            f"Of the {points(lost)} dropout before BN loses against "
                            f"dropout after BN, {recovered}: "
                            + (
                                "most of the loss is the variance shift itself."
                                if share >= 0.5
                                else ("the loss" if share <= 0 else "the rest")
                                + " is not the BN statistics (the variance shift is "
                                "gone after recalibration) but the training itself: before-bn "
                                f"has {len(get['before-bn'][0]['bn'])} dropout layers (one per "
                                "BN) to after-bn's one, and drops inputs to BatchNorm, so it "
                                "fits the training set less well (train accuracy above)."
                            )
                        )
        sweeps = [r for r in runs if "sweep" in r]
        if sweeps:
            errs = [
                abs(m - a)
                for r in sweeps
                for m, a in zip(r["sweep"]["measured"], r["sweep"]["analytic"], strict=True)
            ]
            text.append(
                f"The measured ratio at {sweeps[0]['sweep']['layer']} follows the analytic "
                f"formula to within {max(errs):.3f} (largest absolute difference over p = 0..0.9 "
                f"and {plural(len(sweeps), 'trained network')})."
            )
        if not text:
            text.append(f"For {model} only the network without dropout ran.")
        paragraphs.append(" ".join(text))
    return paragraphs
