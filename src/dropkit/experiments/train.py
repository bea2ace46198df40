"""The shared training loop and its protocol: one run = one model, one regularizer, one seed.

The protocol (Srivastava et al., 2014, section 6): a validation part is carved
from the training split (``val_fraction`` of each class, drawn by the seed). Each
epoch the model is evaluated in eval mode on the validation part and on a fixed
sample of the training part (its first ``TRAIN_MONITOR`` examples). Training stops
when validation accuracy has not improved for ``patience`` epochs, or at the
``epochs`` budget. The weights of the best validation epoch are restored and the
test split is read once, there: ``test_acc``/``test_loss`` are the test metrics
at ``best_epoch``. Nothing is ever chosen on the test split. The numbers of the
last epoch are kept under ``last_*`` names (``last_test_acc`` reads the test
split a second time, for the record only).

Full-batch tensors and index batching (no DataLoader: at MNIST-1D's size the
loader would cost more than the network). Adam, cross-entropy.

Seeds: ``torch.manual_seed(seed)`` before the model is built (weights and
dropout masks), a generator of its own for the shuffling order and another for
the validation split, so a run is a pure function of its spec: the same numbers
on the same machine and torch build, whichever process runs it.
"""

from __future__ import annotations

import copy
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
#: the metric early stopping and model selection watch (higher is better)
MONITOR = "val_acc"


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
    #: the fraction of the training split held out for validation (stopping, selection)
    val_fraction: float = 0.2
    #: stop after this many epochs without a new best validation accuracy; None: never
    #: stop early (train the whole budget), still reporting test at the best epoch
    patience: int | None = 50
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
            f"val={self.val_fraction:g}",
            f"pat={self.patience}",
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
    on_step: Callable[[], None] | None = None,
) -> TrainResult:
    """Train one run under the protocol (module docstring) and return its record.

    ``model`` replaces the registry's model (experiments with their own networks
    pass one; pass a zero-argument factory when the weights must depend on the
    seed: it is called after seeding). ``on_epoch(epoch, model, history)`` is
    called after each epoch's evaluation, ``on_step()`` after every optimizer step
    (e.g. ``dk.DropoutSchedule.step``). The returned model holds the weights of
    the best validation epoch, in eval mode.
    """
    ctx = ctx or RunContext()
    reg = regularizers.get(spec.regularizer)
    device = ctx.device
    torch.manual_seed(spec.seed)
    if spec.train_fraction != 1.0:
        data = data.subset(spec.train_fraction, spec.seed)
    data, val = data.split_validation(spec.val_fraction, spec.seed)
    if model is None:
        model = models.build_model(spec.model, data.n_features, data.n_classes, reg, spec.p)
    elif callable(model) and not isinstance(model, nn.Module):
        model = model()
    model = model.to(device)
    x, y = data.x_train.to(device), data.y_train.to(device)
    x_val, y_val = val.x_train.to(device), val.y_train.to(device)

    weight_decay = spec.weight_decay if reg.l2 else 0.0
    optimizer = torch.optim.Adam(regularizers.param_groups(model, weight_decay), lr=spec.lr)
    shuffle = torch.Generator().manual_seed(spec.seed)
    n = len(x)
    steps_per_epoch = math.ceil(n / spec.batch_size)

    history: dict[str, list] = {
        "epoch": [],
        "train_acc": [],
        "val_acc": [],
        "train_loss": [],
        "val_loss": [],
        "seconds": [],
    }
    start = time.perf_counter()
    train_seconds = 0.0
    best_value, best_epoch, best_state = -math.inf, 0, None
    stopped_by = "budget"
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
            if on_step is not None:
                on_step()
        train_seconds += time.perf_counter() - t0
        model.eval()
        train_acc, train_loss = evaluate(model, x[:TRAIN_MONITOR], y[:TRAIN_MONITOR])
        val_acc, val_loss = evaluate(model, x_val, y_val)
        history["epoch"].append(epoch)
        history["train_acc"].append(train_acc)
        history["val_acc"].append(val_acc)
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        history["seconds"].append(round(time.perf_counter() - start, 4))
        if on_epoch is not None:
            on_epoch(epoch, model, history)
        if ctx.progress is not None:
            ctx.progress(epoch, spec.epochs)
        # strictly better only: on a tie the earlier (shorter-trained) epoch stays
        if math.isfinite(val_loss) and val_acc > best_value:
            best_value, best_epoch = val_acc, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif spec.patience is not None and epoch - best_epoch >= spec.patience:
            stopped_by = "patience"
            break
        if not math.isfinite(train_loss):  # diverged: nothing further to learn
            stopped_by = "diverged"
            break
    stopped_epoch = history["epoch"][-1]

    model.eval()
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    last = {
        "train": evaluate(model, x, y),
        "val": (history["val_acc"][-1], history["val_loss"][-1]),
        "test": evaluate(model, x_test, y_test),
    }
    if best_state is not None:
        model.load_state_dict(best_state)
        final_train_acc, final_train_loss = evaluate(model, x, y)  # the whole training part
        test_acc, test_loss = evaluate(model, x_test, y_test)  # the test split, read once
        val_acc, val_loss = history["val_acc"][best_epoch - 1], history["val_loss"][best_epoch - 1]
    else:  # no finite validation loss at any epoch: the run diverged from the start
        final_train_acc, final_train_loss = last["train"]
        test_acc, test_loss = last["test"]
        val_acc, val_loss = last["val"]
        best_epoch = stopped_epoch
    seconds = time.perf_counter() - start

    record: dict[str, Any] = {
        "dataset": spec.dataset,
        "model": spec.model,
        "regularizer": spec.regularizer,
        "p": spec.p,
        "seed": spec.seed,
        # at the best validation epoch
        "train_acc": final_train_acc,
        "test_acc": test_acc,
        "train_loss": final_train_loss,
        "test_loss": test_loss,
        "val_acc": val_acc,
        "val_loss": val_loss,
        "gap": final_train_acc - test_acc,
        "best_epoch": best_epoch,
        "stopped_epoch": stopped_epoch,
        "stopped_by": stopped_by,
        # at the last epoch trained
        "last_train_acc": last["train"][0],
        "last_train_loss": last["train"][1],
        "last_val_acc": last["val"][0],
        "last_val_loss": last["val"][1],
        "last_test_acc": last["test"][0],
        "last_test_loss": last["test"][1],
        "seconds": round(seconds, 3),
        "history": history,
        "key": spec.key,
        "history_train_examples": min(n, TRAIN_MONITOR),
        "train_seconds": round(train_seconds, 3),
        "epochs": spec.epochs,
        "patience": spec.patience,
        "batch_size": spec.batch_size,
        "lr": spec.lr,
        "weight_decay": weight_decay if reg.l2 else None,
        "l1": spec.l1 if reg.l1 else None,
        "max_norm": spec.max_norm if reg.max_norm else None,
        "train_fraction": spec.train_fraction,
        "val_fraction": spec.val_fraction,
        "train_size": n,
        "val_size": len(x_val),
        **spec.extra,
    }
    return TrainResult(record=record, model=model, data=data)
