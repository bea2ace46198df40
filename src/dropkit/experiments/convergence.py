"""``dropkit run convergence``: does dropout slow convergence, and why?

A common claim: "dropout slows convergence: drawing a Bernoulli variable for
every neuron, and the extra multiply and rescale, add time". Two different
costs hide in that sentence, and this experiment separates them:

* **optimisation** -- how many *epochs* a network needs to reach a target test
  accuracy with and without dropout (``epochs_to_target`` per run), and the
  wall seconds that takes (``seconds_to_target``; ``None`` when never reached).
  The target is a fixed test accuracy (``--target``, default 0.60 on MNIST-1D:
  about 90% of the best the unregularized wide MLP reaches, so every variant
  can reach it within the budget and the comparison is of speed, not of final
  accuracy).
* **time per step** -- for a few network shapes, the time of one training step
  (forward, backward, Adam) with no dropout, with ``torch.nn.Dropout`` and with
  dropkit's dropout (``--impl torch,dropkit``), measured side by side
  in CPU time of the process (round-robin, fastest of the repetitions, so the
  load of a shared machine hits every variant alike and is filtered out). The time spent in dropout
  (forward + backward) is the step with dropout minus the step without; the
  same dropout calls timed alone on activations of the layer's shape (the
  kernels without the network around them) are reported beside it.

Per-run fields beyond the schema: ``kind`` ("train" or "timing"), ``impl``,
``epochs_to_target``, ``seconds_to_target``, ``target``, ``seconds_per_epoch``;
timing rows carry ``step_ms_*``, ``dropout_ms_*`` and ``dropout_share_*``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dropkit.experiments import models, plan, regularizers
from dropkit.experiments.claims_util import choices, first_reaching, nanmean
from dropkit.experiments.plan import model_settings
from dropkit.experiments.registry import Experiment, register
from dropkit.experiments.summary import group, mean_std
from dropkit.experiments.train import RunSpec, train_run
from dropkit.experiments.wording import capitalise, percent, plural, span

IMPLS = ("torch", "dropkit")

#: the network shapes of the time split: (hidden width, batch size, description)
TIMING_SETTINGS: dict[str, tuple[int, int, str]] = {
    "tutorial": (64, 32, "the small in-64-64-out MLP (tutorial-mlp's shape), batch 32"),
    "wide": (512, 100, "the wide in-512-512-out MLP as trained here, batch 100"),
    "wide-large-batch": (512, 1000, "in-512-512-out, batch 1000 (wide layers, large batch)"),
    "wider": (2048, 100, "in-2048-2048-out, batch 100 (wider layers)"),
}


# --------------------------------------------------------------------------
# the two dropout implementations in one network
# --------------------------------------------------------------------------
def to_torch_dropout(model: nn.Module) -> nn.Module:
    """Replace every dropkit dropout module by torch's equivalent (same p), in place.

    Same network, same weights, same rates: only the sampling kernel changes.
    """
    import dropkit as dk

    swap = {
        dk.Dropout: nn.Dropout,
        dk.Dropout1d: nn.Dropout1d,
        dk.Dropout2d: nn.Dropout2d,
        dk.Dropout3d: nn.Dropout3d,
    }
    for name, child in list(model.named_children()):
        kind = swap.get(type(child))
        if kind is not None:
            if type(child) is dk.Dropout and not child.inverted:
                raise ValueError("torch has no classic (scale-at-test-time) dropout to swap in")
            setattr(model, name, kind(child.p))
        else:
            to_torch_dropout(child)
    return model


@contextlib.contextmanager
def same_threads_for_numba():
    """Give dropkit's Numba kernels as many threads as torch has, for a fair comparison.

    torch's thread count is set by the runner (``--threads``); Numba keeps its own
    (all cores), so without this dropkit could use two cores where torch uses one.
    """
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _mlp(width: int, drop) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(40, width),
        nn.ReLU(),
        drop(),
        nn.Linear(width, width),
        nn.ReLU(),
        drop(),
        nn.Linear(width, 10),
    )


def time_split(
    width: int, batch: int, p: float, impls: Sequence[str], *, reps: int = 60, steps: int = 1
) -> dict[str, Any]:
    """Time one training step with no dropout and with each implementation, side by side.

    Returns milliseconds per step (``step_ms_<variant>``); dropout's part of
    the step, ``dropout_ms_<impl> = step_ms_<impl> - step_ms_none`` (floored at
    0), and its share ``dropout_share_<impl>``; and the network's dropout calls
    timed alone, forward + backward, on activations of the same shape
    (``dropout_alone_ms_<impl>``).
    Times are CPU time of this process (``time.process_time``), not wall
    time: on a shared machine, time spent waiting for a core is not the
    network's cost (with several threads it is their total CPU time). Each is
    the fastest of ``reps`` round-robin repetitions (timeit's convention):
    other processes only ever add time (cache misses, migrations), so the
    minimum is the estimate least disturbed by them.
    """
    import dropkit as dk

    drops = {"none": nn.Identity, "torch": lambda: nn.Dropout(p), "dropkit": lambda: dk.Dropout(p)}
    functional = {
        "torch": lambda z: nn.functional.dropout(z, p),
        "dropkit": lambda z: dk.dropout(z, p),
    }
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 40, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    h = torch.relu(torch.randn(batch, width, generator=gen))
    nets = {}
    for variant in ("none", *impls):
        torch.manual_seed(0)  # the same weights for every variant
        net = _mlp(width, drops[variant])
        nets[variant] = (net, torch.optim.Adam(net.parameters(), lr=1e-3))

    def step(net, opt) -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    def dropout_only(fn) -> None:
        for _ in range(2):  # the network has two dropout layers
            z = h.detach().requires_grad_()
            fn(z).backward(h)

    for net, opt in nets.values():  # warm-up (allocator, first-call overheads)
        step(net, opt)
    for impl in impls:
        dropout_only(functional[impl])
    step_times: dict[str, list[float]] = {v: [] for v in nets}
    drop_times: dict[str, list[float]] = {v: [] for v in impls}
    for _ in range(reps):
        for variant, (net, opt) in nets.items():
            t0 = time.process_time()
            for _ in range(steps):
                step(net, opt)
            step_times[variant].append((time.process_time() - t0) / steps)
        for impl in impls:
            t0 = time.process_time()
            for _ in range(steps):
                dropout_only(functional[impl])
            drop_times[impl].append((time.process_time() - t0) / steps)
    out: dict[str, Any] = {}
    for variant, values in step_times.items():
        out[f"step_ms_{variant}"] = 1e3 * min(values)
    for impl, values in drop_times.items():
        out[f"dropout_alone_ms_{impl}"] = 1e3 * min(values)
        # dropout's part of the step: what the step costs more than without it
        diff = out[f"step_ms_{impl}"] - out["step_ms_none"]
        out[f"dropout_ms_{impl}"] = max(0.0, diff)
        out[f"dropout_share_{impl}"] = max(0.0, diff) / out[f"step_ms_{impl}"]
    return out


# --------------------------------------------------------------------------
# the experiment
# --------------------------------------------------------------------------
def _label(r: dict[str, Any]) -> str:
    if r["regularizer"] == "none":
        return "none"
    return f"{r['impl']} dropout p={r['p']:g}"


@register
class Convergence(Experiment):
    name = "convergence"
    help = (
        "Does dropout slow convergence? Epochs and seconds to a target test accuracy with "
        "and without dropout (torch's and dropkit's), and the time per step split into "
        "dropout (forward + backward) and the rest."
    )
    defaults = {
        # One thread: on a shared 2-core machine two OpenMP threads per process
        # oversubscribe the cores and a step can take 10-50x longer (measured).
        "threads": 1,
        "models": ["wide-mlp"],
        "regularizers": ["none", "dropout"],
        "p": [0.2, 0.5],
        "epochs": 30,
        "seeds": [0, 1],
        "impl": ["torch", "dropkit"],
        "target": 0.60,
        "timing": list(TIMING_SETTINGS),
        "timing_reps": 60,
    }
    plot_name = "convergence.png"

    @classmethod
    def add_arguments(cls, group) -> None:
        group.add_argument(
            "--impl",
            default=None,
            help="dropout implementation(s), comma-separated: torch, dropkit (default: both)",
        )
        group.add_argument(
            "--target",
            type=float,
            default=None,
            help="target test accuracy for epochs/seconds to target "
            "(default 0.60: ~90%% of the unregularized wide MLP's best on "
            "MNIST-1D)",
        )
        group.add_argument(
            "--timing",
            default=None,
            help="network shapes for the time split, comma-separated: "
            f"{', '.join(TIMING_SETTINGS)} (default: all); 'none' skips it",
        )
        group.add_argument(
            "--timing-reps",
            dest="timing_reps",
            type=int,
            default=None,
            help="repetitions of the side-by-side step timing (default 60)",
        )

    def runs(self, config: dict[str, Any]) -> list[RunSpec]:
        impls = choices(config["impl"], IMPLS, "dropout implementation (--impl)")
        target = float(config["target"])
        if not 0.0 < target <= 1.0:
            raise ValueError(
                f"Invalid value for --target: expected 0 < target <= 1. Received: {target}"
            )
        timing = (
            []
            if config["timing"] in ("none", ["none"])
            else choices(config["timing"], tuple(TIMING_SETTINGS), "timing setting (--timing)")
        )
        if int(config["timing_reps"]) < 1:
            raise ValueError(f"Invalid value for --timing-reps: {config['timing_reps']}")
        for name in config["regularizers"]:
            if name not in ("none", "dropout"):
                raise ValueError(
                    f"convergence compares 'none' with 'dropout'; received "
                    f"regularizer {name!r}. Choose from: none, dropout."
                )
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
        p_timing = max(model_settings(config, config["models"][0])["p"] or [0.5])
        for setting in timing:
            specs.append(
                RunSpec(
                    dataset=config["dataset"],
                    model=f"mlp-{TIMING_SETTINGS[setting][0]}",
                    regularizer="dropout",
                    p=float(p_timing),
                    seed=0,
                    epochs=0,
                    batch_size=TIMING_SETTINGS[setting][1],
                    lr=0.0,
                    extra={
                        "kind": "timing",
                        "impl": ",".join(impls),
                        "setting": setting,
                        "reps": int(config["timing_reps"]),
                    },
                )
            )
        return specs

    def run_one(self, spec, data, ctx):
        if spec.extra["kind"] == "timing":
            return self._timing(spec, ctx)
        target = float(spec.extra["target"])
        impl = spec.extra["impl"]

        def build() -> nn.Module:
            reg = regularizers.get(spec.regularizer)
            net = models.build_model(spec.model, data.n_features, data.n_classes, reg, spec.p)
            return to_torch_dropout(net) if impl == "torch" else net

        with same_threads_for_numba():
            record = train_run(spec, data, ctx, model=build).record
        hist = record["history"]
        i = first_reaching(hist, "val_acc", target)
        record["epochs_to_target"] = None if i is None else hist["epoch"][i]
        record["seconds_to_target"] = None if i is None else hist["seconds"][i]
        record["seconds_per_epoch"] = record["train_seconds"] / max(record["stopped_epoch"], 1)
        return record

    def _timing(self, spec: RunSpec, ctx) -> dict[str, Any]:
        width, batch, description = TIMING_SETTINGS[spec.extra["setting"]]
        impls = spec.extra["impl"].split(",")
        t0 = time.perf_counter()
        torch.manual_seed(spec.seed)
        with same_threads_for_numba():
            split = time_split(width, batch, spec.p, impls, reps=int(spec.extra["reps"]))
        record: dict[str, Any] = {
            "dataset": spec.dataset,
            "model": spec.model,
            "regularizer": spec.regularizer,
            "p": spec.p,
            "seed": spec.seed,
            "train_acc": None,
            "test_acc": None,
            "train_loss": None,
            "test_loss": None,
            "seconds": round(time.perf_counter() - t0, 3),
            "history": {
                "epoch": [],
                "train_acc": [],
                "test_acc": [],
                "train_loss": [],
                "test_loss": [],
            },
            "key": spec.key,
            "width": width,
            "batch_size": batch,
            "description": description,
            **spec.extra,
            **{k: round(v, 4) for k, v in split.items()},
        }
        if ctx.progress is not None:
            ctx.progress(1, 1)
        return record

    # ------------------------------------------------------------- results
    def table(self, records, config):
        rows = []
        train = [r for r in records if r.get("kind") == "train"]
        for (model, _reg, _impl, _p), runs in group(
            train, ("model", "regularizer", "impl", "p")
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
                    "s_per_epoch": mean_std(r["seconds_per_epoch"] for r in runs),
                }
            )
        for r in records:
            if r.get("kind") != "timing":
                continue
            for impl in r["impl"].split(","):
                rows.append(
                    {
                        "model": f"{r['model']} batch {r['batch_size']}",
                        "variant": f"timing: {impl} dropout p={r['p']:g}",
                        "n": 1,
                        "step_ms_none": round(r["step_ms_none"], 3),
                        "step_ms": round(r[f"step_ms_{impl}"], 3),
                        "dropout_ms": round(r[f"dropout_ms_{impl}"], 3),
                        "dropout_alone_ms": round(r[f"dropout_alone_ms_{impl}"], 3),
                        "dropout_share": f"{100 * r[f'dropout_share_{impl}']:.0f}%",
                    }
                )
        return rows

    def plots(self, records, config, out_dir):
        from dropkit.experiments.plots import plot_curves, pyplot, save, suptitle

        out_dir = Path(out_dir)
        train = [r for r in records if r.get("kind") == "train"]
        timing = [r for r in records if r.get("kind") == "timing"]
        images = []
        if train:
            images.append(
                plot_curves(
                    train,
                    out_dir / "curves.png",
                    label=lambda r, _rs: _label(r),
                    title="Test (solid) and train (dashed) accuracy",
                )
            )
        plt = pyplot()
        if train:
            target = float(config["target"])
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
                ax.set_ylabel("test accuracy (mean over seeds)")
                ax.grid(alpha=0.3)
                ax.legend(fontsize=8, loc="lower right")
            ax_e.set_title(f"Test accuracy against epochs (target {target:g}: dotted)")
            ax_s.set_title("... and against wall-clock seconds (dots: mean time to target)")
            images.append(save(fig, out_dir / self.plot_name))
        if timing:
            n = len(timing)
            fig, axes = plt.subplots(
                n, 1, figsize=(9, 1.6 + 1.5 * n), squeeze=False, layout="constrained"
            )
            for ax, r in zip(axes.flat, timing, strict=True):
                variants = ("none", *r["impl"].split(","))
                rest, drop = [], []
                for variant in variants:
                    step = r[f"step_ms_{variant}"]
                    d = 0.0 if variant == "none" else min(r[f"dropout_ms_{variant}"], step)
                    rest.append(step - d)
                    drop.append(d)
                ypos = list(range(len(variants)))[::-1]
                ax.barh(ypos, rest, color="#9bbbe0", label="rest of the step (matmuls, Adam, ...)")
                ax.barh(
                    ypos,
                    drop,
                    left=rest,
                    color="#d9534f",
                    label="dropout forward + backward (step with − step without)",
                )
                for y, a, b in zip(ypos, rest, drop, strict=True):
                    share = f" (dropout {100 * b / (a + b):.0f}%)" if b > 0 else ""
                    ax.text(a + b, y, f" {a + b:.2f} ms{share}", va="center", fontsize=8)
                names = ["no dropout" if v == "none" else f"{v} dropout" for v in variants]
                ax.set_yticks(ypos, names, fontsize=8)
                ax.set_xlim(0, 1.35 * max(a + b for a, b in zip(rest, drop, strict=True)))
                ax.set_title(r["description"], fontsize=9)
                ax.grid(axis="x", alpha=0.3)
            axes.flat[-1].set_xlabel("CPU ms per training step (fastest of the repetitions)")
            handles, labels = axes.flat[0].get_legend_handles_labels()
            fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncol=2)
            suptitle(fig, f"Time per training step, measured side by side (p = {timing[0]['p']:g})")
            images.append(save(fig, out_dir / "time_split.png"))
        return images

    def reading(self, records, config):
        return convergence_reading(records, float(config["target"]))


_WIDTHS = {"tutorial-mlp": 64, "wide-mlp": 512}


def _side_by_side_estimate(runs: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]]):
    """Time to target = epochs to target x steps per epoch x the side-by-side step time.

    Wall seconds of separate runs on a shared machine carry the load of the
    moment; the step times measured round-robin in one timing row do not, so
    this estimate separates optimisation from step cost more reliably.
    """
    r0 = runs[0]
    width = _WIDTHS.get(r0["model"])
    rows = [
        t
        for t in records
        if t.get("kind") == "timing" and t["width"] == width and t["batch_size"] == r0["batch_size"]
    ]
    if not rows:
        return ""
    t = rows[0]
    steps = math.ceil(r0["train_size"] / r0["batch_size"])
    base = [r for r in runs if r["regularizer"] == "none"]
    e0 = nanmean([r["epochs_to_target"] for r in base])
    if not base or math.isnan(e0):
        return ""
    s0 = e0 * steps * t["step_ms_none"] / 1e3
    bits = []
    for (impl, p), rs in group(
        [r for r in runs if r["regularizer"] == "dropout"], ("impl", "p")
    ).items():
        e = nanmean([r["epochs_to_target"] for r in rs])
        key = f"step_ms_{impl}"
        if math.isnan(e) or key not in t:
            continue
        s = e * steps * t[key] / 1e3
        bits.append(
            f"{impl} p = {p:g}: {s:.2f} s ({s / s0:.2f}x = {e / e0:.2f}x epochs x "
            f"{t[key] / t['step_ms_none']:.2f}x step)"
        )
    if not bits:
        return ""
    return (
        f"Training time to target from the side-by-side step times of the same shape "
        f"(timing row '{t['setting']}', p = {t['p']:g}; less exposed to the machine's load "
        f"than the wall seconds above): none {s0:.2f} s; " + "; ".join(bits) + "."
    )


def convergence_reading(records: Sequence[dict[str, Any]], target: float) -> list[str]:
    paragraphs = []
    train = [r for r in records if r.get("kind") == "train"]
    for (model,), runs in group(train, ("model",)).items():
        base = [r for r in runs if r["regularizer"] == "none"]
        text = [f"For {model} the target test accuracy is {percent(target)}."]
        if base:
            e0 = nanmean([r["epochs_to_target"] for r in base])
            s0 = nanmean([r["seconds_to_target"] for r in base])
            t0 = nanmean([r["seconds_per_epoch"] for r in base])
            n0 = sum(r["epochs_to_target"] is not None for r in base)
            if n0 == 0:
                text.append(
                    "Without dropout the network never reached the target, so "
                    "time to target cannot be compared; lower --target."
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
                        f"With {impl} dropout p = {p:g} it never reaches the target in "
                        f"{plural(rs[0]['epochs'], 'epoch')} (final test accuracy "
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
        side = _side_by_side_estimate(runs, records)
        if side:
            text.append(side)
        paragraphs.append(" ".join(text))
    timing = [r for r in records if r.get("kind") == "timing"]
    if timing:
        parts = []
        for r in timing:
            impls = r["impl"].split(",")
            bits = [
                f"{impl}: {r[f'step_ms_{impl}']:.3f} ms, of which dropout "
                f"{r[f'dropout_ms_{impl}']:.3f} ms ({100 * r[f'dropout_share_{impl}']:.0f}%; "
                f"its kernels alone {r[f'dropout_alone_ms_{impl}']:.3f} ms)"
                for impl in impls
            ]
            parts.append(
                f"{capitalise(r['description'])}: no dropout {r['step_ms_none']:.3f} ms per "
                "step; " + "; ".join(bits) + "."
            )
        text = (
            "CPU time per training step (fastest of side-by-side repetitions; dropout's part = "
            "step with dropout minus step without). " + " ".join(parts)
        )
        for impl in timing[0]["impl"].split(","):
            shares = {r["description"]: r[f"dropout_share_{impl}"] for r in timing}
            big = max(shares, key=shares.__getitem__)
            small = min(shares, key=shares.__getitem__)
            if big != small and f"{100 * shares[big]:.0f}" != f"{100 * shares[small]:.0f}":
                text += (
                    f" With {impl}'s dropout the share of the step is largest for {big} "
                    f"({100 * shares[big]:.0f}%) and smallest for {small} "
                    f"({100 * shares[small]:.0f}%)."
                )
        if "torch" in timing[0]["impl"] and "dropkit" in timing[0]["impl"]:
            for r in timing:
                ratio = max(r["step_ms_torch"], r["step_ms_dropkit"]) / min(
                    r["step_ms_torch"], r["step_ms_dropkit"]
                )
                if f"{ratio:.2f}" == "1.00":
                    text += (
                        f" {capitalise(r['description'])}: the steps with torch's and with "
                        "dropkit's dropout take the same time."
                    )
                    continue
                faster = "dropkit" if r["step_ms_dropkit"] < r["step_ms_torch"] else "torch"
                slower = "torch" if faster == "dropkit" else "dropkit"
                text += (
                    f" {capitalise(r['description'])}: the step with {faster}'s dropout is "
                    f"{ratio:.2f}x faster than with {slower}'s."
                )
        wide = [r for r in timing if r["width"] >= 512 and "dropout_share_torch" in r]
        if wide:
            lo = min(r["dropout_share_torch"] for r in wide)
            hi = max(r["dropout_share_torch"] for r in wide)
            text += (
                " Networks people train have layers of hundreds to thousands of units, "
                "the rows of width 512 and more: there torch's dropout costs "
                f"{span(f'{100 * lo:.0f}%', f'{100 * hi:.0f}%')} of a step on this CPU, the "
                "rest of the extra time to a target is the optimisation (the epochs ratio "
                "above)."
            )
        paragraphs.append(text)
    return paragraphs
