"""The math of dropkit: pure functions over tensors.

Every ``nn.Module`` in :mod:`dropkit.layers` is a thin holder of configuration
whose ``forward`` calls one function from this file. Element-wise masks come
from the mask engine (:mod:`dropkit.engine`): a counter-based Philox generator,
so a mask is a pure function of ``(seed, offset)`` and backward regenerates it
instead of keeping it alive (see ``docs/mask-spec.md``).

Conventions shared by all functions here:

* ``p`` is the **drop** probability, a real number in ``[0, 1]``.
* ``training=False`` and ``p=0`` return the input itself (no RNG draw).
* ``p=1`` gives zeros and zero gradients, never NaN.
* Without ``seed=``, each call takes one seed from torch's default generator,
  so ``torch.manual_seed`` makes every result reproducible and consecutive
  calls draw different masks.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from dropkit import engine

__all__ = [
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "drop_path",
    "drop_path_rates",
]

_DROP_PATH_MODES = ("row", "batch")


# --------------------------------------------------------------------------
# argument checks, shared by every function and module of the package
# --------------------------------------------------------------------------
def _check_p(p: float, name: str = "p") -> float:
    """Return ``p`` as a float after checking it is a probability."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(
            f"Invalid type received for argument `{name}`. Expected a float between 0 and 1 "
            f"(the drop probability). Received: {name}={p!r} of type {type(p).__name__}"
        )
    value = float(p)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"Invalid value received for argument `{name}`. Expected a float between 0 and 1 "
            f"(the drop probability). Received: {name}={p!r}"
        )
    return value


def _check_input(x: Tensor, fn: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}() expects a torch.Tensor as input; received {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(
            f"{fn}() expects a floating-point tensor; received a tensor of dtype={x.dtype}. "
            "Dropout of integer or boolean tensors is not defined: cast with .float() first."
        )
    if x.is_complex():
        raise TypeError(f"{fn}() does not support complex tensors; received dtype={x.dtype}")


def _check_seed(seed: int | None) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"Invalid type received for argument `seed`. Expected an int in [0, 2**64) or None. "
            f"Received: seed={seed!r} of type {type(seed).__name__}"
        )
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(
            f"Invalid value received for argument `seed`. Expected an int in [0, 2**64) or None. "
            f"Received: seed={seed}"
        )
    return seed


def _keep_scale(p: float, rescale: bool) -> float:
    """The factor applied to kept values: ``1/(1-p)`` when rescaling, else 1.

    At ``p == 1`` nothing is kept, so the factor is irrelevant; 0 avoids the
    division by zero that would otherwise turn ``0 * inf`` into NaN.
    """
    if not rescale:
        return 1.0
    return 0.0 if p == 1.0 else 1.0 / (1.0 - p)


def _apply_mask(x: Tensor, keep: Tensor, scale: float, inplace: bool) -> Tensor:
    """``where(keep, x * scale, 0)`` for a mask that broadcasts against ``x``.

    ``where`` rather than a multiply by the mask, so dropped entries are
    exactly 0 even where ``x`` holds inf or NaN.
    """
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    scaled = x * scale if scale != 1.0 else x
    out = torch.where(keep, scaled, zero)
    if inplace:
        return x.copy_(out)
    return out


