"""Fused residual patterns: ``residual + dropout(x + bias)`` and ``x + drop_path(branch(x))``.

Both compute exactly what their unfused spelling computes with the same seed
(the same masks, the same roundings) and differ only in the work they skip:
``bias_dropout_add`` makes one pass over memory instead of three (the
pattern after every attention and MLP projection of a transformer, Megatron-LM's
``bias_dropout_add``); ``residual_drop_path`` runs the branch only on the samples
drop path keeps, instead of computing a branch and multiplying it by zero.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from dropkit import engine
from dropkit.engine import keyed
from dropkit.functional._checks import (
    _call_keys,
    _check_input,
    _check_mode,
    _check_p,
    _check_seed,
    _keep_mask,
    _keep_scale,
)
from dropkit.functional.dropout import dropout
from dropkit.functional.droppath import _path_mask_shape


def bias_dropout_add(
    x: Tensor,
    bias: Tensor | None,
    residual: Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    seed: int | None = None,
) -> Tensor:
    r"""``residual + dropout(x + bias, p)`` in one pass over memory.

    .. math::
        y = r + \frac{m \odot (x + b)}{1-p}, \qquad m_i \sim \mathrm{Bernoulli}(1-p)

    in training, :math:`y = r + x + b` in eval. The same result, bit for bit,
    as ``residual + dk.dropout(x + bias, p)`` with the same seed (the mask is
    laid on ``x + bias``, and each step is rounded to the dtype where the
    sequence rounds it), and the same gradients: ``grad_x = m * grad / (1-p)``,
    ``grad_bias`` its sum over the broadcast dims, ``grad_residual = grad``.
    Nothing per element is saved for backward; the mask is regenerated.

    One pass for contiguous ``x`` and ``residual`` of one shape and dtype and
    a bias of that dtype broadcasting to ``x`` (``(d,)`` against ``(B, T, d)``
    is the case made for); other inputs run the unfused sequence, with the
    same result. Under ``torch.compile`` the sequence is traced (the compiler
    fuses the adds itself).

    Args:
        x: the output of a projection, before its bias (``x`` below).
        bias: broadcastable to ``x`` without growing it, or ``None``.
        residual: the skip connection, ``x``'s shape.
        p: probability of an element of ``x + bias`` to be zeroed. Default: 0.5.
        training: apply dropout if ``True``; otherwise ``residual + x + bias``.
        seed: fix the mask (offset 0 of the mask spec). ``None`` draws one seed
            from torch's default generator, as ``dk.dropout`` does.

    Shape:
        - x, residual: :math:`(*)`; bias: broadcastable to :math:`(*)`. Output: :math:`(*)`.

    Examples::

        >>> h = x @ w.T                       # a Linear without its bias
        >>> y = bias_dropout_add(h, b, x, p=0.1)   # = x + dropout(h + b, 0.1)

    Reference: Shoeybi et al., "Megatron-LM", 2019 (the fused ``bias_dropout_add``).
    """
    p = _check_p(p)
    _check_input(x, "bias_dropout_add")
    _check_input(residual, "bias_dropout_add")
    if bias is not None:
        _check_input(bias, "bias_dropout_add")
    seed = _check_seed(seed)
    # Inside dk.mask_keys the unfused sequence runs: dropout() keys its mask by
    # sample, step and call (the fused kernel knows only (seed, offset)).
    keyed_here = seed is None and keyed.active() is not None
    if not training or p == 0.0 or x.numel() == 0 or keyed_here:
        h = x if bias is None else x + bias
        return residual + dropout(h, p, training, seed=seed)
    return engine.bias_dropout_add(x, bias, residual, p, _keep_scale(p, rescale=True), seed)


def _batch_norms_in_training(branch: Callable[[Tensor], Tensor]) -> list[str]:
    """Names of the BatchNorm modules of ``branch`` in training mode (they mix samples)."""
    if not isinstance(branch, nn.Module):
        return []
    return [name or type(m).__name__ for name, m in branch.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]


def residual_drop_path(
    x: Tensor,
    branch: Callable[[Tensor], Tensor],
    p: float = 0.0,
    training: bool = True,
    *,
    scale_by_keep: bool = True,
    mode: str = "row",
    seed: int | None = None,
) -> Tensor:
    r"""``x + drop_path(branch(x), p)``, running ``branch`` only on the samples that are kept.

    With one keep variable per sample, :math:`m_n \sim \mathrm{Bernoulli}(1-p)`:

    .. math::
        y_n = x_n + \frac{m_n}{1-p}\, f(x_n)

    (without the :math:`1/(1-p)` when ``scale_by_keep=False``). The kept rows
    are gathered (``index_select``), the branch runs on them alone, and they
    are written into a copy of ``x`` (``index_copy``); dropped rows are
    ``x + 0``. At rate ``p`` the branch's forward and backward cost about
    ``1 - p`` of the multiply-by-zero spelling; nothing is written into ``x``.

    The mask and scale are exactly :func:`drop_path`'s: with the same seed
    (``torch.manual_seed`` before each), the result equals
    ``x + drop_path(branch(x), p)`` bit for bit when the branch treats rows
    independently and computes a row the same way in any batch (element-wise
    ops, LayerNorm, Linear on this machine's BLAS). Eval mode and ``p=0`` give
    ``x + branch(x)``, drawing nothing. Inside :class:`dropkit.mask_keys` the
    decisions are keyed by sample exactly as :func:`drop_path`'s are.

    Precondition: ``branch`` treats the samples (dim 0) independently. A
    BatchNorm in training mode mixes them (its batch statistics would be taken
    over the kept rows only) and is refused with a ``ValueError``; other
    cross-sample operations cannot be detected and are the caller's to avoid.
    Random layers inside the branch (dropout) see only the kept rows, so they
    draw other masks than in the unfused spelling (from the same distribution).

    When no sample is kept (always at ``p=1``), ``branch`` is not run: its
    parameters get no gradient from this call (``None`` rather than zeros, so
    an optimizer skips them; ``DistributedDataParallel`` then needs
    ``find_unused_parameters=True``). Gathering the kept rows needs their
    count (``nonzero``), a device synchronisation on a GPU and a graph break
    under ``torch.compile``.

    Args:
        x: input of the residual block, batch on dim 0.
        branch: the residual branch, a callable from ``x``'s rows to rows of
            the same shape (an ``nn.Module`` is checked for BatchNorm).
        p: probability of dropping the branch for a sample. Default: 0.
        training: apply only in training; eval returns ``x + branch(x)``.
        scale_by_keep: divide kept samples by ``1 - p``.
        mode: ``"row"`` (one decision per sample) or ``"batch"`` (one for the batch).
        seed: fix the decision(s); ``None`` draws from torch's generator.

    Shape:
        - Input: :math:`(B, *)`. Output: :math:`(B, *)`, same shape.

    Examples::

        >>> mlp = nn.Sequential(nn.LayerNorm(384), nn.Linear(384, 1536), nn.GELU(),
        ...                     nn.Linear(1536, 384))
        >>> y = residual_drop_path(x, mlp, p=0.1)   # = x + drop_path(mlp(x), 0.1)

    Reference: Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016
    (which skips the dropped blocks' computation, as this does per sample).
    """
    p = _check_p(p)
    _check_input(x, "residual_drop_path")
    seed = _check_seed(seed)
    _check_mode(mode)
    if not training or p == 0.0:
        return x + branch(x)
    norms = _batch_norms_in_training(branch)
    if norms:
        raise ValueError(
            "residual_drop_path() runs the branch on the kept samples only, so the branch must "
            "treat samples independently; received a branch with BatchNorm in training mode "
            f"({', '.join(norms)}), whose batch statistics would change. Use "
            "x + drop_path(branch(x), p) for this branch, or a per-sample norm (LayerNorm, "
            "GroupNorm)."
        )
    # drop_path's mask, drawn the same way (keyed by sample inside dk.mask_keys)
    mask_shape = _path_mask_shape(x, mode)
    row = mode == "row" and x.ndim > 0  # as drop_path
    keys = _call_keys(seed, x, 0 if row else None, "residual_drop_path",
                      shared_reason=f"mode={mode!r} draws one decision for the whole batch, "
                      "not one per sample.")
    if keys is not None:
        keep = keyed.keyed_keep_mask(mask_shape, 0 if row else None, p, keys, x.device)
    else:
        keep = _keep_mask(mask_shape, p, seed, x.device)
    keep = keep.reshape(-1)
    scale = _keep_scale(p, rescale=scale_by_keep)
    unscaled = scale == 1.0

    def scaled_branch(rows: Tensor) -> Tensor:
        out = branch(rows)
        if out.shape != rows.shape:
            raise ValueError(
                f"residual_drop_path() needs a branch that keeps the shape of its input; "
                f"received {tuple(out.shape)} for an input of {tuple(rows.shape)}"
            )
        # the same product as drop_path's where(keep, f(x) * scale, 0)
        return out if unscaled else out * scale

    kept = torch.nonzero(keep).reshape(-1)
    if kept.numel() == keep.numel():  # every row kept (or the batch, in "batch" mode)
        return x + scaled_branch(x)
    base = x + 0.0  # a dropped row is x + 0 in drop_path's spelling (-0.0 becomes +0.0)
    if kept.numel() == 0:
        return base
    rows = x.index_select(0, kept)
    update = rows + scaled_branch(rows)
    if update.dtype != base.dtype:  # a branch in a wider dtype promotes the sum, as x + f(x) does
        base = base.to(update.dtype)
    # in place on our own fresh tensor: a torch op, recorded by autograd
    return base.index_copy_(0, kept, update)
