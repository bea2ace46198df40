"""``dropkit run droppath``: can too much DropPath keep a network from converging?

A common claim: "with too high a drop rate, DropPath can keep a network
from converging". A deep residual MLP (``resmlp`` with ``--depth`` blocks,
default 12) is trained with DropPath at maximum rates 0..0.9 under two
schedules:

``linear``   block ``i`` of ``L`` drops its branch with ``max_rate * i / (L - 1)``
             (``dk.drop_path_rates``: stochastic depth's schedule, the default of
             timm's ViT/ConvNeXt);
``uniform``  every block drops its branch with ``max_rate``.

Convergence criterion (stated, computed per run): the run **converged** when
its final training loss -- cross-entropy on the whole training set with the
network in eval mode -- is at most half its starting value (the same loss of
the untrained network, about ln 10 = 2.30 for 10 classes). Per run:
``initial_train_loss``, ``loss_ratio`` (final / initial), ``converged``, plus
final train and test accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from dropkit.experiments import plan, regularizers
from dropkit.experiments.models import ResMLP
from dropkit.experiments.options import CommonOptions, option
from dropkit.experiments.plan import model_settings
from dropkit.experiments.registry import Experiment, register
from dropkit.experiments.summary import group, mean_std
from dropkit.experiments.train import RunSpec, evaluate, train_run
from dropkit.experiments.wording import capitalise, listing, percent, plural, points

SCHEDULES = ("linear", "uniform")
CONVERGED_LOSS_RATIO = 0.5


def build_resmlp(
    in_features: int, n_classes: int, max_rate: float, schedule: str, depth: int, width: int = 64
) -> nn.Module:
    """The framework's ``ResMLP`` with ``depth`` blocks and DropPath by ``schedule``."""
    import dropkit as dk

    reg = regularizers.get("droppath")
    model = ResMLP(in_features, n_classes, reg, max_rate, width=width, depth=depth)
    rates = dk.drop_path_rates(depth, max_rate) if schedule == "linear" else [max_rate] * depth
    for block, rate in zip(model.blocks, rates, strict=True):
        block.drop_path = dk.DropPath(rate) if rate > 0 else nn.Identity()
    return model


@dataclass(frozen=True)
class DropPathOptions(CommonOptions):
    models: tuple[str, ...] = ("resmlp",)
    regularizers: tuple[str, ...] = ("droppath",)
    p: tuple[float, ...] | None = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
    # The protocol, trimmed to keep 22 runs of a 12-block network within minutes:
    # stop after 20 epochs without a better validation accuracy (the protocol's
    # 50), at most 200 epochs (models.py: 500); a run cut by the budget is flagged.
    epochs: int | None = 200
    patience: int | None = 20
    seeds: tuple[int, ...] = (0, 1)
    schedules: tuple[str, ...] = option(
        SCHEDULES, "DropPath schedules; --p gives the max rates", choices=SCHEDULES,
        what="DropPath schedule",
    )
    depth: int = option(12, "residual blocks of the resmlp",
                        check=lambda d: None if d >= 2 else "expected at least 2")


