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
from dropkit.engine import traced

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


def _check_spatial_rank(x: Tensor, spatial_dims: int, fn: str) -> bool:
    """Check ``x`` is ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``; True if unbatched."""
    batched, unbatched = spatial_dims + 2, spatial_dims + 1
    if x.ndim not in (batched, unbatched):
        raise ValueError(
            f"{fn}() expects a {unbatched}D (unbatched) or {batched}D (batched) input, "
            f"(N, C, ...) with {spatial_dims} spatial dim(s); received a {x.ndim}D input "
            f"of shape {tuple(x.shape)}"
        )
    return x.ndim == unbatched


def _check_mode(mode: str) -> str:
    """Check a drop-path ``mode`` against the choices."""
    if mode not in _DROP_PATH_MODES:
        raise ValueError(
            f"Invalid value received for argument `mode`. Expected one of "
            f"{_DROP_PATH_MODES}. Received: mode={mode!r}"
        )
    return mode


def _keep_scale(p: float, rescale: bool) -> float:
    """The factor applied to kept values: ``1/(1-p)`` when rescaling, else 1.

    At ``p == 1`` nothing is kept, so the factor is irrelevant; 0 avoids the
    division by zero that would otherwise turn ``0 * inf`` into NaN.
    """
    if not rescale:
        return 1.0
    return 0.0 if p == 1.0 else 1.0 / (1.0 - p)


def _compiling(seed: int | None) -> bool:
    """True when tracing under torch.compile with a seed to draw.

    Then the seed is drawn as a tensor inside the graph (``engine.traced``):
    a Python-int seed would cost a graph break and be baked into the graph.
    """
    return seed is None and torch.compiler.is_compiling()


def _keep_mask(shape: tuple[int, ...], p: float, seed: int | None, device) -> Tensor:
    if _compiling(seed):
        return traced.keep_mask(shape, p, traced.draw_seed_tensor(), device=device)
    if seed is None:
        seed = engine.draw_seed()
    return engine.keep_mask(shape, p, seed, device=device)


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
    if _compiling(seed):
        out = traced.dropout(x, p, scale, traced.draw_seed_tensor())
        return x.copy_(out) if inplace else out
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
    _check_mode(mode)
    if not training or p == 0.0:
        return x
    # Shape-agnostic: (B, 1, 1, ...) broadcasts one decision over every
    # non-batch dim, whatever the layout (tokens, channels, pixels).
    if mode == "row" and x.ndim > 0:
        mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    else:
        mask_shape = (1,) * x.ndim
    keep = _keep_mask(mask_shape, p, seed, x.device)
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


# ---- the rest of the family ----
# DropBlock, Gaussian and alpha dropout, locked (variational) dropout,
# embedding dropout and concrete dropout. Masks come from the mask engine;
# the two families that need continuous noise (Gaussian, concrete) draw it
# from a torch.Generator seeded by engine.draw_seed(), so torch.manual_seed
# still governs every result.

__all__ += [
    "dropblock2d",
    "dropblock3d",
    "dropblock_gamma",
    "gaussian_dropout",
    "alpha_dropout",
    "locked_dropout",
    "embedding_dropout",
    "concrete_dropout",
    "concrete_dropout_regularizer",
]

# SELU's saturation value -lambda * alpha (Klambauer et al., 2017): the value a
# SELU unit takes for x -> -inf, and so the value alpha dropout sets dropped
# units to (0 would shift SELU's mean and variance).
SELU_ALPHA_PRIME = -1.7580993408473766


