"""DropBlock: contiguous regions of each channel dropped together."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dropkit.functional._checks import (
    _apply_mask,
    _check_block_size,
    _check_input,
    _check_p,
    _check_seed,
    _check_spatial_rank,
    _keep_mask,
)


def dropblock_gamma(p: float, block_size: tuple[int, ...], spatial_shape: tuple[int, ...]) -> float:
    r"""The rate of block *centres* that makes DropBlock drop about a fraction ``p``.

    Eq. (1) of Ghiasi et al. (2018), for any number of spatial dims and a
    block already clipped to the feature map:

    .. math::
        \gamma = \frac{p}{\prod_d b_d}\;\frac{\prod_d s_d}{\prod_d (s_d - b_d + 1)}

    (the paper's ``(1 - keep_prob) / block_size**2 * feat_size**2 /
    (feat_size - block_size + 1)**2``). Centres are drawn only where a whole
    block fits, :math:`\prod_d (s_d - b_d + 1)` positions, each block covering
    :math:`\prod_d b_d` elements; overlapping blocks make the dropped fraction
    a little *below* ``p``, which the renormalisation by the kept fraction
    absorbs. Clipped to 1.
    """
    area = math.prod(spatial_shape)
    block = math.prod(block_size)
    # lists, not generators: torch.compile traces them without a graph break
    valid = math.prod([s - b + 1 for s, b in zip(spatial_shape, block_size, strict=True)])
    return min(1.0, p * area / (block * valid))


def _dropblock(
    x: Tensor,
    p: float,
    block_size,
    training: bool,
    scale_by_keep: bool,
    spatial_dims: int,
    fn: str,
    seed: int | None,
) -> Tensor:
    p = _check_p(p)
    _check_input(x, fn)
    seed = _check_seed(seed)
    sizes = _check_block_size(block_size, spatial_dims)
    unbatched = _check_spatial_rank(x, spatial_dims, fn)
    if not training or p == 0.0 or x.numel() == 0:
        return x
    xb = x.unsqueeze(0) if unbatched else x
    if p == 1.0:
        keep = torch.zeros((), dtype=torch.bool, device=x.device)
        return _apply_mask(x, keep, 0.0, inplace=False)
    spatial = tuple(xb.shape[2:])
    # A feature map smaller than the block: the block shrinks to the map
    # (per dim), so one centre drops the whole map of that channel.
    blocks = tuple([min(b, s) for b, s in zip(sizes, spatial, strict=True)])
    valid = tuple([s - b + 1 for s, b in zip(spatial, blocks, strict=True)])
    gamma = dropblock_gamma(p, blocks, spatial)
    # One independent centre mask per (sample, channel), as the paper found best.
    centres = ~_keep_mask(tuple(xb.shape[:2]) + valid, gamma, seed, x.device)
    # Grow each centre (the block's first corner) into a block: pad b-1 zeros
    # on both sides and max-pool with a b-wide window, stride 1. Output cell i
    # sees centres i-b+1 .. i, exactly the blocks covering it; the size comes
    # back to s for odd and even b alike (no off-by-one slicing as with
    # padding b // 2).
    pad: list[int] = []
    for b in reversed(blocks):
        pad += [b - 1, b - 1]
    grown = torch.nn.functional.pad(centres.float(), pad)
    pool = torch.nn.functional.max_pool2d if spatial_dims == 2 else torch.nn.functional.max_pool3d
    keep = pool(grown, kernel_size=blocks, stride=1) == 0
    if unbatched:
        keep = keep.squeeze(0)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    if not scale_by_keep:
        return torch.where(keep, x, zero)
    # Renormalise by the kept fraction of the whole tensor (the paper's
    # count(M) / count_ones(M)); clamp so an all-dropped tensor gives 0, not NaN.
    scale = (keep.numel() / keep.sum().clamp(min=1)).to(x.dtype)
    return torch.where(keep, x * scale, zero)


def dropblock2d(
    x: Tensor,
    p: float = 0.1,
    block_size: int | tuple[int, int] = 7,
    training: bool = True,
    *,
    scale_by_keep: bool = True,
    seed: int | None = None,
) -> Tensor:
    r"""Zero contiguous ``block_size x block_size`` regions of each channel.

    Block corners :math:`c \sim \mathrm{Bernoulli}(\gamma)` on the positions
    where a whole block fits, :math:`\gamma` from :func:`dropblock_gamma`; the
    keep mask :math:`M` is 0 inside every block, and

    .. math::
        y = x \odot M \cdot \frac{\operatorname{numel}(M)}{\operatorname{sum}(M)}

    Input :math:`(N, C, H, W)` or :math:`(C, H, W)`; see :class:`dropkit.DropBlock2d`.

    Reference: Ghiasi, Lin & Le, "DropBlock: A regularization method for
    convolutional networks", NeurIPS 2018.
    """
    return _dropblock(x, p, block_size, training, scale_by_keep, 2, "dropblock2d", seed)


def dropblock3d(
    x: Tensor,
    p: float = 0.1,
    block_size: int | tuple[int, int, int] = 7,
    training: bool = True,
    *,
    scale_by_keep: bool = True,
    seed: int | None = None,
) -> Tensor:
    r"""Zero contiguous ``block_size``-cubes of each channel of a volume.

    As :func:`dropblock2d` with a third spatial dim. Input :math:`(N, C, D, H, W)`
    or :math:`(C, D, H, W)`; see :class:`dropkit.DropBlock3d`.
    """
    return _dropblock(x, p, block_size, training, scale_by_keep, 3, "dropblock3d", seed)