@register
class DropPathDepth(Experiment):
    name = "droppath"
    wall_time = "13 min on a 2-core AMD EPYC (2 workers, load average 2-4)"
    help = (
        "Can too much DropPath keep a deep residual MLP from converging? Max rates 0..0.9, "
        "linear depth schedule vs uniform rate; converged = final train loss <= half its "
        "starting value."
    )
    options = DropPathOptions
    accepts = ("resmlp",)
    plot_name = "droppath.png"

    def runs(self, config: dict[str, Any]) -> list[RunSpec]:
        schedules, depth = config["schedules"], config["depth"]
        specs = []
        for seed in config["seeds"]:
            s = model_settings(config, "resmlp")
            rates = s["p"]
            for schedule in schedules:
                for rate in rates:
                    if rate == 0.0 and schedule != schedules[0]:
                        continue  # rate 0: both schedules are the same network
                    specs.append(
                        plan.spec(
                            config,
                            model="resmlp",
                            regularizer="droppath",
                            p=rate,
                            seed=seed,
                            extra={"schedule": schedule if rate > 0 else "none", "depth": depth},
                        )
                    )
        return specs

    def run_one(self, spec, data, ctx):
        initial: dict[str, float] = {}
        schedule = spec.extra["schedule"]

        def build() -> nn.Module:
            model = build_resmlp(
                data.n_features,
                data.n_classes,
                spec.p,
                "linear" if schedule == "none" else schedule,
                spec.extra["depth"],
            ).to(ctx.device)
            model.eval()
            initial["acc"], initial["loss"] = evaluate(
                model, data.x_train.to(ctx.device), data.y_train.to(ctx.device)
            )
            return model

        record = train_run(spec, data, ctx, model=build).record
        record["initial_train_loss"] = initial["loss"]
        record["loss_ratio"] = record["train_loss"] / initial["loss"]
        record["converged"] = bool(
            record["loss_ratio"] <= CONVERGED_LOSS_RATIO and math.isfinite(record["train_loss"])
        )
        return record

    # ------------------------------------------------------------- results
    def table(self, records, config):
        rows = []
        for (schedule, p), runs in group(records, ("schedule", "p")).items():
            rows.append(
                {
                    "schedule": schedule,
                    "max rate": p,
                    "n": len(runs),
                    "test_acc": mean_std(r["test_acc"] for r in runs),
                    "train_acc": mean_std(r["train_acc"] for r in runs),
                    "loss_ratio": mean_std(r["loss_ratio"] for r in runs),
                    "converged": f"{sum(r['converged'] for r in runs)}/{len(runs)}",
                }
            )
        return rows

    def curves(self, records, config):
        return dict(
            label=lambda r, _rs: f"{r['schedule']} max={r['p']:g}",
            panel=lambda r: f"resmlp ({r['depth']} blocks), DropPath schedule: {r['schedule']}",
            title="Test (solid) and train (dashed) accuracy",
        )

    def figures(self, records, config, out_dir):
        from dropkit.experiments.plots import pyplot, save

        out_dir = Path(out_dir)
        plt = pyplot()
        fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
        base = [r for r in records if r["schedule"] == "none"]
        marked = False
        for i, schedule in enumerate(SCHEDULES):
            runs = base + [r for r in records if r["schedule"] == schedule]
            if len(runs) == len(base):
                continue
            color = plt.get_cmap("tab10")(i)
            by_p = sorted(group(runs, ("p",)).items())
            xs = [p for (p,), _ in by_p]
            for field, style, name in (("test_acc", "-o", "test"), ("train_acc", "--s", "train")):
                ms = [mean_std(r[field] for r in rs) for _, rs in by_p]
                ax_acc.errorbar(
                    xs,
                    [m for m, _ in ms],
                    yerr=[s for _, s in ms],
                    fmt=style,
                    color=color,
                    capsize=3,
                    ms=4,
                    label=f"{schedule}: {name}",
                )
            ratio = [mean_std(r["loss_ratio"] for r in rs) for _, rs in by_p]
            ax_loss.errorbar(
                xs,
                [m for m, _ in ratio],
                yerr=[s for _, s in ratio],
                fmt="-o",
                color=color,
                capsize=3,
                ms=4,
                label=schedule,
            )
            for (p,), rs in by_p:
                failed = [r for r in rs if not r["converged"]]
                if failed:
                    y = mean_std(r["test_acc"] for r in rs)[0]
                    ax_acc.plot(
                        [p],
                        [y],
                        "x",
                        color="red",
                        ms=12,
                        mew=2.5,
                        label="did not converge (≥1 seed)" if not marked else None,
                    )
                    marked = True
                    ax_loss.plot(
                        [p],
                        [mean_std(r["loss_ratio"] for r in rs)[0]],
                        "x",
                        color="red",
                        ms=12,
                        mew=2.5,
                    )
        ax_loss.axhline(
            CONVERGED_LOSS_RATIO,
            color="k",
            ls=":",
            lw=1,
            label=f"criterion: loss/start ≤ {CONVERGED_LOSS_RATIO:g}",
        )
        depth = records[0]["depth"] if records else "?"
        ax_acc.set_title(f"resmlp, {depth} blocks: accuracy against max DropPath rate")
        ax_acc.set_xlabel("max DropPath rate")
        ax_acc.set_ylabel("accuracy (eval mode, best validation epoch)")
        ax_loss.set_title("Train loss at the best validation epoch / its starting value")
        ax_loss.set_xlabel("max DropPath rate")
        ax_loss.set_ylabel("loss ratio (lower = learned more)")
        ax_loss.set_ylim(bottom=0)
        for ax in (ax_acc, ax_loss):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        return [save(fig, out_dir / self.plot_name)]

    def reading(self, records, config):
        return droppath_reading(records)


