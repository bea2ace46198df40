"""``dropkit run convergence``: does dropout slow convergence?

A common claim: "dropout slows convergence: drawing a Bernoulli variable for
every neuron, and the extra multiply and rescale, add time". Two different
costs hide in that sentence:

* **optimisation** (this experiment) -- how many *epochs* a network needs to
  reach a target accuracy with and without dropout (``epochs_to_target`` per
  run), and the wall seconds that takes (``seconds_to_target``; ``None`` when
  never reached). The target is a fixed accuracy (``--target-accuracy``, default 0.60 on
  MNIST-1D: about 90% of the best the unregularized wide MLP reaches, so every
  variant can reach it within the budget and the comparison is of speed, not of
  final accuracy), read on the validation curve. Dropout is torch's
  (``dk.revert`` of the network) or dropkit's (``--impl``), the same network,
  weights and rates otherwise.
* **time per step** -- ``dropkit run step-time``: a training step with and
  without dropout, timed side by side (``dropkit.bench``), which the wall
  seconds of separate runs on a shared machine cannot show.

Per-run fields beyond the schema: ``kind`` (always ``"train"``: it is part of
the run keys, kept so that ``--resume`` of runs made when this experiment also
timed steps finds them), ``impl``, ``target``, ``epochs_to_target``,
``seconds_to_target``, ``seconds_per_epoch``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from dropkit.experiments import models, plan, regularizers
from dropkit.experiments.claims_util import first_reaching, impl_option, nanmean
from dropkit.experiments.options import CommonOptions, between, option
from dropkit.experiments.plan import model_settings
from dropkit.experiments.registry import Experiment, register
from dropkit.experiments.summary import difference, group, mean_std, significance
from dropkit.experiments.train import RunSpec, train_run
from dropkit.experiments.wording import percent, plural, points

#: where the per-step timing went, for the errors of the options it used to have
STEP_TIME = "dropkit run step-time"


def _label(r: dict[str, Any]) -> str:
    if r["regularizer"] == "none":
        return "none"
    return f"{r['impl']} dropout p={r['p']:g}"


@dataclass(frozen=True)
class ConvergenceOptions(CommonOptions):
    p: tuple[float, ...] | None = (0.2, 0.5)
    seeds: tuple[int, ...] = (0, 1)
    impl: tuple[str, ...] = impl_option()
    target_accuracy: float = option(
        0.60, "target validation accuracy for epochs/seconds to target (0.60: ~90% of the "
        "unregularized wide MLP's best on MNIST-1D)",
        check=between(0, 1, low_open=True, name="target"),
    )
    # The step timing moved to its own experiment; these stay to say where.
    timing: tuple[str, ...] | None = option(None, f"moved: {STEP_TIME} --shapes",
                                            metavar="SHAPES")
    timing_reps: int | None = option(None, f"moved: {STEP_TIME} --reps", metavar="N")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.timing not in (None, ("none",)):
            raise ValueError(
                f"--timing moved: convergence no longer times training steps; the time per "
                f"step is its own experiment, `{STEP_TIME} --shapes {','.join(self.timing)}`."
            )
        if self.timing_reps is not None:
            raise ValueError(
                f"--timing-reps moved: the time per step is its own experiment, "
                f"`{STEP_TIME} --reps {self.timing_reps}`."
            )
        for name in self.regularizers:
            if name not in ("none", "dropout"):
                raise ValueError(
                    f"convergence compares 'none' with 'dropout'; received "
                    f"regularizer {name!r}. Choose from: none, dropout."
                )


@register
class Convergence(Experiment):
    name = "convergence"
    wall_time = "9 min 30 s on a 2-core AMD EPYC (2 workers, load average 2-4)"
    help = (
        "Does dropout slow convergence? Epochs and seconds to a target accuracy with and "
        "without dropout (torch's and dropkit's); the time per step is step-time's."
    )
    options = ConvergenceOptions
    plot_name = "convergence.png"

    def runs(self, config: dict[str, Any]) -> list[RunSpec]:
        impls, target = config["impl"], config["target_accuracy"]
        specs = []
        for seed in config["seeds"]:
            for model in config["models"]:
                s = model_settings(config, model)
                for reg in config["regularizers"]:
                    for impl in impls if reg == "dropout" else ["n/a"]:
                        for p in s["p"] if reg == "dropout" else [0.0]:
                            specs.append(
                                plan.spec(
                                    config, model=model, regularizer=reg, p=p, seed=seed,
                                    extra={"kind": "train", "impl": impl, "target": target},
                                )
                            )
        return specs

    def run_one(self, spec, data, ctx):
        import dropkit as dk

        def build() -> nn.Module:
            reg = regularizers.get(spec.regularizer)
            net = models.build_model(spec.model, data.n_features, data.n_classes, reg, spec.p)
            # torch's dropout: the same network, weights and rates, only the kernel changes
            return dk.revert(net, strict=True) if spec.extra["impl"] == "torch" else net

        record = train_run(spec, data, ctx, model=build).record
        hist = record["history"]
        i = first_reaching(hist, "val_acc", float(spec.extra["target"]))
        record["epochs_to_target"] = None if i is None else hist["epoch"][i]
        record["seconds_to_target"] = None if i is None else hist["seconds"][i]
        record["seconds_per_epoch"] = record["train_seconds"] / max(record["stopped_epoch"], 1)
        return record

    # ------------------------------------------------------------- results
    def table(self, records, config):
        rows = []
        for (model, _reg, _impl, _p), runs in group(
            _training(records), ("model", "regularizer", "impl", "p")
        ).items():
            reached = [r for r in runs if r["epochs_to_target"] is not None]
            rows.append(
                {
                    "model": model,
                    "variant": _label(runs[0]),
                    "n": len(runs),
                    "test_acc": mean_std(r["test_acc"] for r in runs),
                    "train_acc": mean_std(r["train_acc"] for r in runs),
                    "reached": f"{len(reached)}/{len(runs)}",
                    "epochs_to_target": mean_std(r["epochs_to_target"] for r in reached),
                    "seconds_to_target": mean_std(r["seconds_to_target"] for r in reached),
                    "best_epoch": mean_std(r["best_epoch"] for r in runs),
                    "val_acc": mean_std(r["val_acc"] for r in runs),
                    "s_per_epoch": mean_std(r["seconds_per_epoch"] for r in runs),
                }
            )
        return rows

    def curves(self, records, config):
        train = _training(records)
        if not train:
            return None
        return dict(
            records=train,
            label=lambda r, _rs: _label(r),
            title="Test (solid) and train (dashed) accuracy",
        )

    def figures(self, records, config, out_dir):
        from dropkit.experiments.plots import pyplot, save

        out_dir = Path(out_dir)
        train = _training(records)
        if not train:
            return []
        plt = pyplot()
        target = float(config["target_accuracy"])
        fig, (ax_e, ax_s) = plt.subplots(1, 2, figsize=(12, 4.4))
        cmap = plt.get_cmap("tab10")
        for i, ((label,), runs) in enumerate(group(train, lambda r: (_label(r),)).items()):
            color = cmap(i % 10)
            n = min(len(r["history"]["epoch"]) for r in runs)
            acc = [sum(r["history"]["val_acc"][k] for r in runs) / len(runs) for k in range(n)]
            secs = [sum(r["history"]["seconds"][k] for r in runs) / len(runs) for k in range(n)]
            style = "--" if "torch" in label else "-"
            ax_e.plot(runs[0]["history"]["epoch"][:n], acc, style, color=color, label=label)
            ax_s.plot(secs, acc, style, color=color, label=label)
            for ax, field in ((ax_e, "epochs_to_target"), (ax_s, "seconds_to_target")):
                hit = nanmean([r[field] for r in runs])
                if not math.isnan(hit):
                    ax.plot([hit], [target], "o", color=color, ms=6)
        for ax, xlabel in ((ax_e, "epoch"), (ax_s, "wall seconds (training + evaluation)")):
            ax.axhline(target, color="k", lw=0.8, ls=":")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("validation accuracy (mean over seeds)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="lower right")
        ax_e.set_title(f"Validation accuracy against epochs (target {target:g}: dotted)")
        ax_s.set_title("... and against wall-clock seconds (dots: mean time to target)")
        return [save(fig, out_dir / self.plot_name)]

    def reading(self, records, config):
        return convergence_reading(records, float(config["target_accuracy"]))


def _training(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    # Results written before the split may also hold step-timing rows (kind "timing"):
    # they are step-time's now, and not read here.
    return [r for r in records if r.get("kind") == "train"]


def _plateau_reading(model: str, base: list[dict], runs: list[dict]) -> str:
    """Epochs to each network's own best validation accuracy, and how good that best is."""
    b0 = nanmean([r["best_epoch"] for r in base])
    v0 = [r["val_acc"] for r in base]
    parts, slower, higher, lower = [], 0, 0, 0
    settings = group([r for r in runs if r["regularizer"] == "dropout"], ("impl", "p"))
    for (impl, p), rs in settings.items():
        b = nanmean([r["best_epoch"] for r in rs])
        d, se = difference(v0, [r["val_acc"] for r in rs])
        verdict = significance(d, se)
        slower += b > b0
        higher += d > 0 and verdict == "clear"
        lower += d < 0 and verdict == "clear"
        parts.append(
            f"{impl} dropout p = {p:g} at epoch {b:.0f} ({b / b0:.1f}x), "
            f"{points(d, signed=True)} of validation accuracy there ({verdict})"
        )
    if not parts:
        return ""
    n = len(parts)
    text = (
        f"To its own plateau, {model}: without dropout validation accuracy peaks at epoch "
        f"{b0:.0f} (mean over seeds); with " + "; ".join(parts) + ". "
    )
    text += (
        f"{'All' if slower == n else slower} of {n} dropout settings take longer to reach "
        f"their best; {higher} reach a clearly higher best, {lower} a clearly lower one."
    )
    return text


