"""``dropkit run step-time``: how much of a training step is dropout?

The other half of "dropout slows convergence" (``dropkit run convergence``
measures the epochs to a target accuracy; time to a target is epochs x steps
per epoch x the time of a step). For a few network shapes, one training step
(forward, backward, Adam) with no dropout, with ``torch.nn.Dropout`` and with
dropkit's dropout (``--impl``), and the network's dropout calls alone (forward +
backward on activations of the layer's shape, the kernels without the network
around them), all timed side by side by :func:`dropkit.bench.interleave`: round
robin, the order rotated every round, in CPU time of the process
(``time.process_time``: time spent waiting for a core on a loaded machine is
not the network's cost). Each time is the fastest of ``--reps`` rounds (other
processes only ever add time, so the minimum is the least disturbed estimate);
the medians are recorded beside them. Dropout's part of a step is the step with
dropout minus the step without.

Per-run fields beyond the schema: ``shape``, ``width``, ``batch_size``,
``description``, ``impl`` (comma-separated), ``reps``; ``step_ms_<variant>``
(``none`` and each impl), ``dropout_ms_<impl>``, ``dropout_share_<impl>``,
``dropout_alone_ms_<impl>``, and ``step_median_ms_<variant>``,
``dropout_alone_median_ms_<impl>``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dropkit.experiments.claims_util import impl_option
from dropkit.experiments.options import CommonOptions, option, positive
from dropkit.experiments.registry import Experiment, register
from dropkit.experiments.train import RunSpec
from dropkit.experiments.wording import capitalise, span

#: the network shapes timed: (hidden width, batch size, description)
SHAPES: dict[str, tuple[int, int, str]] = {
    "tutorial": (64, 32, "the small in-64-64-out MLP (tutorial-mlp's shape), batch 32"),
    "wide": (512, 100, "the wide in-512-512-out MLP as trained here, batch 100"),
    "wide-large-batch": (512, 1000, "in-512-512-out, batch 1000 (wide layers, large batch)"),
    "wider": (2048, 100, "in-2048-2048-out, batch 100 (wider layers)"),
}


def _mlp(width: int, drop) -> nn.Sequential:
    # wide-mlp's layout (40 MNIST-1D features, 10 classes) at any width
    return nn.Sequential(
        nn.Linear(40, width), nn.ReLU(), drop(),
        nn.Linear(width, width), nn.ReLU(), drop(),
        nn.Linear(width, 10),
    )


def time_split(
    width: int, batch: int, p: float, impls: Sequence[str], *, reps: int = 60, number: int = 1
) -> dict[str, float]:
    """Time one training step with no dropout and with each implementation, side by side.

    Returns milliseconds per step (``step_ms_<variant>``, the fastest of ``reps``
    rounds; ``step_median_ms_<variant>``); dropout's part of the step,
    ``dropout_ms_<impl> = step_ms_<impl> - step_ms_none`` (floored at 0), and its
    share ``dropout_share_<impl>``; and the network's two dropout calls timed
    alone, forward + backward, on activations of the same shape
    (``dropout_alone_ms_<impl>``, ``dropout_alone_median_ms_<impl>``). Times
    are CPU time of this process (with several threads, their total).
    """
    import dropkit as dk
    from dropkit import bench

    drops = {"none": nn.Identity, "torch": lambda: nn.Dropout(p), "dropkit": lambda: dk.Dropout(p)}
    functional = {
        "torch": lambda z: nn.functional.dropout(z, p),
        "dropkit": lambda z: dk.dropout(z, p),
    }
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 40, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    h = torch.relu(torch.randn(batch, width, generator=gen))

    def training_step(variant: str):
        torch.manual_seed(0)  # the same weights for every variant
        net = _mlp(width, drops[variant])
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()

        return step

    def dropout_alone(impl: str):
        def calls() -> None:
            for _ in range(2):  # the network has two dropout layers
                z = h.detach().requires_grad_()
                functional[impl](z).backward(h)

        return calls

    contenders = {f"step {v}": training_step(v) for v in ("none", *impls)}
    contenders.update({f"alone {impl}": dropout_alone(impl) for impl in impls})
    times = bench.interleave(contenders, reps, clock=time.process_time, number=number)
    summary = bench.summary_ms(times)
    out: dict[str, float] = {}
    for variant in ("none", *impls):
        out[f"step_ms_{variant}"] = summary["min_ms"][f"step {variant}"]
        out[f"step_median_ms_{variant}"] = summary["median_ms"][f"step {variant}"]
    for impl in impls:
        out[f"dropout_alone_ms_{impl}"] = summary["min_ms"][f"alone {impl}"]
        out[f"dropout_alone_median_ms_{impl}"] = summary["median_ms"][f"alone {impl}"]
        # dropout's part of the step: what the step costs more than without it
        extra = max(0.0, out[f"step_ms_{impl}"] - out["step_ms_none"])
        out[f"dropout_ms_{impl}"] = extra
        out[f"dropout_share_{impl}"] = extra / out[f"step_ms_{impl}"]
    return out


@dataclass(frozen=True)
class StepTimeOptions(CommonOptions):
    # One run at a time: timings of shapes running in parallel would disturb each other.
    workers: int | None = 1
    p: tuple[float, ...] | None = (0.5,)
    seeds: tuple[int, ...] = (0,)
    impl: tuple[str, ...] = impl_option()
    shapes: tuple[str, ...] = option(tuple(SHAPES), "network shapes to time",
                                     choices=tuple(SHAPES), what="network shape")
    reps: int = option(60, "rounds of the side-by-side timing; the fastest is reported",
                       check=positive)


@register
class StepTime(Experiment):
    name = "step-time"
    help = (
        "How much of a training step is dropout? One step (forward, backward, Adam) of MLPs "
        "of a few shapes without dropout and with torch's and dropkit's, timed side by side "
        "(dropkit.bench), split into dropout and the rest."
    )
    options = StepTimeOptions
    plot_name = "time_split.png"

    def runs(self, config: dict[str, Any]) -> list[RunSpec]:
        impls, shapes, reps = config["impl"], config["shapes"], config["reps"]
        specs = []
        for p in config["p"]:
            for shape in shapes:
                width, batch, _ = SHAPES[shape]
                specs.append(
                    RunSpec(
                        dataset=config["dataset"], model=f"mlp-{width}", regularizer="dropout",
                        p=float(p), seed=0, epochs=0, batch_size=batch, lr=0.0,
                        extra={"shape": shape, "impl": ",".join(impls), "reps": reps},
                    )
                )
        return specs

    def run_one(self, spec, data, ctx) -> dict[str, Any]:
        width, batch, description = SHAPES[spec.extra["shape"]]
        t0 = time.perf_counter()
        torch.manual_seed(spec.seed)
        split = time_split(
            width, batch, spec.p, spec.extra["impl"].split(","), reps=int(spec.extra["reps"])
        )
        record: dict[str, Any] = {
            "dataset": spec.dataset, "model": spec.model, "regularizer": spec.regularizer,
            "p": spec.p, "seed": spec.seed,
            # nothing is trained: no accuracy, no epochs
            "train_acc": None, "test_acc": None, "train_loss": None, "test_loss": None,
            "val_acc": None, "best_epoch": None, "stopped_epoch": None,
            "seconds": round(time.perf_counter() - t0, 3),
            "history": {k: [] for k in ("epoch", "train_acc", "val_acc", "train_loss",
                                        "val_loss")},
            "key": spec.key, "width": width, "batch_size": batch, "description": description,
            **spec.extra,
            **{k: round(v, 4) for k, v in split.items()},
        }
        if ctx.progress is not None:
            ctx.progress(1, 1)
        return record

    # ------------------------------------------------------------- results
    def table(self, records, config):
        return [
            {
                "model": f"{r['model']} batch {r['batch_size']}",
                "variant": f"{impl} dropout p={r['p']:g}",
                "n": 1,
                "step_ms_none": round(r["step_ms_none"], 3),
                "step_ms": round(r[f"step_ms_{impl}"], 3),
                "dropout_ms": round(r[f"dropout_ms_{impl}"], 3),
                "dropout_alone_ms": round(r[f"dropout_alone_ms_{impl}"], 3),
                "dropout_share": f"{100 * r[f'dropout_share_{impl}']:.0f}%",
            }
            for r in records
            for impl in r["impl"].split(",")
        ]

    def curves(self, records, config):
        return None  # no curves.png: timed steps, not training

    def figures(self, records, config, out_dir):
        from dropkit.experiments.plots import pyplot, save, suptitle

        plt = pyplot()
        n = len(records)
        several_p = len({r["p"] for r in records}) > 1
        fig, axes = plt.subplots(n, 1, figsize=(9, 1.6 + 1.5 * n), squeeze=False,
                                 layout="constrained")
        for ax, r in zip(axes.flat, records, strict=True):
            variants = ("none", *r["impl"].split(","))
            steps = [r[f"step_ms_{v}"] for v in variants]
            drop = [0.0 if v == "none" else min(r[f"dropout_ms_{v}"], s)
                    for v, s in zip(variants, steps, strict=True)]
            rest = [s - d for s, d in zip(steps, drop, strict=True)]
            ypos = list(range(len(variants)))[::-1]
            ax.barh(ypos, rest, color="#9bbbe0", label="rest of the step (matmuls, Adam, ...)")
            ax.barh(ypos, drop, left=rest, color="#d9534f",
                    label="dropout forward + backward (step with − step without)")
            for y, a, b in zip(ypos, rest, drop, strict=True):
                share = f" (dropout {100 * b / (a + b):.0f}%)" if b > 0 else ""
                ax.text(a + b, y, f" {a + b:.2f} ms{share}", va="center", fontsize=8)
            names = ["no dropout" if v == "none" else f"{v} dropout" for v in variants]
            ax.set_yticks(ypos, names, fontsize=8)
            ax.set_xlim(0, 1.35 * max(steps))
            ax.set_title(r["description"] + (f", p = {r['p']:g}" if several_p else ""),
                         fontsize=9)
            ax.grid(axis="x", alpha=0.3)
        axes.flat[-1].set_xlabel("CPU ms per training step (fastest of the repetitions)")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncol=2)
        rates = "" if several_p else f" (p = {records[0]['p']:g})"
        suptitle(fig, f"Time per training step, measured side by side{rates}")
        return [save(fig, Path(out_dir) / self.plot_name)]

    def reading(self, records, config):
        return step_time_reading(records)


def step_time_reading(records: Sequence[dict[str, Any]]) -> list[str]:
    """One paragraph: each shape's step and dropout's part of it, the largest and smallest
    share, torch against dropkit, and the share in the shapes people train."""
    if not records:
        return []
    parts = []
    for r in records:
        bits = [
            f"{impl}: {r[f'step_ms_{impl}']:.3f} ms, of which dropout "
            f"{r[f'dropout_ms_{impl}']:.3f} ms ({100 * r[f'dropout_share_{impl}']:.0f}%; "
            f"its kernels alone {r[f'dropout_alone_ms_{impl}']:.3f} ms)"
            for impl in r["impl"].split(",")
        ]
        parts.append(
            f"{capitalise(r['description'])}: no dropout {r['step_ms_none']:.3f} ms per "
            "step; " + "; ".join(bits) + "."
        )
    text = (
        "CPU time per training step (fastest of side-by-side repetitions; dropout's part = "
        "step with dropout minus step without). " + " ".join(parts)
    )
    for impl in records[0]["impl"].split(","):
        shares = {r["description"]: r[f"dropout_share_{impl}"] for r in records}
        big = max(shares, key=shares.__getitem__)
        small = min(shares, key=shares.__getitem__)
        if big != small and f"{100 * shares[big]:.0f}" != f"{100 * shares[small]:.0f}":
            text += (
                f" With {impl}'s dropout the share of the step is largest for {big} "
                f"({100 * shares[big]:.0f}%) and smallest for {small} "
                f"({100 * shares[small]:.0f}%)."
            )
    if "torch" in records[0]["impl"] and "dropkit" in records[0]["impl"]:
        for r in records:
            torch_ms, dropkit_ms = r["step_ms_torch"], r["step_ms_dropkit"]
            ratio = max(torch_ms, dropkit_ms) / min(torch_ms, dropkit_ms)
            if f"{ratio:.2f}" == "1.00":
                text += (
                    f" {capitalise(r['description'])}: the steps with torch's and with "
                    "dropkit's dropout take the same time."
                )
                continue
            faster, slower = ("dropkit", "torch") if dropkit_ms < torch_ms else ("torch", "dropkit")
            text += (
                f" {capitalise(r['description'])}: the step with {faster}'s dropout is "
                f"{ratio:.2f}x faster than with {slower}'s."
            )
    wide = [r for r in records if r["width"] >= 512 and "dropout_share_torch" in r]
    if wide:
        lo = min(r["dropout_share_torch"] for r in wide)
        hi = max(r["dropout_share_torch"] for r in wide)
        text += (
            " Networks people train have layers of hundreds to thousands of units, "
            "the rows of width 512 and more: there torch's dropout costs "
            f"{span(f'{100 * lo:.0f}%', f'{100 * hi:.0f}%')} of a step on this CPU; the "
            "rest of the extra time to a target is the optimisation (the epochs ratio of "
            "`dropkit run convergence`)."
        )
    return [text]
