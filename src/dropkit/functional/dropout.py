"""Element-wise and channel (spatial) dropout."""

from __future__ import annotations

from torch import Tensor

from dropkit import engine
from dropkit.engine import traced
from dropkit.functional._checks import (
    _apply_mask,
    _check_input,
    _check_p,
    _check_seed,
    _check_spatial_rank,
    _compiling,
    _keep_mask,
    _keep_scale,
)


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
    if _compiling(seed):
        out = traced.dropout(x, p, scale, traced.draw_seed_tensor())
        return x.copy_(out) if inplace else out
    if seed is None:
        seed = engine.draw_seed()
    if not inplace:
        return engine.dropout(x, p, scale, seed)
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
    _check_spatial_rank(x, spatial_dims, fn)
    if not training or p == 0.0:
        return x
    # One keep decision per (sample, channel), broadcast over the spatial dims.
    mask_shape = tuple(x.shape[: x.ndim - spatial_dims]) + (1,) * spatial_dims
    keep = _keep_mask(mask_shape, p, seed, x.device)
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
