"""DropPath (stochastic depth): drop a residual branch for whole samples.

Two spellings of one layer, each a drop-in for its peer: :class:`DropPath`
takes timm's arguments (``DropPath(0.1)``, ``DropPath(drop_prob=0.1,
scale_by_keep=True)``), :class:`StochasticDepth` torchvision's
(``StochasticDepth(0.1, "row")``). Both draw their masks from
:func:`dropkit.functional.drop_path`.
"""

from __future__ import annotations

import torch.fx
from torch import Tensor

from dropkit import functional as F
from dropkit.functional.droppath import drop_path
from dropkit.layers.base import DropoutLayer

# torch.fx (torchvision's feature extraction, FX quantisation) records the
# functional as one leaf node instead of tracing into its argument checks,
# which a Proxy would fail; torchvision wraps its stochastic_depth the same way.
torch.fx.wrap("drop_path")


class DropPath(DropoutLayer):
    r"""Drop a residual branch per sample: ``x + DropPath(p)(f(x))``.

    .. math::
        y_{n,\dots} = \frac{m_n}{1-p}\, x_{n,\dots}, \qquad m_n \sim \mathrm{Bernoulli}(1-p)

    (without the :math:`1/(1-p)` when ``scale_by_keep=False``). Eval mode and
    ``p=0`` return the input itself. Shape-agnostic: any input with the batch
    on dim 0. Give deeper blocks larger rates with
    :func:`dropkit.drop_path_rates`, as ViT and ConvNeXt do.

    A drop-in for ``timm.layers.DropPath(drop_prob=0.0, scale_by_keep=True)``:
    the first two arguments take the same positions, ``drop_prob=`` is
    accepted as a keyword, and ``m.drop_prob`` reads and sets ``m.p``.

    Args:
        p: probability of dropping the branch for a sample. Default: 0.
        scale_by_keep: rescale kept samples by :math:`1/(1-p)`. Default: ``True``.
        mode: ``"row"`` (one decision per sample, default) or ``"batch"``
            (one for the whole batch, as torchvision's ``StochasticDepth``).
        drop_prob: timm's name for ``p``; give one or the other.

    Shape:
        - Input: :math:`(B, *)`. Output: :math:`(B, *)`, same shape.

    Examples::

        >>> rates = dropkit.drop_path_rates(12, 0.1)
        >>> paths = [dropkit.DropPath(r) for r in rates]
        >>> y = x + paths[3](block(x))
        >>> dropkit.DropPath(drop_prob=0.1).drop_prob   # timm's spelling
        0.1

    Reference: Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016.
    """

    __constants__ = ["p", "scale_by_keep", "mode"]

    def __init__(
        self,
        p: float = 0.0,
        scale_by_keep: bool = True,
        *,
        mode: str = "row",
        drop_prob: float | None = None,
    ) -> None:
        super().__init__()
        if drop_prob is not None:
            # p's default stands for "not given": timm's callers name only drop_prob.
            if p != 0.0:
                raise TypeError(
                    f"{type(self).__name__}() got both `p` and `drop_prob` (the same argument, "
                    f"dropkit's and timm's name). Received: p={p!r}, drop_prob={drop_prob!r}"
                )
            self.p = F._check_p(drop_prob, "drop_prob")
        else:
            self.p = F._check_p(p)
        self.scale_by_keep = bool(scale_by_keep)
        self.mode = F._check_mode(mode)

    @property
    def drop_prob(self) -> float:
        """timm's name for :attr:`p`: one value, read and set through either name."""
        return self.p

    @drop_prob.setter
    def drop_prob(self, value: float) -> None:
        self.p = F._check_p(value, "drop_prob")

    @property
    def shares_mask_across_batch(self) -> bool:
        """``mode == "batch"``: one decision for the whole batch."""
        return self.mode == "batch"

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.p, self.training, scale_by_keep=self.scale_by_keep, mode=self.mode)

    def extra_repr(self) -> str:
        return f"p={self.p}, scale_by_keep={self.scale_by_keep}, mode={self.mode!r}"


class StochasticDepth(DropPath):
    r"""torchvision's ``StochasticDepth(p, mode)``: :class:`DropPath` with ``mode`` required.

    .. math::
        y_{n,\dots} = \frac{m_n}{1-p}\, x_{n,\dots}, \qquad m_n \sim \mathrm{Bernoulli}(1-p)

    with one :math:`m_n` per sample (``mode="row"``) or one :math:`m` shared
    by the whole batch (``mode="batch"``). ``p=1`` gives zeros; eval mode and
    ``p=0`` return the input itself. The arguments and errors of
    ``torchvision.ops.StochasticDepth`` (a ``ValueError`` for ``p`` outside
    ``[0, 1]`` or an unknown ``mode``, raised here at construction). A
    subclass of :class:`DropPath`, so ``isinstance`` checks and
    :mod:`dropkit.mc` treat it as one.

    Args:
        p: probability of zeroing a row (or the whole batch).
        mode: ``"row"`` or ``"batch"``.

    Shape:
        - Input: :math:`(N, *)`. Output: :math:`(N, *)`, same shape.

    Examples::

        >>> sd = dropkit.StochasticDepth(0.2, "row")
        >>> y = x + sd(block(x))

    Reference: Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016.
    """

    def __init__(self, p: float, mode: str) -> None:
        super().__init__(p, mode=mode)

    def extra_repr(self) -> str:
        extra = "" if self.scale_by_keep else ", scale_by_keep=False"
        return f"p={self.p}, mode={self.mode!r}{extra}"
