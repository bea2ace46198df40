"""What a group of runs says about fitting: under-trained, under-capacity, overfitting.

Three different things, often confused, and each calls for a different remedy:

- **under-trained**: validation accuracy was still improving when the epoch
  budget ran out (the run stopped on the budget, not on patience). Its numbers
  are a budget artefact, not a finding about the network; the remedy is more
  epochs.
- **overfitting**: at its best validation epoch the network classifies its
  training examples far better than the validation ones (a gap of at least
  :data:`OVERFIT_GAP`). This is what a regularizer is for.
- **under-capacity**: the run stopped on patience, its training accuracy stayed
  low (below :data:`LOW_TRAIN`) and had stopped rising (less than
  :data:`PLATEAU_RISE` over the last ``patience`` epochs), and the gap is small:
  the network cannot fit the data, and removing capacity will not help.

A run that is none of these ("fits") stopped on patience with a small gap and
either a high training accuracy or one still rising. Nothing here calls a
network underfitting because its budget ran out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dropkit.experiments.summary import mean_std
from dropkit.experiments.wording import percent, plural, points

#: a train-validation gap (accuracy, at the best validation epoch) this large is overfitting
OVERFIT_GAP = 0.10
#: a training accuracy below this, once it has plateaued, is under-capacity
LOW_TRAIN = 0.90
#: a rise of training accuracy smaller than this over the last ``patience`` epochs is a plateau
PLATEAU_RISE = 0.02

REGIMES = ("diverged", "under-trained", "overfitting", "under-capacity", "fits")
_NAMES = {
    "diverged": "diverged",
    "under-trained": "under-trained",
    "overfitting": "overfitting",
    "under-capacity": "lacking capacity",
    "fits": "neither",
}


@dataclass(frozen=True)
class Fit:
    """The regime of a group of runs (the majority over its seeds) and its numbers."""

    regime: str
    train_acc: float
    val_acc: float
    best_epoch: float
    budget: int
    runs: int
    agreeing: int
    #: training accuracy's rise over the last ``patience`` epochs (mean over seeds)
    rise: float = 0.0
    patience: int = 0
    #: the regime of each run, in order (``regime`` is "mixed" when no regime has
    #: a majority of them)
    each: tuple[str, ...] = ()

    @property
    def gap(self) -> float:
        return self.train_acc - self.val_acc

    def sentence(self) -> str:
        """A clause that completes "the network ..."."""
        at = (
            f"at its best validation epoch ({plural(self.best_epoch, 'epoch')} in, mean over "
            f"seeds; budget {self.budget}) it classifies {percent(self.train_acc)} of its "
            f"training examples and {percent(self.val_acc)} of the validation ones"
        )
        split = (
            f" ({self.agreeing} of {self.runs} seeds; the others differ)"
            if 0 < self.agreeing < self.runs
            else ""
        )
        if self.regime == "mixed":
            counts = ", ".join(
                f"{_NAMES[g]} in {self.each.count(g)}" for g in REGIMES if g in self.each
            )
            return f"gives mixed signs across its seeds ({counts}): {at}, a gap of " + points(
                self.gap
            )
        if self.regime == "diverged":
            return f"diverged (its loss overflowed){split}"
        if self.regime == "under-trained":
            return (
                f"is under-trained: its validation accuracy was still improving when the "
                f"budget of {plural(self.budget, 'epoch')} ran out{split}. Its numbers are "
                f"a budget artefact, not a finding; give it more epochs (--epochs)"
            )
        if self.regime == "overfitting":
            return f"overfits{split}: {at}, a gap of {points(self.gap)}"
        if self.regime == "under-capacity":
            return (
                f"lacks capacity{split}: its training accuracy plateaued at "
                f"{percent(self.train_acc)} ({points(self.rise, signed=True)} over its last "
                f"{plural(self.patience, 'epoch')}) with a gap of only {points(self.gap)}"
            )
        return (
            f"neither overfits nor lacks capacity by these criteria{split}: {at}, a gap of "
            f"{points(self.gap)}"
        )


def still_improving(record: dict[str, Any]) -> bool:
    """Did ``record`` end at its budget with validation accuracy still improving?

    A run that stopped at its budget counts as still improving when its best
    validation epoch lies in the last stretch of the run: within ``patience``
    epochs of the end, but never more than a fifth of the run (at least 5
    epochs). A run whose validation accuracy peaked long before the budget
    (possible when ``patience`` is larger than the budget, or None) has
    levelled off and is read like any other.
    """
    if record.get("stopped_by") != "budget":
        return False
    stopped = int(record.get("stopped_epoch") or 0)
    best = int(record.get("best_epoch") or 0)
    window = max(5, stopped // 5)
    if record.get("patience"):
        window = min(window, int(record["patience"]))
    return best > stopped - window


def run_regime(record: dict[str, Any]) -> str:
    """The regime of one run (see the module docstring)."""
    if record.get("diverged") or record.get("stopped_by") == "diverged":
        return "diverged"
    if still_improving(record):
        return "under-trained"
    gap = record["train_acc"] - record["val_acc"]
    if gap >= OVERFIT_GAP:
        return "overfitting"
    if record["train_acc"] < LOW_TRAIN and train_rise(record) < PLATEAU_RISE:
        return "under-capacity"
    return "fits"


def train_rise(record: dict[str, Any]) -> float:
    """How much the training accuracy rose over the run's last ``patience`` epochs."""
    train = [a for a in record["history"]["train_acc"] if a is not None]
    window = int(record.get("patience") or 1)
    return train[-1] - train[max(0, len(train) - 1 - window)] if train else 0.0


def diagnose(runs: Sequence[dict[str, Any]]) -> Fit:
    """The majority regime over ``runs`` (seeds of one setting), with its mean numbers.

    Ties between regimes with half the runs each go to the one listed first in
    :data:`REGIMES` (half the seeds out of budget: under-trained). Without a
    regime holding at least half the runs the group is "mixed".
    """
    regimes = [run_regime(r) for r in runs]
    regime = max(REGIMES, key=lambda g: (regimes.count(g), -REGIMES.index(g)))
    if 2 * regimes.count(regime) < len(regimes):
        regime = "mixed"
    ok = [r for r in runs if r.get("val_acc") is not None and r.get("train_acc") is not None]
    return Fit(
        regime=regime,
        train_acc=mean_std(r["train_acc"] for r in ok)[0],
        val_acc=mean_std(r["val_acc"] for r in ok)[0],
        best_epoch=mean_std(r["best_epoch"] for r in ok)[0],
        budget=max(int(r["epochs"]) for r in runs),
        runs=len(runs),
        agreeing=regimes.count(regime),
        rise=mean_std(train_rise(r) for r in ok)[0],
        patience=max(int(r.get("patience") or 0) for r in runs),
        each=tuple(regimes),
    )
