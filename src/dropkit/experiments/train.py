"""The shared training loop: one run = one model, one regularizer, one seed.

Full-batch tensors and index batching (no DataLoader: at MNIST-1D's size the
loader would cost more than the network). Adam, cross-entropy. After every
epoch the model is evaluated in eval mode on the test split and on a fixed
subset of the training split (its first ``TRAIN_MONITOR`` examples: the splits
are already in random order), and after the last epoch on the whole training
split. So ``train_acc`` is the accuracy of the *deterministic* network on all
the data it was trained on, and the generalization gap is ``train_acc -
test_acc``. (Evaluating all 4000 training examples every epoch cost a quarter
of a wide-MLP run.)

Seeds: ``torch.manual_seed(seed)`` before the model is built (weights and
dropout masks) and a separate generator for the shuffling order, so the same
arguments give the same numbers on CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from dropkit.experiments import models, regularizers
from dropkit.experiments.data import Dataset

#: how many training examples the per-epoch train curves are measured on
TRAIN_MONITOR = 1000


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one run. ``extra`` holds experiment-specific identity
    fields (e.g. ``{"variant": "locked"}``); they are copied into the run's record."""

    dataset: str
    model: str
    regularizer: str
    p: float
    seed: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    l1: float = 0.0
    max_norm: float | None = None
    train_fraction: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """A stable identifier, used by ``--resume`` to skip finished runs."""
        parts = [
            self.dataset,
            self.model,
            self.regularizer,
            f"p={self.p:g}",
            f"seed={self.seed}",
            f"ep={self.epochs}",
        ]
        if self.train_fraction != 1.0:
            parts.append(f"frac={self.train_fraction:g}")
        parts += [f"{k}={v}" for k, v in sorted(self.extra.items())]
        return "/".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunContext:
    """What a run needs from the runner: the resolved ``config`` (the experiment's
    own options included), the device, data sets (loaded once) and a progress
    callback ``progress(epoch, epochs)``."""

    config: dict[str, Any] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress: Callable[[int, int], None] | None = None
    datasets: dict[str, Dataset] = field(default_factory=dict)

    def dataset(self, name: str) -> Dataset:
        from dropkit.experiments import data

        if name not in self.datasets:
            self.datasets[name] = data.load(name)
        return self.datasets[name]


@dataclass
class TrainResult:
    record: dict[str, Any]
    model: nn.Module
    data: Dataset


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` in its current mode."""
    correct, loss = 0, 0.0
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size])
        loss += F.cross_entropy(logits, y[i : i + batch_size], reduction="sum").item()
        correct += (logits.argmax(1) == y[i : i + batch_size]).sum().item()
    return correct / len(x), loss / len(x)


def train_run(
    spec: RunSpec,
    data: Dataset,
    ctx: RunContext | None = None,
    *,
    model: nn.Module | None = None,
    on_epoch: Callable[[int, nn.Module, dict[str, list]], None] | None = None,
) -> TrainResult:
    """Train one run and return its record (and the trained model).

    ``model`` replaces the registry's model (experiments with their own
    networks pass one; it is built *after* seeding, so build it inside a
    ``model`` factory if weights must depend on the seed: pass a callable).
    ``on_epoch(epoch, model, history)`` is called after each epoch's evaluation.
    """
    ctx = ctx or RunContext()
    reg = regularizers.get(spec.regularizer)
    device = ctx.device
    torch.manual_seed(spec.seed)
    if spec.train_fraction != 1.0:
        data = data.subset(spec.train_fraction, spec.seed)
    if model is None:
        model = models.build_model(spec.model, data.n_features, data.n_classes, reg, spec.p)
    elif callable(model) and not isinstance(model, nn.Module):
        model = model()
    model = model.to(device)
    x, y = data.x_train.to(device), data.y_train.to(device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)

    weight_decay = spec.weight_decay if reg.l2 else 0.0
    optimizer = torch.optim.Adam(regularizers.param_groups(model, weight_decay), lr=spec.lr)
    shuffle = torch.Generator().manual_seed(spec.seed)
    n = len(x)
    steps_per_epoch = math.ceil(n / spec.batch_size)

    history: dict[str, list] = {
        "epoch": [],
        "train_acc": [],
        "test_acc": [],
        "train_loss": [],
        "test_loss": [],
        "seconds": [],
    }
    start = time.perf_counter()
    train_seconds = 0.0
    for epoch in range(1, spec.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=shuffle).to(device)
        for i in range(steps_per_epoch):
            idx = order[i * spec.batch_size : (i + 1) * spec.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            if reg.l1 and spec.l1 > 0:
                loss = loss + spec.l1 * regularizers.l1_penalty(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if reg.max_norm and spec.max_norm is not None:
                regularizers.apply_max_norm(model, spec.max_norm)
        train_seconds += time.perf_counter() - t0
        model.eval()
        train_acc, train_loss = evaluate(model, x[:TRAIN_MONITOR], y[:TRAIN_MONITOR])
        test_acc, test_loss = evaluate(model, x_test, y_test)
        history["epoch"].append(epoch)
        history["train_acc"].append(train_acc)
        history["test_acc"].append(test_acc)
        history["train_loss"].append(train_loss)
        history["test_loss"].append(test_loss)
        history["seconds"].append(round(time.perf_counter() - start, 4))
        if on_epoch is not None:
            on_epoch(epoch, model, history)
        if ctx.progress is not None:
            ctx.progress(epoch, spec.epochs)
    model.eval()
    final_train_acc, final_train_loss = evaluate(model, x, y)  # the whole training split
    seconds = time.perf_counter() - start

    best = max(range(len(history["test_acc"])), key=history["test_acc"].__getitem__)
    record: dict[str, Any] = {
        "dataset": spec.dataset,
        "model": spec.model,
        "regularizer": spec.regularizer,
        "p": spec.p,
        "seed": spec.seed,
        "train_acc": final_train_acc,
        "test_acc": history["test_acc"][-1],
        "train_loss": final_train_loss,
        "test_loss": history["test_loss"][-1],
        "seconds": round(seconds, 3),
        "history": history,
        # beyond the schema
        "key": spec.key,
        "gap": final_train_acc - history["test_acc"][-1],
        "history_train_examples": min(n, TRAIN_MONITOR),
        "best_test_acc": history["test_acc"][best],
        "best_epoch": history["epoch"][best],
        "train_seconds": round(train_seconds, 3),
        "epochs": spec.epochs,
        "batch_size": spec.batch_size,
        "lr": spec.lr,
        "weight_decay": weight_decay if reg.l2 else None,
        "l1": spec.l1 if reg.l1 else None,
        "max_norm": spec.max_norm if reg.max_norm else None,
        "train_fraction": spec.train_fraction,
        "train_size": n,
        **spec.extra,
    }
    return TrainResult(record=record, model=model, data=data)