# --------------------------------------------------------------------------
# element-wise dropout
# --------------------------------------------------------------------------
def dropout(
    x: Tensor,
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
        x: input of any shape and floating dtype.
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
    p = _check_p(p)
    _check_input(x, "dropout")
    seed = _check_seed(seed)
    if not training:
        if inverted or p == 0.0:
            return x
        return x.mul_(1.0 - p) if inplace else x * (1.0 - p)
    if p == 0.0:
        return x
    scale = _keep_scale(p, rescale=inverted)
    if seed is None:
        seed = engine.draw_seed()
    if not inplace:
        return engine.dropout(x, p, scale, seed)
    if torch.is_grad_enabled() and x.requires_grad:
        # The engine saves nothing for backward, so overwriting x afterwards
        # is safe for autograd; copy_ keeps the result in x's storage.
        return x.copy_(engine.dropout(x, p, scale, seed))
    return engine.dropout_(x, p, scale, seed)


# --------------------------------------------------------------------------
# channel (spatial) dropout
# --------------------------------------------------------------------------
def _channel_dropout(
    x: Tensor,
    p: float,
    training: bool,
    inplace: bool,
    spatial_dims: int,
    fn: str,
    seed: int | None,
) -> Tensor:
    p = _check_p(p)
    _check_input(x, fn)
    seed = _check_seed(seed)
    batched, unbatched = spatial_dims + 2, spatial_dims + 1
    if x.ndim not in (batched, unbatched):
        raise ValueError(
            f"{fn}() expects a {unbatched}D (unbatched) or {batched}D (batched) input, "
            f"(N, C, ...) with {spatial_dims} spatial dim(s); received a {x.ndim}D input "
            f"of shape {tuple(x.shape)}"
        )
    if not training or p == 0.0:
        return x
    # One keep decision per (sample, channel), broadcast over the spatial dims.
    mask_shape = tuple(x.shape[: x.ndim - spatial_dims]) + (1,) * spatial_dims
    if seed is None:
        seed = engine.draw_seed()
    keep = engine.keep_mask(mask_shape, p, seed, device=x.device)
    return _apply_mask(x, keep, _keep_scale(p, rescale=True), inplace)


def dropout1d(
    x: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, *, seed=None
) -> Tensor:
    r"""Zero whole channels of a 1D signal, :math:`y_{n,c,:} = m_{n,c}\,x_{n,c,:}/(1-p)`.

    Input :math:`(N, C, L)` or :math:`(C, L)`; see :class:`dropkit.Dropout1d`.
    """
    return _channel_dropout(x, p, training, inplace, 1, "dropout1d", seed)


def dropout2d(
    x: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, *, seed=None
) -> Tensor:
    r"""Zero whole channels of a 2D map, :math:`y_{n,c,:,:} = m_{n,c}\,x_{n,c,:,:}/(1-p)`.

    Input :math:`(N, C, H, W)` or :math:`(C, H, W)`; see :class:`dropkit.Dropout2d`.
    """
    return _channel_dropout(x, p, training, inplace, 2, "dropout2d", seed)


def dropout3d(
    x: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, *, seed=None
) -> Tensor:
    r"""Zero whole channels of a 3D volume, :math:`y_{n,c} = m_{n,c}\,x_{n,c}/(1-p)`.

    Input :math:`(N, C, D, H, W)` or :math:`(C, D, H, W)`; see :class:`dropkit.Dropout3d`.
    """
    return _channel_dropout(x, p, training, inplace, 3, "dropout3d", seed)


# --------------------------------------------------------------------------
# drop path / stochastic depth
# --------------------------------------------------------------------------
def drop_path(
    x: Tensor,
    p: float = 0.0,
    training: bool = True,
    *,
    scale_by_keep: bool = True,
    mode: str = "row",
    seed: int | None = None,
) -> Tensor:
    r"""Drop whole samples of a residual branch (stochastic depth).

    Apply to the *branch*, before it is added back: ``x + drop_path(f(x), p)``.
    With one keep variable per sample, :math:`m_n \sim \mathrm{Bernoulli}(1-p)`:

    .. math::
        y_{n,\dots} = \frac{m_n}{1-p}\, x_{n,\dots} \quad (\texttt{scale\_by\_keep=True}),
        \qquad y_{n,\dots} = m_n\, x_{n,\dots} \quad \text{otherwise}.

    "Drop path" rather than "drop connect": DropConnect (Wan et al., 2013)
    drops *weights*; this drops a whole path through the network for a sample,
    as in FractalNet and stochastic depth (Huang et al., 2016). The name
    follows timm.

    Args:
        x: branch output, any shape with the batch on dim 0 (e.g. ViT tokens
            ``(B, 197, C)`` or conv maps ``(B, C, H, W)``).
        p: probability of dropping the branch for a sample. Default: 0.
        training: apply only in training; eval returns ``x``.
        scale_by_keep: divide kept samples by ``1 - p`` (keeps the mean).
        mode: ``"row"`` draws one decision per sample (timm); ``"batch"`` one
            for the whole batch (torchvision's ``StochasticDepth(mode="batch")``).
        seed: fix the decision(s); ``None`` draws from torch's generator.

    Examples::

        >>> branch = torch.randn(8, 197, 384)
        >>> y = drop_path(branch, p=0.1)   # each of the 8 samples kept or zeroed
    """
    p = _check_p(p)
    _check_input(x, "drop_path")
    seed = _check_seed(seed)
    if mode not in _DROP_PATH_MODES:
        raise ValueError(
            f"Invalid value received for argument `mode`. Expected one of "
            f"{_DROP_PATH_MODES}. Received: mode={mode!r}"
        )
    if not training or p == 0.0:
        return x
    # Shape-agnostic: (B, 1, 1, ...) broadcasts one decision over every
    # non-batch dim, whatever the layout (tokens, channels, pixels).
    if mode == "row" and x.ndim > 0:
        mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    else:
        mask_shape = (1,) * x.ndim
    if seed is None:
        seed = engine.draw_seed()
    keep = engine.keep_mask(mask_shape, p, seed, device=x.device)
    return _apply_mask(x, keep, _keep_scale(p, rescale=scale_by_keep), inplace=False)


def drop_path_rates(depth: int, max_rate: float) -> list[float]:
    r"""The linear stochastic-depth schedule: block ``i`` of ``depth`` gets
    :math:`p_i = \text{max\_rate} \cdot i / (\text{depth} - 1)`.

    The first block is never dropped and the last gets ``max_rate``, as in
    ``torch.linspace(0, drop_path_rate, depth)`` of timm's ViT and ConvNeXt
    (Huang et al., 2016, argue early blocks extract features every later block
    relies on).

    Examples::

        >>> drop_path_rates(5, 0.2)
        [0.0, 0.05, 0.1, 0.15000000000000002, 0.2]
    """
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1:
        raise ValueError(
            f"Invalid value received for argument `depth`. Expected a positive int. "
            f"Received: depth={depth!r}"
        )
    max_rate = _check_p(max_rate, "max_rate")
    if depth == 1:
        return [0.0]
    return [max_rate * i / (depth - 1) for i in range(depth)]
