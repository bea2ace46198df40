"""Element-wise and channel (spatial) dropout."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from dropkit import engine
from dropkit.engine import keyed
from dropkit.functional._checks import (
    _apply_mask,
    _call_keys,
    _check_input,
    _check_p,
    _check_seed,
    _keep_mask,
    _keep_scale,
    _keyed_mask_apply,
)


def dropout(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    inverted: bool = True,
    seed: int | None = None,
) -> Tensor:
    r"""Zero each element of ``x`` independently with probability ``p``.

    With a keep mask :math:`m_i \sim \mathrm{Bernoulli}(1-p)`:

    .. math::
        \text{inverted (default):}\quad
            y_{\text{train}} = \frac{x \odot m}{1-p}, \qquad y_{\text{eval}} = x

        \text{classic (Srivastava et al., 2014):}\quad
            y_{\text{train}} = x \odot m, \qquad y_{\text{eval}} = (1-p)\,x

    Both keep :math:`\mathbb{E}[y_{\text{train}}] = y_{\text{eval}}`. The
    rescale happens at train time *or* at test time, never both: doing both
    (a bug of several tutorials) makes the eval output :math:`(1-p)` times too
    small.

    The mask comes from the Philox mask engine: ``u < round(p * 65536)`` on a
    16-bit uniform, so ``p`` is quantised to multiples of :math:`2^{-16}` for
    the draw (the rescale uses the exact ``p``). No mask is kept for backward:
    it is regenerated from ``(seed, offset)``.

    Args:
        input: any shape and floating dtype (``x`` below).
        p: probability of an element to be zeroed. Default: 0.5.
        training: apply dropout if ``True``; otherwise the eval rule above.
        inplace: write the result into ``x`` and return it.
        inverted: ``True`` for inverted dropout (scale at train time),
            ``False`` for the classic formulation (scale at test time).
        seed: fix the mask outright (offset 0 of the mask spec). ``None``
            draws one seed from torch's default generator.

    Shape:
        - Input: :math:`(*)`. Output: :math:`(*)`, same shape as the input.

    Examples::

        >>> x = torch.ones(5, 5)
        >>> y = dropout(x, p=0.5)            # kept entries are 2.0
        >>> y = dropout(x, p=0.5, inverted=False)  # kept entries are 1.0
        >>> dropout(x, p=0.5, training=False, inverted=False)[0, 0]
        tensor(0.5000)

    Reference: Srivastava et al., "Dropout: A Simple Way to Prevent Neural
    Networks from Overfitting", JMLR 2014.
    """
    x = input
    p = _check_p(p)
    _check_input(x, "dropout")
    seed = _check_seed(seed)
    if not training:
        if inverted or p == 0.0:
            return x
        return x.mul_(1.0 - p) if inplace else x * (1.0 - p)
    if p == 0.0 or x.numel() == 0:
        return x  # the input itself, as torch returns it
    scale = _keep_scale(p, rescale=inverted)
    if (keys := _call_keys(seed, x, 0, "dropout")) is not None:
        out = keyed.keyed_dropout(x, p, scale, keys)
        return x.copy_(out) if inplace else out
    # the engine draws a None seed and picks the eager kernel or the traced op
    if not inplace:
        return engine.dropout(x, p, scale, seed)
    return engine.dropout_(x, p, scale, seed)


# --------------------------------------------------------------------------
# channel (spatial) dropout
# --------------------------------------------------------------------------
class InputShapeError(ValueError, RuntimeError):
    """An input of a rank a function does not accept.

    Both a ``ValueError`` (dropkit's convention for bad arguments) and a
    ``RuntimeError`` (what torch raises for the same input), so code written
    for either keeps working.
    """


def _feature_mask_shape(x: Tensor, unbatched: bool, fn: str) -> tuple[int, ...]:
    """One keep decision per (sample, channel), broadcast over the remaining dims.

    Asked only when a mask is drawn: as in torch, eval, ``p=0`` and ``p=1``
    accept inputs of any rank.
    """
    if unbatched and x.ndim >= 1:  # (C, *spatial): one decision per channel
        return (x.shape[0],) + (1,) * (x.ndim - 1)
    if x.ndim < 2:
        raise InputShapeError(
            f"{fn}: Feature dropout requires at least 2 dimensions in the input (N, C, ...); "
            f"received a {x.ndim}D input of shape {tuple(x.shape)}"
        )
    return (x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2)


def _warn_rank(fn: str, ndim: int, accepted: tuple[int, int]) -> None:
    warnings.warn(
        f"{fn}: Received a {ndim}-D input to {fn}, which is deprecated and will result in an "
        f"error in a future release. To retain the behavior and silence this warning, please "
        f"use dropout instead. Note that {fn} exists to provide channel-wise dropout on inputs "
        f"with {accepted[0] - 1} spatial dimensions, a channel dimension, and an optional batch "
        f"dimension (i.e. {accepted[0]}D or {accepted[1]}D inputs).",
        stacklevel=4,
    )


def _channel_dropout(
    x: Tensor,
    p: float,
    training: bool,
    inplace: bool,
    spatial_dims: int,
    fn: str,
    seed: int | None,
) -> Tensor:
    """Channel dropout with torch's rules for the accepted ranks (checked in every mode).

    ``dropout1d``: 2D (unbatched) or 3D, else an error. ``dropout2d``: 4D; a 3D
    input warns and is taken as ``(N, C, L)`` (torch's historical reading, not
    ``(C, H, W)``); other ranks warn and drop dims 0-1 as ``(N, C, ...)``.
    ``dropout3d``: 5D, or 4D unbatched ``(C, D, H, W)``; other ranks warn and
    are read as unbatched, as torch reads them.
    """
    p = _check_p(p)
    _check_input(x, fn)
    seed = _check_seed(seed)
    accepted = (spatial_dims + 1, spatial_dims + 2)
    if x.ndim not in accepted:
        if spatial_dims == 1:
            raise InputShapeError(
                f"{fn}: Expected 2D or 3D input, but received a {x.ndim}D input of shape "
                f"{tuple(x.shape)}. {fn} drops channels of (N, C, L) or unbatched (C, L) "
                "inputs; use dropout2d/dropout3d for maps and volumes."
            )
        _warn_rank(fn, x.ndim, accepted)
    if spatial_dims == 2 and x.ndim == 3:
        warnings.warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise "
            "1D dropout behavior is desired - input is interpreted as shape (N, C, L), where C "
            "is the channel dim. This behavior will change in a future release to interpret the "
            "input as one without a batch dimension, i.e. shape (C, H, W). To maintain the 1D "
            "channel-wise dropout behavior, please switch to using dropout1d instead.",
            stacklevel=3,
        )
    # torch adds a batch dim to every input of dropout3d but a 5D one, to a 2D
    # input of dropout1d, and never for dropout2d.
    unbatched = x.ndim != accepted[1] if spatial_dims == 3 else (
        spatial_dims == 1 and x.ndim == accepted[0])
    if not training or p == 0.0 or x.numel() == 0:
        # torch adds and removes a batch dim around an unbatched input, so it
        # returns a view there (the input object itself when in place)
        return x.unsqueeze(0).squeeze(0) if unbatched and not inplace else x
    if p == 1.0:  # torch multiplies by zero before it builds per-channel noise
        keep = torch.zeros((), dtype=torch.bool, device=x.device)
        return _apply_mask(x, keep, 1.0, inplace)
    mask_shape = _feature_mask_shape(x, unbatched, fn)
    if (keys := _call_keys(seed, x, 0, fn, unbatched)) is not None:  # one lane per channel
        return _keyed_mask_apply(x, mask_shape, 0, p, _keep_scale(p, rescale=True), keys, inplace)
    keep = _keep_mask(mask_shape, p, seed, x.device)
    return _apply_mask(x, keep, _keep_scale(p, rescale=True), inplace)


def dropout1d(
    input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, *, seed=None
) -> Tensor:
    r"""Zero whole channels of a 1D signal, :math:`y_{n,c,:} = m_{n,c}\,x_{n,c,:}/(1-p)`.

    Input :math:`(N, C, L)` or :math:`(C, L)`, as ``torch.nn.functional.dropout1d``
    (another rank raises an error that is a ``RuntimeError``, as torch's, and a
    ``ValueError``); see :class:`dropkit.Dropout1d`.
    """
    return _channel_dropout(input, p, training, inplace, 1, "dropout1d", seed)


def dropout2d(
    input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, *, seed=None
) -> Tensor:
    r"""Zero whole channels of a 2D map, :math:`y_{n,c,:,:} = m_{n,c}\,x_{n,c,:,:}/(1-p)`.

    Input :math:`(N, C, H, W)`. As ``torch.nn.functional.dropout2d``, a 3D input
    warns and is read as ``(N, C, L)``, and other ranks warn and drop
    ``(N, C, ...)`` channels; see :class:`dropkit.Dropout2d`.
    """
    return _channel_dropout(input, p, training, inplace, 2, "dropout2d", seed)


def dropout3d(
    input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, *, seed=None
) -> Tensor:
    r"""Zero whole channels of a 3D volume, :math:`y_{n,c} = m_{n,c}\,x_{n,c}/(1-p)`.

    Input :math:`(N, C, D, H, W)` or :math:`(C, D, H, W)`; other ranks warn and
    drop ``(N, C, ...)`` channels, as ``torch.nn.functional.dropout3d``; see
    :class:`dropkit.Dropout3d`.
    """
    return _channel_dropout(input, p, training, inplace, 3, "dropout3d", seed)
