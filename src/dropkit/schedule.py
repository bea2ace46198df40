"""Dropout schedules over training: early dropout, late dropout, standard dropout.

Liu et al., "Dropout Reduces Underfitting" (ICML 2023), turn dropout on for
only part of training. *Early* dropout (on for the first steps, then off)
lowers the variance of the mini-batch gradients at the start and helps models
that underfit; *late* dropout (off, then on) regularises models that overfit.
:class:`DropoutSchedule` does this to every dropout-family layer of a model,
as a learning-rate scheduler does to the optimizer: each layer's configured
rate is its full strength, and the schedule multiplies it by a factor in
``[0, 1]`` at every optimizer step. See ``docs/schedules.md``.
"""

from __future__ import annotations

import inspect
import numbers
import warnings
from typing import Any

from torch import nn

from dropkit.functional import _check_p
from dropkit.layers.concrete import ConcreteDropout
from dropkit.mc import is_dropout_layer

__all__ = ["DropoutSchedule", "MODES", "SHAPES"]

MODES = ("standard", "early", "late")
SHAPES = ("constant", "linear")

# Why a dropout-family layer whose ``p`` cannot be set is left alone, by type.
_SKIP_REASONS: dict[type[nn.Module], str] = {
    ConcreteDropout: "its rate p = sigmoid(p_logit) is learned with the model; scaling it "
    "would fight the optimizer",
}


def _why_not_scheduled(module: nn.Module) -> str | None:
    """``None`` for a layer the schedule scales, else the reason it leaves it alone.

    The rule: a dropout-family layer (:func:`dropkit.mc.is_dropout_layer`, the one
    definition of the library) whose ``p``, the drop probability by the
    family's convention, is a plain attribute. A ``p`` computed by a property
    (ConcreteDropout's learned rate) is not a configuration to scale.
    """
    for kind, reason in _SKIP_REASONS.items():
        if isinstance(module, kind):
            return reason
    # getattr_static: look at what `p` *is* (an instance value or a property) without calling it
    p = inspect.getattr_static(module, "p", None)
    if p is None:
        return "it has no rate attribute `p`"
    if isinstance(p, property) and p.fset is None:
        return "its `p` is a read-only property, computed rather than configured"
    return None


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(
            f"Invalid value received for argument `{name}`. Expected one of {choices}. "
            f"Received: {name}={value!r}"
        )
    return value


def _check_step_count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "non-negative" if minimum == 0 else "positive"
        raise ValueError(
            f"Invalid value received for argument `{name}`. Expected a {kind} int (a number "
            f"of optimizer steps). Received: {name}={value!r}"
        )
    return int(value)


def _check_total(total: Any, until: int) -> int | None:
    if total is None:
        return None
    total = _check_step_count(total, "total", 1)
    if until > total:
        raise ValueError(
            "Invalid value received for argument `until`. Expected until <= total (the "
            f"switch must happen within training). Received: until={until}, total={total}"
        )
    return total


