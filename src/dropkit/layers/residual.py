"""Fused residual blocks: drop path that skips the dropped samples' branch, bias-dropout-add.

Holders of :func:`dropkit.functional.residual_drop_path` and
:func:`dropkit.functional.bias_dropout_add`. :class:`ResidualDropPath` is not a
:class:`~dropkit.DropPath` subclass on purpose: it returns ``x + f(x)``, not a
dropped branch, and code that swaps every ``DropPath`` for ``nn.Identity``
(export, inference) would silently delete the branch.
"""

from __future__ import annotations

from torch import Tensor, nn

from dropkit import functional as F
from dropkit.functional.fused import (
    _batch_norms_in_training,
    bias_dropout_add,
    residual_drop_path,
)
from dropkit.layers.base import DropoutLayer


class ResidualDropPath(DropoutLayer):
    r"""A residual block with drop path, ``x + drop_path(branch(x), p)``, that runs ``branch``
    only on the samples it keeps.

    .. math::
        y_n = x_n + \frac{m_n}{1-p}\, f(x_n), \qquad m_n \sim \mathrm{Bernoulli}(1-p)

    (without the :math:`1/(1-p)` when ``scale_by_keep=False``); eval mode and
    ``p=0`` give ``x + f(x)``. The mask and scale are :class:`DropPath`'s, so
    with the same seed the output equals ``x + DropPath(p)(branch(x))`` bit
    for bit for a row-wise branch, while the branch's forward and backward
    cost about ``1 - p`` of it. When no sample is kept (``p=1``) the branch
    is not run and its parameters get no gradient (``None``) from the call.

    **Precondition**: ``branch`` treats samples (dim 0) independently, as the
    MLP and attention blocks of a transformer or a ConvNeXt block do. A
    BatchNorm in training mode inside it is refused (``ValueError``), here and
    at each training forward; other cross-sample operations cannot be seen
    and are the caller's to avoid. See :func:`dropkit.functional.residual_drop_path`.

    Args:
        branch: the residual branch, an ``nn.Module`` keeping its input's shape.
        p: probability of dropping the branch for a sample. Default: 0.
        scale_by_keep: rescale kept samples by :math:`1/(1-p)`. Default: ``True``.
        mode: ``"row"`` (one decision per sample, default) or ``"batch"``.

    Shape:
        - Input: :math:`(B, *)`. Output: :math:`(B, *)`, same shape.

    Examples::

        >>> rates = dropkit.drop_path_rates(12, 0.1)
        >>> blocks = nn.Sequential(*(dropkit.ResidualDropPath(Mlp(384), r) for r in rates))
        >>> y = blocks(x)

    Reference: Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016.
    """

    __constants__ = ["p", "scale_by_keep", "mode"]

    def __init__(self, branch: nn.Module, p: float = 0.0, scale_by_keep: bool = True, *,
                 mode: str = "row") -> None:
        super().__init__()
        if not isinstance(branch, nn.Module):
            raise TypeError(
                f"Invalid type received for argument `branch`. Expected an nn.Module (the "
                f"residual branch). Received: {type(branch).__name__}"
            )
        norms = _batch_norms_in_training(branch)
        if norms:
            raise ValueError(
                "ResidualDropPath runs `branch` on the kept samples only, so it must treat "
                f"samples independently; received a branch with BatchNorm ({', '.join(norms)}), "
                "whose batch statistics would change. Use x + DropPath(p)(branch(x)) for it, "
                "or a per-sample norm (LayerNorm, GroupNorm)."
            )
        self.branch = branch
        self.p = F._check_p(p)
        self.scale_by_keep = bool(scale_by_keep)
        self.mode = F._check_mode(mode)

    @property
    def shares_mask_across_batch(self) -> bool:
        """``mode == "batch"``: one decision for the whole batch."""
        return self.mode == "batch"

    def forward(self, x: Tensor) -> Tensor:
        return residual_drop_path(x, self.branch, self.p, self.training,
                                  scale_by_keep=self.scale_by_keep, mode=self.mode)

    def extra_repr(self) -> str:
        return f"p={self.p}, scale_by_keep={self.scale_by_keep}, mode={self.mode!r}"


class BiasDropoutAdd(DropoutLayer):
    r"""``residual + dropout(x + bias, p)`` in one pass over memory (Megatron-LM's pattern).

    .. math::
        y = r + \frac{m \odot (x + b)}{1-p}, \qquad m_i \sim \mathrm{Bernoulli}(1-p)

    in training, :math:`r + x + b` in eval; bit for bit what
    ``residual + dk.dropout(x + bias, p)`` gives with the same seed, with
    nothing per element kept for backward. See
    :func:`dropkit.functional.bias_dropout_add`.

    Args:
        p: probability of an element to be zeroed. Default: 0.5.

    Shape:
        - ``forward(x, bias, residual)``: x and residual :math:`(*)`, bias
          broadcastable to them (or ``None``). Output: :math:`(*)`.

    Examples::

        >>> bda = dropkit.BiasDropoutAdd(0.1)
        >>> proj = nn.Linear(384, 384, bias=False)
        >>> y = bda(proj(h), bias, x)
    """

    __constants__ = ["p"]

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = F._check_p(p)

    def forward(self, x: Tensor, bias: Tensor | None, residual: Tensor) -> Tensor:
        return bias_dropout_add(x, bias, residual, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
