"""The variance shift between training and inference at BatchNorm inputs: measured
(:func:`variance_shift`), predicted from the closed form (:func:`expected_ratio`,
:func:`predicted_shift`) and swept over drop rates (:func:`sweep_variance_shift`).
See :mod:`dropkit.bn` for the formula.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from dropkit.bn._moments import (
    Data,
    _batch_norms,
    _bn_buffers,
    _collect,
    _restore_bn_buffers,
    _reusable,
)
from dropkit.mc import restore_modes

__all__ = [
    "FEEDING_TYPES",
    "ShiftSweep",
    "VarianceShift",
    "dropouts_feeding",
    "expected_ratio",
    "predicted_shift",
    "sweep_variance_shift",
    "variance_shift",
]


@dataclass(frozen=True)
class VarianceShift:
    """The variance of one BatchNorm layer's input, averaged over channels.

    Attributes:
        train_var: input variance in training mode (dropout active, BatchNorm
            layers normalising with batch statistics).
        eval_var: input variance in eval mode (dropout off, BatchNorm layers
            normalising with their running statistics).
        running_var: the layer's current ``running_var`` (``None`` when the
            layer does not track running statistics).
        ratio: ``eval_var / train_var``; 1 means no shift, below 1 means the
            running variance (collected in training) is too large for
            inference.
    """

    train_var: float
    eval_var: float
    running_var: float | None
    ratio: float

    def __getitem__(self, key: str) -> float | None:
        # Records read like dicts too: shift["bn1"]["ratio"].
        return getattr(self, key)

    def as_dict(self) -> dict[str, float | None]:
        return {
            "train_var": self.train_var,
            "eval_var": self.eval_var,
            "running_var": self.running_var,
            "ratio": self.ratio,
        }

    @property
    def eval_over_running(self) -> float:
        """``eval_var / running_var``: the variance inference meets over the one the
        layer divides by. 1 means the running statistics are right for inference;
        below 1, the running variance is too large (NaN without running statistics)."""
        return self.eval_var / self.running_var if self.running_var else math.nan


@dataclass(frozen=True)
class ShiftSweep:
    """The variance ratio at one BatchNorm layer over a range of drop rates.

    Attributes:
        layer: the BatchNorm layer's qualified name.
        rates: the drop rates, in the order measured.
        measured: :attr:`VarianceShift.ratio` of ``layer`` at each rate.
        predicted: :func:`expected_ratio` at each rate, from the mean and
            variance of the input of the dropout layer feeding ``layer``.
    """

    layer: str
    rates: list[float]
    measured: list[float]
    predicted: list[float]


def variance_shift(
    model: nn.Module, data: Data, *, batch_size: int | None = None
) -> dict[str, VarianceShift]:
    r"""Measure the train/eval variance shift at the input of every BatchNorm layer.

    Two passes over ``data``: one in training mode (dropout active, BatchNorm
    normalising with batch statistics, as during training) and one in eval
    mode (dropout off, BatchNorm normalising with its running statistics, as
    at inference). For each BatchNorm layer, the per-channel variance of its
    input over all of ``data`` is averaged over channels:

    .. math::
        \text{ratio} = \frac{\overline{\operatorname{Var}}_{\text{eval}}}
                            {\overline{\operatorname{Var}}_{\text{train}}}

    For a feature of mean :math:`c` and variance :math:`v` through inverted
    dropout with keep probability :math:`q` straight into the BatchNorm, the
    expected ratio is :math:`q v / (c^2 + v - q c^2)` (see the module
    docstring). Variances are unbiased and pooled over all batches.

    The model is left exactly as it was found: the ``training`` flag of every
    submodule, the parameters and every BatchNorm buffer (running mean,
    running variance, ``num_batches_tracked``) are restored. It does draw
    dropout masks from torch's default generator, like any training forward.

    Args:
        model: a network with at least one BatchNorm layer.
        data: a tensor of inputs, or an iterable of batches: tensors or
            tuples whose first item is the input (a ``DataLoader`` of
            ``(x, y)`` works as it is).
        batch_size: split a tensor ``data`` into batches of this size
            (default: one batch). Ignored for an iterable.

    Returns:
        ``{qualified layer name: VarianceShift(train_var, eval_var,
        running_var, ratio)}`` in the order of ``model.named_modules()``.
        Records also read like dicts: ``shift["bn1"]["ratio"]``.

    Examples::

        >>> net = nn.Sequential(nn.Linear(40, 64), dropkit.Dropout(0.5), nn.BatchNorm1d(64))
        >>> shift = dropkit.bn.variance_shift(net, x_train[:1000])
        >>> shift["2"].ratio   # < 1: the running variance is too large at test time
    """
    layers = _batch_norms(model)
    data = _reusable(data)  # two passes over it
    saved = _bn_buffers(layers)
    running = {
        name: (float(layer.running_var.mean()) if layer.running_var is not None else None)
        for name, layer in layers.items()
    }
    with restore_modes(model):
        try:
            model.train()
            train = _collect(model, layers, data, batch_size)
            # The training pass updated the running statistics; put them back before
            # the eval pass, which must normalise with the statistics as found.
            _restore_bn_buffers(layers, saved)
            model.eval()
            evaluation = _collect(model, layers, data, batch_size)
        finally:
            _restore_bn_buffers(layers, saved)
    out: dict[str, VarianceShift] = {}
    for name in layers:
        train_var = float(train[name].var().mean())
        eval_var = float(evaluation[name].var().mean())
        ratio = eval_var / train_var if train_var > 0 else float("nan")
        out[name] = VarianceShift(train_var, eval_var, running[name], ratio)
    return out


def expected_ratio(mean: Tensor, var: Tensor, p: float) -> float:
    r"""The eval/train variance ratio inverted dropout at rate ``p`` causes at its output.

    For channels of mean :math:`c_k` and variance :math:`v_k` (the dropout's
    input, i.e. the BatchNorm input at inference) and keep probability
    :math:`q = 1 - p`, averaged over channels as :func:`variance_shift`
    averages (the mean variance in each mode, then their quotient):

    .. math::
        \text{ratio} = \frac{\frac{1}{K}\sum_k v_k}
                             {\frac{1}{K}\sum_k \left(\frac{c_k^2 + v_k}{q} - c_k^2\right)},

    which for a single channel is :math:`q v / (c^2 + v - q c^2)` (module
    docstring). It holds for element-wise dropout and for channel dropout
    (``Dropout1d/2d/3d``: one decision per sample and channel) alike, and for
    the classic formulation too (the ratio does not depend on where the
    :math:`1/q` scale is applied).

    Args:
        mean: per-channel means :math:`c`, shape ``(K,)`` (or a scalar).
        var: per-channel variances :math:`v`, the same shape.
        p: the drop probability, ``0 <= p < 1``.

    Returns:
        The ratio, a float; 1 at ``p = 0``.

    Examples::

        >>> dropkit.bn.expected_ratio(torch.zeros(8), torch.ones(8), 0.5)  # c = 0: q
        0.5
    """
    if not isinstance(p, int | float) or math.isnan(p) or not 0.0 <= p < 1.0:
        raise ValueError(
            f"Invalid value received for argument `p`. Expected a float in [0, 1). Received: p={p}"
        )
    c = torch.as_tensor(mean, dtype=torch.float64)
    v = torch.as_tensor(var, dtype=torch.float64)
    q = 1.0 - p
    train = ((c**2 + v) / q - c**2).mean()
    return float(v.mean() / train)


#: Dropout layers whose effect on the next layer's input the formula describes:
#: torch's element and channel dropout and their subclasses (dropkit's among them).
#: Not AlphaDropout: it keeps mean and variance by design.
FEEDING_TYPES: tuple[type[nn.Module], ...] = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def dropouts_feeding(model: nn.Module) -> dict[str, nn.Module]:
    """The BatchNorm layers whose input is a dropout layer's output, with that dropout.

    A BatchNorm layer counts when the child right before it in the same
    ``nn.Sequential`` is a dropout layer of :data:`FEEDING_TYPES` (torch's or
    dropkit's ``Dropout``, ``Dropout1d/2d/3d``). Data flow through a custom
    ``forward`` cannot be seen from the module tree and is not followed.

    Returns:
        ``{qualified BatchNorm name: the dropout module}``, in the order of
        ``model.named_modules()``; empty when no dropout feeds a BatchNorm.
    """
    out = {}
    for prefix, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (_, before), (name, layer) in zip(children, children[1:], strict=False):
            if isinstance(layer, _BatchNorm) and isinstance(before, FEEDING_TYPES):
                out[f"{prefix}.{name}" if prefix else name] = before
    return out


def _eval_input_moments(
    model: nn.Module, modules: dict[str, nn.Module], data: Data, batch_size: int | None
) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-channel mean and unbiased variance of each module's input in eval mode."""
    with restore_modes(model):
        model.eval()
        moments = _collect(model, modules, data, batch_size)
    return {name: (m.mean, m.var()) for name, m in moments.items()}


def predicted_shift(
    model: nn.Module, data: Data, *, batch_size: int | None = None
) -> dict[str, float]:
    r"""The ratio :func:`expected_ratio` predicts at each BatchNorm layer fed by dropout.

    For every BatchNorm layer of :func:`dropouts_feeding`, one eval-mode pass
    over ``data`` gives the per-channel mean :math:`c` and variance :math:`v`
    of the feeding dropout's input, and the prediction at the dropout's
    current rate ``p`` is

    .. math::
        \text{ratio} = \frac{\overline{v}}{\overline{(c^2 + v)/q - c^2}},
        \qquad q = 1 - p,

    to set beside :func:`variance_shift`'s measured ``ratio``. It is exact for
    the first shifted layer; a later one's measured shift also carries the
    shifts upstream, which the formula does not. The model is left as found
    (modes restored; an eval-mode pass changes no statistic, draws no mask).

    Args:
        model: a network with at least one BatchNorm layer.
        data, batch_size: as for :func:`variance_shift`.

    Returns:
        ``{qualified BatchNorm name: predicted ratio}`` for the layers fed by
        dropout (empty when none is).
    """
    _batch_norms(model)
    feeding = dropouts_feeding(model)
    if not feeding:
        return {}
    moments = _eval_input_moments(model, feeding, _reusable(data), batch_size)
    return {name: expected_ratio(*moments[name], drop.p) for name, drop in feeding.items()}


def sweep_variance_shift(
    model: nn.Module,
    data: Data,
    rates: Sequence[float],
    *,
    layer: str | None = None,
    batch_size: int | None = None,
) -> ShiftSweep:
    r"""Measure and predict one BatchNorm layer's variance ratio over a range of drop rates.

    For each rate in ``rates``, every dropout layer that feeds a BatchNorm
    (:func:`dropouts_feeding`) is set to that rate and :func:`variance_shift`
    measures ``layer``'s ratio -- the trained network as it is, no retraining;
    beside it, :func:`expected_ratio` of the eval-mode mean and variance of the
    input of the dropout feeding ``layer`` (eval mode does not depend on the
    rates). The rates are put back afterwards, also on an exception. The
    prediction describes the first BatchNorm fed by dropout; at a later one
    the measured shift also carries the earlier layers' (training and eval
    mode already differ upstream), which the formula does not.

    Args:
        model: a network in which at least one dropout layer feeds a BatchNorm.
        data, batch_size: as for :func:`variance_shift` (``data`` is read
            ``len(rates) + 1`` times).
        rates: drop probabilities, each in ``[0, 1)``.
        layer: the BatchNorm layer (a qualified name); default: the first
            one fed by dropout.

    Returns:
        :class:`ShiftSweep` ``(layer, rates, measured, predicted)``.
    """
    _batch_norms(model)
    feeding = dropouts_feeding(model)
    if not feeding:
        raise ValueError(
            "No BatchNorm layer of the model is fed directly by a dropout layer "
            "(Dropout or Dropout1d/2d/3d right before it in an nn.Sequential); nothing to sweep."
        )
    if layer is None:
        layer = next(iter(feeding))
    elif layer not in feeding:
        raise ValueError(
            f"Invalid value received for argument `layer`: {layer!r} is not a BatchNorm layer "
            f"fed by dropout. Choose one of: {', '.join(feeding)}."
        )
    rates = [float(r) for r in rates]
    for r in rates:
        if math.isnan(r) or not 0.0 <= r < 1.0:
            raise ValueError(
                f"Invalid value received for argument `rates`: expected drop probabilities in "
                f"[0, 1). Received: {r}"
            )
    data = _reusable(data)
    mean, var = _eval_input_moments(model, {layer: feeding[layer]}, data, batch_size)[layer]
    found = {drop: drop.p for drop in feeding.values()}
    measured = []
    try:
        for rate in rates:
            for drop in feeding.values():
                drop.p = rate
            measured.append(variance_shift(model, data, batch_size=batch_size)[layer].ratio)
    finally:
        for drop, rate in found.items():
            drop.p = rate
    return ShiftSweep(layer, rates, measured, [expected_ratio(mean, var, r) for r in rates])