def droppath_reading(records: list[dict[str, Any]]) -> list[str]:
    if not records:
        return []
    depth = records[0]["depth"]
    base = [r for r in records if r["schedule"] == "none"]
    budget, patience = records[0]["epochs"], records[0].get("patience")
    training = (
        f"trains until validation accuracy has not improved for "
        f"{plural(patience, 'epoch')}, at most {plural(budget, 'epoch')}"
        if patience else f"trains for {plural(budget, 'epoch')}"
    )
    text = [
        f"The resmlp has {plural(depth, 'residual block')} and {training}; a run counts as "
        f"converged when its training loss (at its best validation epoch) is at most "
        f"{CONVERGED_LOSS_RATIO:g}x its starting value."
    ]
    base_failed = bool(base) and not all(r["converged"] for r in base)
    if base:
        text.append(
            f"Without DropPath: test {percent(mean_std(r['test_acc'] for r in base)[0])}, "
            f"train {percent(mean_std(r['train_acc'] for r in base)[0])}, loss ratio "
            f"{mean_std(r['loss_ratio'] for r in base)[0]:.2f}"
            + (
                (
                    ", and it did not converge by the criterion either."
                    if len(base) == 1
                    else f", and {sum(not r['converged'] for r in base)} of its "
                    f"{len(base)} runs did not converge by the criterion either."
                )
                if base_failed
                else "."
            )
        )
    best_overall = None
    for schedule in SCHEDULES:
        runs = [r for r in records if r["schedule"] == schedule]
        if not runs:
            continue
        by_p = sorted(group(runs, ("p",)).items())
        failed = [p for (p,), rs in by_p if not all(r["converged"] for r in rs)]
        accs = {p: mean_std(r["test_acc"] for r in rs)[0] for (p,), rs in by_p}
        best = max(accs, key=accs.__getitem__)
        if best_overall is None or accs[best] > best_overall[2]:
            best_overall = (schedule, best, accs[best])
        lowest, highest = min(accs), max(accs)
        part = (
            f"{capitalise(schedule)} schedule: test accuracy {percent(accs[lowest])} at max "
            f"rate {lowest:g}"
            + (
                f" and {percent(accs[highest])} at {highest:g}; best {percent(accs[best])} "
                f"at {best:g}."
                if highest != lowest
                else "."
            )
        )
        rates = listing([f"{p:g}" for p in failed])
        if failed and base_failed:
            part += (
                f" Runs at max rate {rates} did not converge by the criterion, but neither "
                "did the network without DropPath: the criterion is out of reach in this "
                "budget, so this is not DropPath's doing."
            )
        elif failed:
            part += (
                f" Training did not converge (by the criterion, in at least one seed) at "
                f"max rate {rates}, where the network without DropPath did."
            )
        else:
            part += " Every run converged by the criterion."
        if base:
            fit = {p: mean_std(r["train_acc"] for r in rs)[0] for (p,), rs in by_p}
            b_fit = mean_std(r["train_acc"] for r in base)[0]
            if b_fit - fit[highest] >= 0.05:
                part += (
                    f" At max rate {highest:g} it fits the training set less well: train "
                    f"accuracy {percent(fit[highest])} against {percent(b_fit)} without "
                    "DropPath."
                )
        text.append(part)
    if best_overall is not None and base:
        b = mean_std(r["test_acc"] for r in base)[0]
        text.append(
            f"The best setting ({best_overall[0]}, max rate {best_overall[1]:g}) is "
            f"{points(best_overall[2] - b, signed=True)} against no DropPath."
        )
    return [" ".join(text)]