class DropoutSchedule:
    r"""Scale the rate of every dropout-family layer of a model over training.

    Each scheduled layer's rate at construction, :math:`p_0`, is its full
    strength; at optimizer step :math:`t` (0 at construction, +1 per
    :meth:`step`) the layer's rate is :math:`p_t = p_0\, f(t)` with

    .. math::
        f(t) = \begin{cases}
            1 & \text{standard} \\
            \mathbb{1}[t < u] & \text{early, constant} \\
            \max\!\left(0,\ 1 - t/u\right) & \text{early, linear} \\
            \mathbb{1}[t \ge u] & \text{late}
        \end{cases}

    where :math:`u` is ``until``. One factor for all layers, so ratios between
    layers, such as DropPath's depth schedule
    (:func:`dropkit.drop_path_rates`), are kept. ``shape`` applies to
    ``"early"`` only: late dropout switches on at ``until``, as in the paper.

    Scaled: every dropout-family layer (:func:`dropkit.mc.is_dropout_layer`:
    torch's ``nn.Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout``,
    ``FeatureAlphaDropout``, and every :class:`~dropkit.DropoutLayer`)
    whose ``p`` is a plain attribute. By the family's convention ``p`` is a
    drop probability, so scaling it is meaningful for all of them: for
    ``DropPath``/``StochasticDepth`` the branch's drop rate, for
    ``DropBlock2d/3d`` the target dropped fraction, for ``GaussianDropout``
    the drop rate it imitates (noise variance :math:`p_t/(1-p_t)`), for
    ``WeightDrop``/``DropConnect`` the weights' drop rate. Left alone, with a
    warning and listed in :attr:`skipped`: ``ConcreteDropout``, whose rate is
    learned (and any layer whose ``p`` is a read-only property). Not reached:
    dropout that is a float argument rather than a module (``nn.LSTM(dropout=)``,
    the attention dropout of ``nn.MultiheadAttention``).

    Eval mode is unaffected: the layers ignore ``p`` there. The exception is
    the classic ``dropkit.Dropout(inverted=False)``, whose eval output
    :math:`(1-p_t)\,x` follows the current rate, as its training output's mean does.

    Do not drive the same layers with a second scheduler (``LinearScheduler``)
    or set their ``p`` by hand: :meth:`step` raises if a rate is not the one
    it set. Build the schedule after ``dropkit.convert`` (it holds the modules).

    Args:
        model: the network; every dropout-family module in it is scheduled.
        mode: ``"standard"`` (always full strength), ``"early"`` (on, then off
            at ``until``) or ``"late"`` (off, then on at ``until``).
        until: the optimizer step of the switch, an int >= 0. For the paper's
            "first 50 epochs", ``50 * steps_per_epoch``. Ignored by ``"standard"``.
        total: the planned number of optimizer steps, or ``None``. Checked
            against ``until`` (``until <= total``), reported in ``repr``, and
            :meth:`step` warns once when stepped past it (usually a
            ``step()`` per micro-batch instead of per optimizer step).
        shape: of the early phase: ``"constant"`` (full strength until
            ``until``) or ``"linear"`` (decays from full strength to 0 at
            ``until``). Default: ``"linear"``.

    Raises:
        ValueError: for a bad argument, or a model without a layer to schedule.

    Examples::

        >>> model = nn.Sequential(nn.Linear(8, 8), dropkit.Dropout(0.1), nn.Linear(8, 2))
        >>> schedule = dropkit.DropoutSchedule(model, "early", until=50 * 100, total=300 * 100)
        >>> for x, y in batches:
        ...     loss_fn(model(x), y).backward(); opt.step(); opt.zero_grad()
        ...     schedule.step()

    Reference: Liu, Xu, Darrell et al., "Dropout Reduces Underfitting", ICML 2023.
    """

    def __init__(
        self,
        model: nn.Module,
        mode: str,
        until: int,
        *,
        total: int | None = None,
        shape: str = "linear",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                "Invalid type received for argument `model`. Expected an nn.Module. "
                f"Received: {type(model).__name__}"
            )
        self.mode = _check_choice(mode, "mode", MODES)
        self.shape = _check_choice(shape, "shape", SHAPES)
        self.until = _check_step_count(until, "until", 0)
        self.total = _check_total(total, self.until)
        self.step_count = 0
        self._warned_past_total = False

        self._modules: dict[str, nn.Module] = {}
        skipped: dict[str, str] = {}
        # named_modules() yields a module used in two places once, under its first name.
        for name, module in model.named_modules():
            if not is_dropout_layer(module):
                continue
            reason = _why_not_scheduled(module)
            if reason is None:
                self._modules[name or "<model>"] = module
            else:
                skipped[name or "<model>"] = f"{type(module).__name__}: {reason}"
        #: ``{name: reason}`` of the family layers the schedule leaves alone.
        self.skipped = skipped
        if not self._modules:
            found = f" (it has only {', '.join(skipped.values())})" if skipped else ""
            raise ValueError(
                f"DropoutSchedule found no dropout-family layer to schedule in the "
                f"{type(model).__name__} it received{found}. It schedules torch's nn.Dropout* "
                "and AlphaDropout modules and dropkit's layers."
            )
        if skipped:
            warnings.warn(
                "DropoutSchedule leaves these layers at their own rate: "
                + "; ".join(f"{name!r} ({why})" for name, why in skipped.items()),
                stacklevel=2,
            )
        #: ``{name: p}``: each scheduled layer's full-strength rate, read at construction.
        self.base_rates = {name: float(m.p) for name, m in self._modules.items()}
        self._last_set: dict[str, float] = {}
        self._apply(check=False)

    def factor_at(self, step: int) -> float:
        """The factor :math:`f(t)` at optimizer step ``step`` (see the class formula)."""
        t = _check_step_count(step, "step", 0)
        if self.mode == "standard":
            return 1.0
        if self.mode == "late":
            return 1.0 if t >= self.until else 0.0
        if t >= self.until:  # early, past the switch (also every step when until == 0)
            return 0.0
        return 1.0 if self.shape == "constant" else 1.0 - t / self.until

    @property
    def factor(self) -> float:
        """The factor at the current step."""
        return self.factor_at(self.step_count)

    def rates(self) -> dict[str, float]:
        """``{name: p}``: the rate each scheduled layer has now."""
        return {name: float(m.p) for name, m in self._modules.items()}

    def _apply(self, check: bool = True) -> None:
        if check:
            for name, module in self._modules.items():
                if float(module.p) != self._last_set[name]:
                    raise RuntimeError(
                        f"The rate of {name!r} ({type(module).__name__}) was changed outside "
                        f"the DropoutSchedule: it set p={self._last_set[name]!r} and found "
                        f"p={module.p!r}. Another scheduler (e.g. LinearScheduler) or code "
                        "sets it; let one thing drive a layer's rate."
                    )
        factor = self.factor
        for name, module in self._modules.items():
            module.p = self.base_rates[name] * factor
            self._last_set[name] = float(module.p)

    def step(self) -> float:
        """Advance one optimizer step, set every scheduled layer's rate and return the factor."""
        self.step_count += 1
        if self.total is not None and self.step_count > self.total and not self._warned_past_total:
            self._warned_past_total = True
            warnings.warn(
                f"DropoutSchedule.step() was called {self.step_count} times, past total="
                f"{self.total}. Call it once per optimizer step (not per micro-batch); the "
                "factor stays at its final value.",
                stacklevel=2,
            )
        self._apply()
        return self.factor

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: the configuration, the step and the base rates."""
        return {
            "mode": self.mode,
            "until": self.until,
            "total": self.total,
            "shape": self.shape,
            "step_count": self.step_count,
            "base_rates": dict(self.base_rates),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` and set the rates of that step.

        As for torch's learning-rate schedulers, the saved configuration and
        base rates replace this schedule's own: a schedule built on a fresh
        model and loaded continues exactly where the saved one was. The layer
        names must be the same.
        """
        missing = set(self._modules) - set(state["base_rates"])
        unexpected = set(state["base_rates"]) - set(self._modules)
        if missing or unexpected:
            raise ValueError(
                "DropoutSchedule.load_state_dict() received the state of another model: "
                f"layers missing from the state: {sorted(missing)}, layers of the state not in "
                f"this model: {sorted(unexpected)}"
            )
        mode = _check_choice(state["mode"], "mode", MODES)
        shape = _check_choice(state["shape"], "shape", SHAPES)
        until = _check_step_count(state["until"], "until", 0)
        total = _check_total(state["total"], until)
        step_count = _check_step_count(state["step_count"], "step_count", 0)
        self.mode, self.shape, self.until, self.total = mode, shape, until, total
        self.step_count = step_count
        self._warned_past_total = total is not None and step_count > total
        self.base_rates = {
            name: _check_p(state["base_rates"][name], f"base_rates[{name!r}]")
            for name in self._modules
        }
        self._apply(check=False)

    def __repr__(self) -> str:
        total = "" if self.total is None else f"/{self.total}"
        return (
            f"DropoutSchedule(mode={self.mode!r}, until={self.until}, total={self.total}, "
            f"shape={self.shape!r}, step={self.step_count}{total}, factor={self.factor:.4g}, "
            f"layers={len(self._modules)})"
        )
