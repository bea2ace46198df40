"""DropBlock: contiguous regions of each channel dropped together."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from dropkit.engine import keyed
from dropkit.functional._checks import (
    _apply_mask,
    _call_keys,
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


def _check_eps(eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(
            f"Invalid type received for argument `eps`. Expected a non-negative float. "
            f"Received: eps={eps!r} of type {type(eps).__name__}"
        )
    value = float(eps)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(
            f"Invalid value received for argument `eps`. Expected a non-negative float. "
            f"Received: eps={eps!r}"
        )
    return value


def _dropblock(
    x: Tensor,
    p: float,
    block_size,
    training: bool,
    scale_by_keep: bool,
    spatial_dims: int,
    fn: str,
    seed: int | None,
    inplace: bool = False,
    eps: float = 1e-6,
) -> Tensor:
    p = _check_p(p)
    _check_input(x, fn)
    seed = _check_seed(seed)
    sizes = _check_block_size(block_size, spatial_dims)
    eps = _check_eps(eps)
    unbatched = _check_spatial_rank(x, spatial_dims, fn)
    if not training or p == 0.0 or x.numel() == 0:
        return x
    xb = x.unsqueeze(0) if unbatched else x
    if p == 1.0:
        return _apply_mask(x, torch.zeros((), dtype=torch.bool, device=x.device), 1.0, inplace)
    spatial = tuple(xb.shape[2:])
    # A feature map smaller than the block: the block shrinks to the map
    # (per dim), so one centre drops the whole map of that channel.
    blocks = tuple([min(b, s) for b, s in zip(sizes, spatial, strict=True)])
    valid = tuple([s - b + 1 for s, b in zip(spatial, blocks, strict=True)])
    gamma = dropblock_gamma(p, blocks, spatial)
    pool = torch.nn.functional.max_pool2d if spatial_dims == 2 else torch.nn.functional.max_pool3d

    def grow(centres: Tensor) -> Tensor:
        # Grow each centre (the block's first corner) into a block: pad b-1
        # zeros on both sides and max-pool with a b-wide window, stride 1.
        # Output cell i sees centres i-b+1 .. i, exactly the blocks covering it;
        # the size comes back to s for odd and even b alike (no off-by-one
        # slicing as with padding b // 2).
        pad: list[int] = []
        for b in reversed(blocks):
            pad += [b - 1, b - 1]
        grown = torch.nn.functional.pad(centres.float(), pad)
        return pool(grown, kernel_size=blocks, stride=1) == 0

    centre_shape = tuple(xb.shape[:2]) + valid
    if (keys := _call_keys(seed, x, 0, fn, unbatched)) is not None:
        return _keyed_dropblock(x, centre_shape, gamma, keys, grow, scale_by_keep, eps, inplace)
    # One independent centre mask per (sample, channel), as the paper found best.
    centres = ~_keep_mask(centre_shape, gamma, seed, x.device)
    keep = grow(centres)
    if unbatched:
        keep = keep.squeeze(0)
    if not scale_by_keep:
        return _apply_mask(x, keep, 1.0, inplace)
    # Renormalise by the kept fraction of the whole tensor, the paper's
    # count(M) / count_ones(M), with torchvision's eps in the denominator.
    # The count is an integer, so the clamp acts only when every unit is
    # dropped: the output is 0 anyway, and a finite scale keeps its gradient
    # 0 rather than 0 * inf = NaN (eps=0, or a float16 overflow).
    accumulate = torch.float64 if x.dtype == torch.float64 else torch.float32
    kept = keep.sum().to(accumulate)
    scale = (keep.numel() / (kept + eps).clamp(min=1.0)).to(x.dtype)
    return _apply_mask(x, keep, scale, inplace)


def _keyed_dropblock(x: Tensor, centre_shape, gamma: float, keys, grow, scale_by_keep: bool,
                     eps: float, inplace: bool) -> Tensor:
    """DropBlock with the centres keyed per sample (``dk.mask_keys``); nothing saved.

    A sample's mask is its ``C * prod(valid)`` centres. The kept fraction is
    counted *per sample* here: counted over the batch (as outside the keys),
    a sample's output would depend on the other samples of its batch.
    """
    def linear(t: Tensor) -> Tensor:
        keep = grow(~keyed.keyed_keep_mask(centre_shape, 0, gamma, keys, t.device))
        if not scale_by_keep:
            return _apply_mask(t, keep, 1.0, inplace=False)
        accumulate = torch.float64 if t.dtype == torch.float64 else torch.float32
        kept = keep.flatten(1).sum(1).to(accumulate)
        per_sample = keep[0].numel()
        scale = (per_sample / (kept + eps).clamp(min=1.0)).to(t.dtype)
        return _apply_mask(t, keep, scale.view((-1,) + (1,) * (t.ndim - 1)), inplace=False)

    out = keyed.regenerated(x, linear)
    return x.copy_(out) if inplace else out


def dropblock2d(
    x: Tensor,
    p: float = 0.1,
    block_size: int | tuple[int, int] = 7,
    training: bool = True,
    *,
    scale_by_keep: bool = True,
    seed: int | None = None,
    inplace: bool = False,
    eps: float = 1e-6,
) -> Tensor:
    r"""Zero contiguous ``block_size x block_size`` regions of each channel.

    Block corners :math:`c \sim \mathrm{Bernoulli}(\gamma)` on the positions
    where a whole block fits, :math:`\gamma` from :func:`dropblock_gamma`; the
    keep mask :math:`M` is 0 inside every block, and

    .. math::
        y = x \odot M \cdot \frac{\operatorname{numel}(M)}{\operatorname{sum}(M) + \epsilon}

    Input :math:`(N, C, H, W)` or :math:`(C, H, W)`; see :class:`dropkit.DropBlock2d`.
    :func:`drop_block2d` is the same function with torchvision's argument order.

    Args:
        x: the feature maps.
        p: the target fraction of dropped units. Default: 0.1.
        block_size: side of the square block, or ``(bh, bw)``. Default: 7.
        training: apply only if ``True``; eval returns ``x``. Default: ``True``.
        scale_by_keep: renormalise by the kept fraction. Default: ``True``.
        seed: fix the mask; ``None`` draws from torch's generator.
        inplace: write the result into ``x`` (a torch in-place op). Default: ``False``.
        eps: added to the kept count :math:`\operatorname{sum}(M)`. Default: 1e-6.

    Examples::

        >>> y = dropblock2d(torch.randn(8, 64, 28, 28), p=0.1, block_size=5)

    Reference: Ghiasi, Lin & Le, "DropBlock: A regularization method for
    convolutional networks", NeurIPS 2018.
    """
    return _dropblock(
        x, p, block_size, training, scale_by_keep, 2, "dropblock2d", seed, inplace, eps
    )


def dropblock3d(
    x: Tensor,
    p: float = 0.1,
    block_size: int | tuple[int, int, int] = 7,
    training: bool = True,
    *,
    scale_by_keep: bool = True,
    seed: int | None = None,
    inplace: bool = False,
    eps: float = 1e-6,
) -> Tensor:
    r"""Zero contiguous ``block_size``-cubes of each channel of a volume.

    As :func:`dropblock2d` with a third spatial dim,
    :math:`\gamma = \frac{p}{b^3}\frac{DHW}{(D-b+1)(H-b+1)(W-b+1)}`. Input
    :math:`(N, C, D, H, W)` or :math:`(C, D, H, W)`; see :class:`dropkit.DropBlock3d`.
    :func:`drop_block3d` is the same function with torchvision's argument order.
    """
    return _dropblock(
        x, p, block_size, training, scale_by_keep, 3, "dropblock3d", seed, inplace, eps
    )


# torchvision.ops spells these drop_block2d/3d and puts `inplace` and `eps`
# where dropkit's dropblock2d/3d have `training`: two signatures, one function.


def drop_block2d(
    input: Tensor,
    p: float,
    block_size: int | tuple[int, int],
    inplace: bool = False,
    eps: float = 1e-06,
    training: bool = True,
    *,
    scale_by_keep: bool = True,
    seed: int | None = None,
) -> Tensor:
    r"""DropBlock with torchvision's signature: :func:`dropblock2d` by another name.

    .. math::
        \gamma = \frac{p}{b^2}\,\frac{HW}{(H-b+1)(W-b+1)}, \qquad
        y = x \odot M \cdot \frac{\operatorname{numel}(M)}{\operatorname{sum}(M) + \epsilon}

    with block corners :math:`\sim \mathrm{Bernoulli}(\gamma)` where a whole
    block fits and :math:`M` 0 inside every block. A drop-in for
    ``torchvision.ops.drop_block2d``: the same arguments, eval and ``p=0``
    return ``input`` itself, ``inplace=True`` writes into ``input`` with torch
    in-place ops, a ``ValueError`` for ``p`` outside ``[0, 1]``, a bad
    ``block_size`` or an input that is not 4D. dropkit also takes even and
    ``(bh, bw)`` blocks and unbatched ``(C, H, W)`` input (torchvision raises),
    clips the block to the map per dim, and gives zeros at ``p=1``.

    Args:
        input: feature maps :math:`(N, C, H, W)` (or :math:`(C, H, W)`).
        p: the target fraction of dropped units.
        block_size: side of the square block, or ``(bh, bw)``.
        inplace: write the result into ``input``. Default: ``False``.
        eps: added to the kept count in the renormalisation. Default: 1e-6.
        training: apply only if ``True``. Default: ``True``.
        scale_by_keep: renormalise by the kept fraction. Default: ``True``.
        seed: fix the mask; ``None`` draws from torch's generator.

    Shape:
        - Input: :math:`(N, C, H, W)` or :math:`(C, H, W)`. Output: same shape.

    Examples::

        >>> y = drop_block2d(torch.randn(8, 64, 28, 28), 0.1, 5)

    Reference: Ghiasi, Lin & Le, "DropBlock: A regularization method for
    convolutional networks", NeurIPS 2018.
    """
    return _dropblock(
        input, p, block_size, training, scale_by_keep, 2, "drop_block2d", seed, inplace, eps
    )


def drop_block3d(
    input: Tensor,
    p: float,
    block_size: int | tuple[int, int, int],
    inplace: bool = False,
    eps: float = 1e-06,
    training: bool = True,
    *,
    scale_by_keep: bool = True,
    seed: int | None = None,
) -> Tensor:
    r"""DropBlock of volumes with torchvision's signature: :func:`dropblock3d` by another name.

    .. math::
        \gamma = \frac{p}{b^3}\,\frac{DHW}{(D-b+1)(H-b+1)(W-b+1)}, \qquad
        y = x \odot M \cdot \frac{\operatorname{numel}(M)}{\operatorname{sum}(M) + \epsilon}

    A drop-in for ``torchvision.ops.drop_block3d``; see :func:`drop_block2d`.

    Args:
        input: volumes :math:`(N, C, D, H, W)` (or :math:`(C, D, H, W)`).
        p: the target fraction of dropped units.
        block_size: side of the cube, or ``(bd, bh, bw)``.
        inplace: write the result into ``input``. Default: ``False``.
        eps: added to the kept count in the renormalisation. Default: 1e-6.
        training: apply only if ``True``. Default: ``True``.
        scale_by_keep: renormalise by the kept fraction. Default: ``True``.
        seed: fix the mask; ``None`` draws from torch's generator.

    Shape:
        - Input: :math:`(N, C, D, H, W)` or :math:`(C, D, H, W)`. Output: same shape.

    Examples::

        >>> y = drop_block3d(torch.randn(2, 8, 16, 16, 16), 0.1, 3)
    """
    return _dropblock(
        input, p, block_size, training, scale_by_keep, 3, "drop_block3d", seed, inplace, eps
    )
