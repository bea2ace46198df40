"""``dropkit run uncertainty``: deterministic vs Monte-Carlo-dropout predictions.

The same dropout-trained network predicts the test set twice: once in eval mode
(the deterministic weight-scaling rule) and once as the mean softmax of
``--mc-samples`` stochastic passes (:func:`dropkit.mc.predict`, Gal &
Ghahramani 2016). Compared on:

- accuracy and negative log-likelihood (NLL, nats per example);
- expected calibration error (ECE, Guo et al. 2017): equal-width bins of the
  confidence ``max_c p_c``, ``ECE = sum_b n_b/N |acc_b - conf_b|``, with a
  reliability diagram (accuracy against confidence per bin);
- how well an uncertainty score separates wrong from correct predictions: the
  AUROC of the predictive entropy (both predictors) and of the mutual
  information (BALD, MC only), wrong predictions being the positives. 0.5 is
  chance, 1 a perfect separation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from dropkit.experiments.claims_util import nanmean
from dropkit.experiments.options import CommonOptions, option, positive
from dropkit.experiments.plan import grid
from dropkit.experiments.registry import Experiment, register
from dropkit.experiments.summary import (
    difference,
    group,
    mean_std,
    significance,
    summary_table,
)
from dropkit.experiments.train import RunSpec, train_run
from dropkit.experiments.wording import number, percent, plural

#: offset of the MC seed from the run seed, so the MC masks differ from training's
MC_SEED_OFFSET = 2_000_003


# ----------------------------------------------------------------- metrics
def negative_log_likelihood(probs: torch.Tensor, y: torch.Tensor) -> float:
    """Mean ``-log p_y`` (nats); probabilities clipped at 1e-12 so a confident miss is finite."""
    return float(-probs.gather(1, y[:, None]).clamp_min(1e-12).log().mean())


def calibration_bins(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> dict[str, list]:
    """Per equal-width confidence bin: ``count``, mean ``confidence`` and ``accuracy``.

    Bin ``b`` holds confidences in ``(b/B, (b+1)/B]`` (the first also 0).
    Empty bins have count 0 and NaN confidence/accuracy (``None`` in JSON).
    """
    confidence, predicted = probs.max(1)
    correct = (predicted == y).double()
    index = (confidence.double() * bins).ceil().long().clamp(1, bins) - 1
    count = torch.bincount(index, minlength=bins).double()
    conf_sum = torch.bincount(index, weights=confidence.double(), minlength=bins)
    acc_sum = torch.bincount(index, weights=correct, minlength=bins)
    safe = count.clamp_min(1)

    def listed(t: torch.Tensor) -> list:
        pairs = zip(t.tolist(), count.tolist(), strict=True)
        return [None if c == 0 else float(v) for v, c in pairs]

    return {
        "edges": [b / bins for b in range(bins + 1)],
        "count": [int(c) for c in count.tolist()],
        "confidence": listed(conf_sum / safe),
        "accuracy": listed(acc_sum / safe),
    }


def expected_calibration_error(reliability: dict[str, list]) -> float:
    """``sum_b n_b/N |acc_b - conf_b|`` from :func:`calibration_bins`."""
    total = sum(reliability["count"])
    return float(
        sum(
            n / total * abs(a - c)
            for n, a, c in zip(
                reliability["count"],
                reliability["accuracy"],
                reliability["confidence"],
                strict=True,
            )
            if n
        )
    )


def auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for the ``positive`` examples.

    The Mann-Whitney form: the probability that a random positive scores higher
    than a random negative, ties counted 1/2 (average ranks). NaN when either
    class is empty.
    """
    s = scores.detach().double().cpu().numpy()
    pos = positive.detach().bool().cpu().numpy()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based, ties averaged
    ranks = average_rank[inverse]
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def entropy(probs: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(probs, probs).sum(1)


def prediction_metrics(probs: torch.Tensor, y: torch.Tensor, bins: int) -> dict[str, Any]:
    """Accuracy, NLL, ECE, mean confidence, reliability bins and the entropy AUROC."""
    probs = probs.double()
    wrong = probs.argmax(1) != y
    reliability = calibration_bins(probs, y, bins)
    return {
        "acc": float((~wrong).double().mean()),
        "nll": negative_log_likelihood(probs, y),
        "ece": expected_calibration_error(reliability),
        "mean_confidence": float(probs.max(1).values.mean()),
        "auroc_entropy": auroc(entropy(probs), wrong),
        "reliability": reliability,
    }


# --------------------------------------------------------------- experiment
@dataclass(frozen=True)
class UncertaintyOptions(CommonOptions):
    regularizers: tuple[str, ...] = ("dropout",)
    mc_samples: int = option(30, "stochastic passes per MC-dropout prediction", check=positive,
                             metavar="S")
    ece_bins: int = option(
        15, "equal-width confidence bins for ECE and the reliability diagram", check=positive,
        metavar="B",
    )


@register
class Uncertainty(Experiment):
    name = "uncertainty"
    help = (
        "Deterministic vs MC-dropout predictions of the same network: accuracy, NLL, "
        "calibration (ECE, reliability diagram), AUROC of entropy / mutual information."
    )
    options = UncertaintyOptions
    plot_name = "reliability.png"

    def runs(self, config: dict[str, Any]) -> list[RunSpec]:
        # In the run's identity (RunSpec.extra): a resumed run keeps its settings,
        # and runs with other settings never pass for finished ones.
        settings = {"mc_samples": int(config["mc_samples"]), "ece_bins": int(config["ece_bins"])}
        return grid(config, extra=settings)

    def run_one(self, spec, data, ctx):
        import dropkit as dk

        result = train_run(spec, data, ctx)
        record = result.record
        samples = int(spec.extra["mc_samples"])
        bins = int(spec.extra["ece_bins"])
        model = result.model
        x = result.data.x_test.to(ctx.device)
        y = result.data.y_test.to(ctx.device)
        model.eval()
        with torch.no_grad():
            det_probs = F.softmax(model(x).double(), dim=1)
        torch.manual_seed(spec.seed + MC_SEED_OFFSET)
        mc = dk.mc.predict(model, x, samples=samples)
        det = prediction_metrics(det_probs, y, bins)
        mcm = prediction_metrics(mc.mean, y, bins)
        wrong = mc.mean.argmax(1) != y
        mcm["auroc_mi"] = auroc(mc.mutual_information, wrong)
        for prefix, metrics in (("det", det), ("mc", mcm)):
            for name, value in metrics.items():
                if name != "reliability":
                    record[f"{prefix}_{name}"] = value
        record["mc_mean_mi"] = float(mc.mutual_information.mean())
        record["reliability"] = {"det": det["reliability"], "mc": mcm["reliability"]}
        return record

    def table(self, records, config):
        columns = (
            ("det_acc", "acc det"),
            ("mc_acc", "acc MC"),
            ("det_nll", "NLL det"),
            ("mc_nll", "NLL MC"),
            ("det_ece", "ECE det"),
            ("mc_ece", "ECE MC"),
            ("det_auroc_entropy", "AUROC H det"),
            ("mc_auroc_entropy", "AUROC H MC"),
            ("mc_auroc_mi", "AUROC MI MC"),
            ("train_acc", "train_acc"),
        )
        titles = dict(columns)
        rows = summary_table(records, ("dataset", "model", "regularizer", "p"), columns)
        # the short titles as keys: the report titles unknown keys by the key itself
        return [{titles.get(k, k): v for k, v in row.items()} for row in rows]

    def figures(self, records, config, out_dir):
        from dropkit.experiments.plots import pyplot, save, suptitle

        plt = pyplot()
        groups = group(records, ("model", "regularizer", "p"))
        fig, axes = plt.subplots(
            2,
            len(groups),
            figsize=(5.4 * len(groups), 6.6),
            squeeze=False,
            gridspec_kw={"height_ratios": [3, 1]},
        )
        colors = {"det": "tab:blue", "mc": "tab:orange"}
        for col, ((model, reg, p), runs) in enumerate(groups.items()):
            ax, hist = axes[0, col], axes[1, col]
            ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1, label="perfect calibration")
            for kind, label in (("det", "deterministic (eval)"), ("mc", "MC dropout")):
                pooled = _pool_reliability([r["reliability"][kind] for r in runs])
                ece = mean_std(r[f"{kind}_ece"] for r in runs)[0]
                nonempty = [i for i, n in enumerate(pooled["count"]) if n]
                conf = [pooled["confidence"][i] for i in nonempty]
                acc = [pooled["accuracy"][i] for i in nonempty]
                samples = f", S={runs[0]['mc_samples']}" if kind == "mc" else ""
                ax.plot(
                    conf,
                    acc,
                    "-o",
                    ms=4,
                    color=colors[kind],
                    label=f"{label}{samples}: ECE {ece:.3f}",
                )
                edges = pooled["edges"]
                hist.stairs(pooled["count"], edges, color=colors[kind], label=label)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel("confidence (mean max probability in the bin)")
            ax.set_ylabel("accuracy in the bin")
            ax.set_title(f"{model}, {reg} p={p:g} ({len(runs)} seeds pooled)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="upper left")
            hist.set_xlim(0, 1)
            hist.set_xlabel("confidence")
            hist.set_ylabel("test examples")
            hist.grid(alpha=0.3)
            hist.legend(fontsize=8, loc="upper left")
        suptitle(fig, "Reliability diagram: below the diagonal = overconfident")
        return [save(fig, Path(out_dir) / self.plot_name)]

    def reading(self, records, config):
        paragraphs = []
        for (model, reg, p), runs in group(records, ("model", "regularizer", "p")).items():
            samples = runs[0]["mc_samples"]
            text = [
                f"For {model} with {reg} (p = {p:g}) and {plural(len(runs), 'seed')}, MC "
                f"dropout with {plural(samples, 'pass', 'passes')} is compared with the "
                "deterministic eval-mode network."
            ]
            for field, what, better in (
                ("acc", "Accuracy", "higher"),
                ("nll", "NLL", "lower"),
                ("ece", "ECE", "lower"),
            ):
                det = [r[f"det_{field}"] for r in runs]
                mc = [r[f"mc_{field}"] for r in runs]
                d, se = difference(det, mc)
                shown = percent if field == "acc" else number
                improved = (d > 0) == (better == "higher")
                # with one seed there is no spread to compare the difference with
                verdict = significance(d, se) if len(runs) > 1 else "one seed, no noise estimate"
                same = shown(mean_std(det)[0]) == shown(mean_std(mc)[0])
                text.append(
                    f"{what}: {shown(mean_std(det)[0])} deterministic, "
                    f"{shown(mean_std(mc)[0])} MC"
                    + (
                        " (no difference at this precision)"
                        if same
                        else f" ({'better' if improved else 'worse'} with MC, {verdict})"
                    )
                    + "."
                )
            conf = mean_std(r["det_mean_confidence"] for r in runs)[0]
            acc = mean_std(r["det_acc"] for r in runs)[0]
            mc_conf = mean_std(r["mc_mean_confidence"] for r in runs)[0]
            mc_acc = mean_std(r["mc_acc"] for r in runs)[0]
            text.append(
                f"Mean confidence {percent(conf)} against {percent(acc)} accuracy deterministic "
                f"({_confidence_word(conf, acc)}), {percent(mc_conf)} against "
                f"{percent(mc_acc)} with MC ({_confidence_word(mc_conf, mc_acc)})."
            )
            h_det = nanmean([r["det_auroc_entropy"] for r in runs])
            h_mc = nanmean([r["mc_auroc_entropy"] for r in runs])
            mi = nanmean([r["mc_auroc_mi"] for r in runs])
            scores = [
                (v, name)
                for v, name in (
                    (h_det, "the deterministic entropy"),
                    (h_mc, "the MC predictive entropy"),
                    (mi, "the mutual information"),
                )
                if not math.isnan(v)
            ]
            if scores:
                text.append(
                    f"Telling wrong from correct predictions (AUROC, 0.5 = chance): entropy "
                    f"{number(h_det)} deterministic, {number(h_mc)} MC, mutual information "
                    f"{number(mi)}; {max(scores)[1]} separates best here."
                )
            else:
                text.append(
                    "Every test prediction was right (or every one wrong), so no score can "
                    "be judged on telling wrong from correct predictions (AUROC undefined)."
                )
            paragraphs.append(" ".join(text))
        return paragraphs


def _confidence_word(confidence: float, accuracy: float) -> str:
    if percent(confidence) == percent(accuracy):
        return "calibrated at this precision"
    return "overconfident" if confidence > accuracy else "underconfident"


def _pool_reliability(parts: list[dict[str, list]]) -> dict[str, list]:
    """Reliability bins of several seeds merged, weighting each bin by its count."""
    bins = len(parts[0]["count"])
    count = [sum(p["count"][b] for p in parts) for b in range(bins)]

    def pooled(key: str) -> list:
        return [
            None
            if count[b] == 0
            else sum(p[key][b] * p["count"][b] for p in parts if p["count"][b]) / count[b]
            for b in range(bins)
        ]

    return {
        "edges": parts[0]["edges"],
        "count": count,
        "confidence": pooled("confidence"),
        "accuracy": pooled("accuracy"),
    }