def convergence_reading(records: Sequence[dict[str, Any]], target: float) -> list[str]:
    paragraphs = []
    train = _training(records)
    for (model,), runs in group(train, ("model",)).items():
        base = [r for r in runs if r["regularizer"] == "none"]
        text = [f"For {model} the target validation accuracy is {percent(target)}."]
        if base:
            e0 = nanmean([r["epochs_to_target"] for r in base])
            s0 = nanmean([r["seconds_to_target"] for r in base])
            t0 = nanmean([r["seconds_per_epoch"] for r in base])
            n0 = sum(r["epochs_to_target"] is not None for r in base)
            if n0 == 0:
                text.append(
                    "Without dropout the network never reached the target, so "
                    "time to target cannot be compared; lower --target-accuracy."
                )
            else:
                text.append(
                    f"Without dropout it reaches the target after {plural(e0, 'epoch', digits=1)} "
                    f"({s0:.1f} s; {n0}/{plural(len(base), 'seed')})."
                )
            for (impl, p), rs in group(
                [r for r in runs if r["regularizer"] == "dropout"], ("impl", "p")
            ).items():
                n = sum(r["epochs_to_target"] is not None for r in rs)
                t = nanmean([r["seconds_per_epoch"] for r in rs])
                step_ratio = t / t0 if t0 > 0 else math.nan
                if n == 0:
                    text.append(
                        f"With {impl} dropout p = {p:g} it never reaches the target before "
                        f"early stopping or its budget of {plural(rs[0]['epochs'], 'epoch')} "
                        "(test accuracy at its best validation epoch "
                        f"{percent(nanmean([r['test_acc'] for r in rs]))})."
                    )
                    continue
                e = nanmean([r["epochs_to_target"] for r in rs])
                s = nanmean([r["seconds_to_target"] for r in rs])
                if n0:
                    epoch_ratio = e / e0
                    text.append(
                        f"With {impl} dropout p = {p:g}: {plural(e, 'epoch', digits=1)} "
                        f"({epoch_ratio:.2f}x) and {s:.1f} wall s ({s / s0:.2f}x) to the target "
                        f"({n}/{plural(len(rs), 'seed')}; an epoch took {step_ratio:.2f}x the "
                        "unregularized one's wall time)."
                    )
        paragraphs.append(" ".join(text))
        if base:
            paragraphs.append(_plateau_reading(model, base, runs))
    if any(r["regularizer"] == "dropout" for r in train):
        paragraphs.append(
            "The wall seconds of separate runs carry the machine's load of the moment. The "
            f"cost of a step alone, timed side by side: `{STEP_TIME}` (its shape 'wide' is "
            "wide-mlp's, 'tutorial' tutorial-mlp's); time to the target is the epochs ratio "
            "above times its step ratio."
        )
    return paragraphs