def _noise_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A generator for continuous noise, seeded from ``seed`` or the engine.

    ``None`` (torch's default generator) while tracing under torch.compile
    without a seed: a generator object cannot be traced, the default one can.
    """
    if seed is None and torch.compiler.is_compiling():
        return None
    if seed is None:
        seed = engine.draw_seed()
    return torch.Generator(device=device).manual_seed(seed)


def _check_block_size(block_size, spatial_dims: int) -> tuple[int, ...]:
    sizes = (block_size,) * spatial_dims if isinstance(block_size, numbers.Integral) else block_size
    ok = (
        isinstance(sizes, tuple | list)
        and len(sizes) == spatial_dims
        and all(isinstance(b, numbers.Integral) and not isinstance(b, bool) and b >= 1
                for b in sizes)
    )
    if not ok:
        raise ValueError(
            f"Invalid value received for argument `block_size`. Expected a positive int or a "
            f"tuple of {spatial_dims} positive ints. Received: block_size={block_size!r}"
        )
    return tuple(int(b) for b in sizes)


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


def gaussian_dropout(
    x: Tensor, p: float = 0.5, training: bool = True, *, seed: int | None = None
) -> Tensor:
    r"""Multiply by Gaussian noise with the mean and variance of inverted dropout.

    .. math::
        y_{\text{train}} = x \odot \epsilon,\quad
        \epsilon_i \sim \mathcal{N}\!\left(1, \tfrac{p}{1-p}\right),
        \qquad y_{\text{eval}} = x

    :math:`p/(1-p)` is the variance of the inverted-dropout factor
    :math:`m/(1-p)`, so both regularise alike to second order (Srivastava et
    al., 2014, sec. 10; Keras ``GaussianDropout``). ``p = 1`` would need
    infinite variance and is rejected.
    """
    p = _check_p(p)
    _check_input(x, "gaussian_dropout")
    seed = _check_seed(seed)
    if p == 1.0:
        raise ValueError(
            "Invalid value received for argument `p`. Gaussian dropout needs p < 1 "
            f"(its noise variance p/(1-p) is infinite at p=1). Received: p={p!r}"
        )
    if not training or p == 0.0:
        return x
    gen = _noise_generator(seed, x.device)
    noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=torch.float32)
    noise = noise.mul_(math.sqrt(p / (1.0 - p))).add_(1.0).to(x.dtype)
    return x * noise


def alpha_dropout(
    x: Tensor, p: float = 0.5, training: bool = True, *, seed: int | None = None
) -> Tensor:
    r"""Dropout that keeps SELU's self-normalising mean 0 and variance 1.

    Dropped units are set to SELU's saturation value
    :math:`\alpha' = -\lambda\alpha \approx -1.7581` instead of 0, then an
    affine map restores the moments:

    .. math::
        y = a\,\bigl(x \odot m + \alpha'(1-m)\bigr) + b,\quad
        a = \bigl((1-p)(1 + p\,\alpha'^2)\bigr)^{-1/2},\quad b = -a\,\alpha' p

    so that :math:`\mathbb{E}[x]=0,\ \mathrm{Var}[x]=1` gives the same for
    :math:`y`. Identity in eval; ``p = 1`` gives zeros (as torch).

    Reference: Klambauer et al., "Self-Normalizing Neural Networks", NeurIPS 2017.
    """
    p = _check_p(p)
    _check_input(x, "alpha_dropout")
    seed = _check_seed(seed)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        keep = torch.zeros((), dtype=torch.bool, device=x.device)
        return _apply_mask(x, keep, 0.0, inplace=False)
    a = ((1.0 - p) * (1.0 + p * SELU_ALPHA_PRIME**2)) ** -0.5
    b = -a * SELU_ALPHA_PRIME * p
    keep = _keep_mask(tuple(x.shape), p, seed, x.device)
    dropped_value = torch.tensor(a * SELU_ALPHA_PRIME + b, dtype=x.dtype, device=x.device)
    return torch.where(keep, x * a + b, dropped_value)


def locked_dropout(
    x: Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    batch_first: bool = False,
    seed: int | None = None,
) -> Tensor:
    r"""Variational dropout for sequences: one mask per sequence, shared over time.

    .. math::
        y_{t,n,h} = \frac{m_{n,h}}{1-p}\,x_{t,n,h}, \qquad m_{n,h} \sim \mathrm{Bernoulli}(1-p)

    The same units are dropped at every time step, so the recurrence cannot
    average the noise away (Gal & Ghahramani, 2016; the ``LockedDropout`` of
    AWD-LSTM, Merity et al., 2018).

    Args:
        x: :math:`(T, N, H)`, or :math:`(N, T, H)` with ``batch_first=True``,
            or an unbatched :math:`(T, H)`.
        batch_first: the layout of a 3D input.
    """
    p = _check_p(p)
    _check_input(x, "locked_dropout")
    seed = _check_seed(seed)
    if x.ndim not in (2, 3):
        raise ValueError(
            "locked_dropout() expects a 3D input (T, N, H) (or (N, T, H) with batch_first=True) "
            f"or an unbatched 2D input (T, H); received a {x.ndim}D input of shape "
            f"{tuple(x.shape)}"
        )
    if not training or p == 0.0:
        return x
    time_dim = 1 if (batch_first and x.ndim == 3) else 0
    mask_shape = list(x.shape)
    mask_shape[time_dim] = 1
    keep = _keep_mask(tuple(mask_shape), p, seed, x.device)
    return _apply_mask(x, keep, _keep_scale(p, rescale=True), inplace=False)


def embedding_dropout(
    input: Tensor,
    weight: Tensor,
    p: float = 0.1,
    training: bool = True,
    *,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
    seed: int | None = None,
) -> Tensor:
    r"""Look up ``input`` in ``weight`` after dropping whole rows (words).

    .. math::
        y_{\dots} = \frac{m_{w}}{1-p}\,W_{w}, \quad w = \text{input}_{\dots},
        \qquad m_w \sim \mathrm{Bernoulli}(1-p) \text{ per vocabulary row}

    One decision per word *type* for the call, so every occurrence of a word
    in the batch is dropped together (Gal & Ghahramani, 2016; AWD-LSTM's
    ``embedded_dropout``). Equivalent to masking the rows of ``weight`` and
    looking up, but masks only the looked-up vectors, so no masked copy of a
    large vocabulary matrix is made. Other arguments as
    :func:`torch.nn.functional.embedding`.
    """
    p = _check_p(p)
    _check_input(weight, "embedding_dropout")
    seed = _check_seed(seed)
    if not isinstance(input, Tensor) or input.is_floating_point() or input.dtype == torch.bool:
        got = input.dtype if isinstance(input, Tensor) else type(input).__name__
        raise TypeError(
            f"embedding_dropout() expects integer indices as `input`; received {got}"
        )
    if weight.ndim != 2:
        raise ValueError(
            "embedding_dropout() expects a 2D `weight` (num_embeddings, embedding_dim); "
            f"received shape {tuple(weight.shape)}"
        )
    out = torch.nn.functional.embedding(
        input, weight, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse
    )
    if not training or p == 0.0:
        return out
    keep_rows = _keep_mask((weight.shape[0],), p, seed, weight.device)
    keep = keep_rows[input].unsqueeze(-1)
    return _apply_mask(out, keep, _keep_scale(p, rescale=True), inplace=False)


def concrete_dropout(
    x: Tensor,
    p_logit: Tensor,
    temperature: float = 0.1,
    training: bool = True,
    *,
    seed: int | None = None,
) -> Tensor:
    r"""Dropout with a learnable rate, through the relaxed (concrete) Bernoulli.

    With :math:`p = \sigma(\ell)` for the logit :math:`\ell` = ``p_logit``,
    :math:`u \sim U(0, 1)` per element and temperature :math:`t`:

    .. math::
        z = \sigma\!\left(\frac{\ell + \log u - \log(1-u)}{t}\right),\qquad
        y_{\text{train}} = \frac{x \odot (1-z)}{1-p},\qquad y_{\text{eval}} = x

    :math:`z` is a relaxed "drop" indicator, close to Bernoulli(p) for small
    :math:`t`, and differentiable in :math:`\ell`, so ``p`` can be learned
    (Gal, Hron & Kendall, "Concrete Dropout", NeurIPS 2017). Written in logit
    form: :math:`\log p - \log(1-p) = \ell` exactly, no ``eps`` needed there.
    """
    _check_input(x, "concrete_dropout")
    seed = _check_seed(seed)
    if not isinstance(p_logit, Tensor) or p_logit.numel() != 1:
        raise TypeError(
            "concrete_dropout() expects `p_logit` as a one-element tensor (the logit of the "
            f"drop probability); received {p_logit!r}"
        )
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not (
        temperature > 0 and math.isfinite(temperature)
    ):
        raise ValueError(
            "Invalid value received for argument `temperature`. Expected a positive float. "
            f"Received: temperature={temperature!r}"
        )
    if not training:
        return x
    gen = _noise_generator(seed, x.device)
    u = torch.rand(x.shape, generator=gen, device=x.device, dtype=torch.float32)
    # keep log(u) and log(1-u) finite: u is drawn from [0, 1).
    u = u.clamp_(1e-7, 1.0 - 1e-7)
    logit = p_logit.float().reshape(())
    z = torch.sigmoid((logit + torch.log(u) - torch.log1p(-u)) / temperature)
    keep_prob = torch.sigmoid(-logit)
    return x * ((1.0 - z) / keep_prob).to(x.dtype)


def concrete_dropout_regularizer(
    p_logit: Tensor,
    input_dim: int,
    weight_sq_sum: Tensor | float = 0.0,
    weight_regularizer: float = 1e-6,
    dropout_regularizer: float = 1e-5,
) -> Tensor:
    r"""The regularisation term of concrete dropout, to add to the loss.

    .. math::
        R = \lambda_w \frac{\lVert W \rVert^2}{1-p}
            + \lambda_p\, K \bigl(p\log p + (1-p)\log(1-p)\bigr)

    :math:`\lambda_w` = ``weight_regularizer`` (:math:`l^2/N` for a prior
    length-scale :math:`l` and :math:`N` training points),
    :math:`\lambda_p` = ``dropout_regularizer`` (:math:`2/N` in the paper's
    regression set-up; larger values push ``p`` towards 0.5), :math:`K` =
    ``input_dim`` the number of dropped features, :math:`\lVert W\rVert^2` =
    ``weight_sq_sum`` of the layer after the dropout. The second term is minus
    the entropy of Bernoulli(p): the KL to the approximate posterior.
    """
    logit = p_logit.reshape(())
    p = torch.sigmoid(logit)
    log_p, log_q = torch.nn.functional.logsigmoid(logit), torch.nn.functional.logsigmoid(-logit)
    neg_entropy = p * log_p + (1.0 - p) * log_q
    return weight_regularizer * weight_sq_sum / (1.0 - p) + dropout_regularizer * input_dim * (
        neg_entropy
    )
