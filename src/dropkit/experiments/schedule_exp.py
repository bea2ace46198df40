"""``dropkit run schedule``: dropout over training time (early, late, standard, none).

Liu et al., "Dropout Reduces Underfitting" (ICML 2023): *early* dropout (a small
rate, on for the first part of training, then off) lowers the final training
loss of networks that underfit; *late* dropout or drop-path (off for the first
part, then on) regularises networks that overfit. Here, with
``dk.DropoutSchedule`` built on each freshly seeded network:

- ``tutorial-mlp`` (the tutorials' network) and ``wide-mlp`` (overfits
  MNIST-1D): no dropout, standard, early and late dropout;
- ``resmlp`` (4 pre-norm residual blocks, width :data:`RESMLP_WIDTH`): the same
  four with DropPath on the branches (depth schedule ``dk.drop_path_rates``,
  scaled as a whole by the schedule).

Defaults and why:

- ``--early-p 0.1``, linear decay to 0 (``--early-shape``): Liu et al.'s early
  dropout and early stochastic depth rate and shape.
- standard and late use each model's own rate (``--p`` overrides it): 0.5 for
  tutorial-mlp (the tutorials'), 0.2 for wide-mlp, 0.1 for resmlp (models.py).
- ``--until-epochs 10``: about the first sixth of the 30-80 epochs these runs
  train before early stopping, as the paper's 50 of 300; converted to optimizer
  steps (``until = epochs x steps per epoch``) for the schedule.
- Trimmed to finish within 3 minutes on an idle 2-core machine with 2 workers
  (measured: 148 s of CPU; docs/experiments.md): seeds 0 and 1 (the fewest that
  estimate the seed noise), a budget of 100 epochs (models.py: 500) and
  patience 10 (protocol: 50), resmlp at width 64 (the registry's: 128).
  Patience must be at least ``--until-epochs`` so that every
  late run reaches its switch (it stops at best epoch + patience > until).

Training follows the protocol of ``train.py`` (stop on validation accuracy, test
read once at the best validation epoch). Per run, besides the schema:
``schedule`` (none/standard/early/late), ``until_epochs``, ``until_steps``,
``steps_per_epoch``, ``early_shape``, ``final_rates`` (the scheduled layers'
rates when training stopped), ``history["drop_rate"]`` (the largest layer's
rate, mean over each epoch's steps). ``train_loss`` is the training loss at the
best validation epoch, ``last_train_loss`` at the end of training: the latter is
Liu et al.'s measure of underfitting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from dropkit.experiments import fit, models, plan, regularizers, wording
from dropkit.experiments.models import ResMLP
from dropkit.experiments.options import CommonOptions, between, option, positive
from dropkit.experiments.registry import Experiment, register
from dropkit.experiments.summary import difference, group, mean_std, significance
from dropkit.experiments.train import RunSpec, train_run

MODES = ("none", "standard", "early", "late")
RESMLP_WIDTH = 64
_VERDICT = {
    "clear": "beyond twice the seed noise",
    "small": "between one and two standard errors",
    "within noise": "within the seed noise",
    "untested": "one seed: no estimate of the noise",
}


def regularizer_for(model: str) -> str:
    """DropPath where there are residual branches to drop, dropout elsewhere."""
    return "droppath" if model == "resmlp" else "dropout"


def build_network(spec: RunSpec, n_features: int, n_classes: int) -> nn.Module:
    reg = regularizers.get(spec.regularizer)
    if spec.model == "resmlp":
        return ResMLP(n_features, n_classes, reg, spec.p, width=RESMLP_WIDTH, depth=4)
    return models.build_model(spec.model, n_features, n_classes, reg, spec.p)


@dataclass(frozen=True)
class ScheduleOptions(CommonOptions):
    models: tuple[str, ...] = ("tutorial-mlp", "wide-mlp", "resmlp")
    seeds: tuple[int, ...] = (0, 1)
    epochs: int | None = 100
    patience: int | None = 10
    modes: tuple[str, ...] = option(MODES, "when dropout is on", choices=MODES, what="mode")
    until_epochs: int = option(10, "epoch of the switch: early ends, late starts",
                               check=positive)
    early_p: float = option(
        0.1, "early dropout/drop-path rate (Liu et al.'s); --p sets standard and late",
        check=between(0, 1, low_open=True, high_open=True, name="p"),
    )
    early_shape: str = option("linear", "early phase", choices=("linear", "constant"),
                              what="shape")

    def __post_init__(self) -> None:
        super().__post_init__()
        if tuple(self.regularizers) != ("none", "dropout"):
            raise ValueError(
                "schedule picks the regularizer itself (dropout; droppath on "
                "resmlp): drop --regularizers and choose --modes."
            )
        if "late" in self.modes and self.patience is not None and self.patience < self.until_epochs:
            raise ValueError(
                f"--patience {self.patience} is below --until-epochs {self.until_epochs}: a "
                "late run could stop before its dropout starts. Raise --patience."
            )


@register
class Schedule(Experiment):
    name = "schedule"
    wall_time = "1 min 12 s on a 2-core AMD EPYC (2 workers, load average about 1.5)"
    help = (
        "Dropout over training time (Liu et al. 2023): none, standard, early and late "
        "dropout (drop-path on resmlp); final training loss, test accuracy at the best "
        "validation epoch, curves."
    )
    options = ScheduleOptions
    plot_name = "schedule.png"

    def runs(self, config: dict[str, Any]) -> list[RunSpec]:
        modes, shape = config["modes"], config["early_shape"]
        until, early_p = config["until_epochs"], config["early_p"]
        specs = []
        for seed in config["seeds"]:
            for model in config["models"]:
                s = plan.model_settings(config, model)
                if until >= s["epochs"]:
                    raise ValueError(
                        f"--until-epochs {until} must be below the budget of "
                        f"{model} ({s['epochs']} epochs, --epochs)."
                    )
                for mode in modes:
                    rates = {"none": [0.0], "early": [early_p]}.get(mode, s["p"])
                    for p in rates:
                        specs.append(
                            plan.spec(
                                config,
                                model=model,
                                seed=seed,
                                p=p,
                                regularizer="none" if mode == "none" else regularizer_for(model),
                                extra={
                                    "schedule": mode,
                                    "until_epochs": until,
                                    "early_shape": shape,
                                },
                            )
                        )
        return specs

    def run_one(self, spec, data, ctx):
        import dropkit as dk

        mode = spec.extra["schedule"]
        train_part, _ = data.split_validation(spec.val_fraction, spec.seed)
        steps_per_epoch = math.ceil(len(train_part.x_train) / spec.batch_size)
        until = spec.extra["until_epochs"] * steps_per_epoch
        held: dict[str, Any] = {"used": []}

        def build() -> nn.Module:
            model = build_network(spec, data.n_features, data.n_classes)
            if mode != "none":
                held["schedule"] = dk.DropoutSchedule(
                    model,
                    mode,
                    until=until,
                    total=spec.epochs * steps_per_epoch,
                    shape=spec.extra["early_shape"],
                )
            return model

        def on_step() -> None:  # the rate this step trained with, then the next step's
            held["used"].append(max(held["schedule"].rates().values()))
            held["schedule"].step()

        def on_epoch(epoch, model, history) -> None:
            used, held["used"] = held["used"], []
            history.setdefault("drop_rate", []).append(sum(used) / len(used) if used else 0.0)

        result = train_run(
            spec,
            data,
            ctx,
            model=build,
            on_epoch=on_epoch,
            on_step=None if mode == "none" else on_step,
        )
        record = result.record
        record.update(
            until_steps=until,
            steps_per_epoch=steps_per_epoch,
            final_rates=held["schedule"].rates() if mode != "none" else {},
        )
        return record

    # ------------------------------------------------------------- results
    def table(self, records, config):
        rows = []
        for (model, _mode, _p), runs in group(records, ("model", "schedule", "p")).items():
            rows.append(
                {
                    "model": model,
                    "schedule": _label(runs[0]),
                    "n": len(runs),
                    "test_acc": mean_std(r["test_acc"] for r in runs),
                    "last_train_loss": mean_std(r["last_train_loss"] for r in runs),
                    "train_loss_at_best": mean_std(r["train_loss"] for r in runs),
                    "train_acc": mean_std(r["train_acc"] for r in runs),
                    "gap": mean_std(r["gap"] for r in runs),
                    "best_epoch": mean_std(r["best_epoch"] for r in runs),
                    "stopped_epoch": mean_std(r["stopped_epoch"] for r in runs),
                    "seconds": mean_std(r["seconds"] for r in runs),
                }
            )
        return rows

    def curves(self, records, config):
        return dict(
            label=lambda r, _: _label(r),
            panel=lambda r: f"{r['model']} on {r['dataset']}",
        )

    def figures(self, records, config, out_dir):
        from dropkit.experiments.plots import pyplot, save, suptitle

        out_dir = Path(out_dir)
        plt = pyplot()
        panels = group(records, ("dataset", "model"))
        fig, axes = plt.subplots(
            2,
            len(panels),
            figsize=(5.2 * len(panels), 6.4),
            squeeze=False,
            sharex="col",
            height_ratios=[3, 1],
            layout="constrained",
        )
        for col, ((dataset, model), runs) in enumerate(panels.items()):
            for i, ((_, rs)) in enumerate(group(runs, lambda r: (_label(r),)).items()):
                n = max(len(r["history"]["epoch"]) for r in rs)
                for row, field in ((0, "train_loss"), (1, "drop_rate")):
                    values = [
                        [r["history"][field][k] for r in rs if k < len(r["history"][field])]
                        for k in range(n)
                    ]
                    axes[row, col].plot(
                        range(1, n + 1),
                        [sum(v) / len(v) for v in values],
                        color=plt.get_cmap("tab10")(i),
                        label=_label(rs[0]),
                    )
            for ax in axes[:, col]:
                ax.axvline(runs[0]["until_epochs"], color="k", ls=":", lw=1)
                ax.grid(alpha=0.3)
            axes[0, col].set_yscale("log")
            axes[0, col].set_title(f"{model} on {dataset}")
            axes[0, col].set_ylabel("training loss (eval mode, 1000 examples)")
            axes[1, col].set_ylabel("drop rate")
            axes[1, col].set_xlabel("epoch (dotted: the switch)")
            axes[0, col].legend(fontsize=8)
        suptitle(
            fig,
            "Training loss and the scheduled rate over training "
            "(mean over the seeds still training)",
        )
        return [save(fig, out_dir / self.plot_name)]

    def reading(self, records, config):
        return schedule_reading(records)


def _label(r: dict[str, Any]) -> str:
    return "none" if r["schedule"] == "none" else f"{r['schedule']} p={r['p']:g}"


def _loss(value: float) -> str:
    return wording.number(value, 3) if abs(value) >= 0.01 else f"{value:.1e}"


def _verdict(values_a: list[float], values_b: list[float]) -> tuple[float, str]:
    """Mean of b minus mean of a, and how it compares with the seed noise."""
    d, se = difference(values_a, values_b)
    return d, significance(d, se)


_REGIME = {
    "overfitting": "overfits",
    "fits": "neither overfits nor lacks capacity",
    "under-capacity": "lacks capacity",
    "under-trained": "is under-trained",
    "diverged": "diverged",
}


def schedule_reading(records: list[dict[str, Any]]) -> list[str]:
    """One paragraph per data set and model, computed from the measured means."""
    paragraphs = []
    for (dataset, model), runs in group(records, ("dataset", "model")).items():
        what = "drop-path" if any(r["regularizer"] == "droppath" for r in runs) else "dropout"
        r0, seeds = runs[0], len({r["seed"] for r in runs})
        text = [
            f"The {model} network on {dataset} ({wording.plural(seeds, 'seed')}; budget "
            f"{wording.plural(r0['epochs'], 'epoch')}, patience {r0['patience']}; early "
            f"{what} ends and late {what} starts at epoch {r0['until_epochs']})."
        ]
        modes = group(runs, ("schedule", "p"))
        base = [r for r in runs if r["schedule"] == "none"]
        base_fit = fit.diagnose(base) if base else None
        if base_fit is not None:
            loss0 = mean_std(r["last_train_loss"] for r in base)[0]
            text.append(
                f"Without {what} the network {base_fit.sentence()}. Its training loss is "
                f"{_loss(loss0)} at the end of training."
            )
        for (mode, p), rs in modes.items():
            if mode == "none" or not base:
                continue
            d_loss, v_loss = _verdict(
                [r["last_train_loss"] for r in base], [r["last_train_loss"] for r in rs]
            )
            d_acc, v_acc = _verdict([r["test_acc"] for r in base], [r["test_acc"] for r in rs])
            text.append(
                wording.capitalise(
                    f"{mode} {what} (p = {p:g}) ends training at a loss of "
                    f"{_loss(mean_std(r['last_train_loss'] for r in rs)[0])} against "
                    f"{_loss(loss0)} without it ({_VERDICT[v_loss]}; "
                    f"{_loss(mean_std(r['train_loss'] for r in rs)[0])} at its best validation "
                    f"epoch) and {wording.change(d_acc, 'test accuracy')} ({_VERDICT[v_acc]})."
                )
            )
            if mode == "early":
                text.append(_early_claim(what, d_loss, v_loss, d_acc, v_acc, base_fit))
            if mode == "late":
                std = [r for r in runs if r["schedule"] == "standard" and r["p"] == p]
                text.append(_late_claim(what, base, std, rs, base_fit))
        best = max(modes.items(), key=lambda kv: mean_std(r["test_acc"] for r in kv[1])[0])
        text.append(
            f"Highest test accuracy: {_label(best[1][0])}, "
            f"{wording.percent(mean_std(r['test_acc'] for r in best[1])[0])}."
        )
        paragraphs.append(" ".join(text))
    return paragraphs


def _early_claim(what, d_loss, v_loss, d_acc, v_acc, base_fit) -> str:
    if "untested" in (v_loss, v_acc):
        return f"Whether early {what} reduced underfitting needs more than one seed to say."
    lower, higher = d_loss < 0 and v_loss == "clear", d_acc > 0 and v_acc == "clear"
    # Liu et al.'s underfitting is a high training loss: a training set not fitted
    fitted = wording.percent(base_fit.train_acc)
    context = (
        f" Without {what} this network fits only {fitted} of its training examples: there "
        "is underfitting to reduce."
        if base_fit.train_acc < fit.LOW_TRAIN
        else f" Without {what} this network already fits {fitted} of its training examples: "
        f"little underfitting for early {what} to reduce (the paper targets networks that "
        "underfit)."
    )
    if lower and higher:
        verdict = (
            f"Early {what} reduced underfitting here: a lower final training loss and a "
            "higher test accuracy than without it, both beyond the seed noise."
        )
    elif lower:
        verdict = (
            f"Early {what} reduced underfitting here by Liu et al.'s measure (a lower "
            "final training loss, beyond the seed noise), without a clear gain in test "
            "accuracy."
        )
    elif higher:
        verdict = (
            f"Early {what} raised test accuracy beyond the seed noise, but its final "
            "training loss, Liu et al.'s measure of underfitting, is not clearly lower."
        )
    else:
        verdict = (
            f"Early {what} did not reduce underfitting here: neither a clearly lower "
            "final training loss nor a clearly higher test accuracy."
        )
    return verdict + context


def _late_claim(what, base, std, late, base_fit) -> str:
    late_acc = [r["test_acc"] for r in late]
    d0, v0 = _verdict([r["test_acc"] for r in base], late_acc)
    if v0 == "untested":
        return f"Whether late {what} helped needs more than one seed to say."
    did = "did not clearly help" if v0 != "clear" else "helped" if d0 > 0 else "hurt"
    text = (
        f"Late {what} {did} "
        f"{'the overfitting network' if base_fit.regime == 'overfitting' else 'here'}: "
        f"{wording.points(d0, signed=True)} of test accuracy against none ({_VERDICT[v0]})"
    )
    if std:
        d1, v1 = _verdict([r["test_acc"] for r in std], late_acc)
        text += f" and {wording.points(d1, signed=True)} against standard {what} ({_VERDICT[v1]})"
    text += "."
    before = sum(r["best_epoch"] <= r["until_epochs"] for r in late)
    if before:  # the selected network never trained with the late rate
        runs = "every run" if before == len(late) else f"{before} of {len(late)} runs"
        text += (
            f" In {runs} the best validation epoch came before the switch: validation "
            f"accuracy did not regain its level within the patience once {what} started, "
            f"so the network read at that epoch had not trained with {what}."
        )
    if base_fit.regime != "overfitting":
        text += (
            f" It is meant for networks that overfit (Liu et al.); without {what} this one "
            f"{_REGIME[base_fit.regime]}."
        )
    return text
