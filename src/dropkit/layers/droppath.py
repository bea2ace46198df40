"""DropPath (stochastic depth): drop a residual branch for whole samples."""

from __future__ import annotations

from torch import Tensor, nn

from dropkit import functional as F


class DropPath(nn.Module):
    r"""Drop a residual branch per sample: ``x + DropPath(p)(f(x))``.

    .. math::
        y_{n,\dots} = \frac{m_n}{1-p}\, x_{n,\dots}, \qquad m_n \sim \mathrm{Bernoulli}(1-p)

    (without the :math:`1/(1-p)` when ``scale_by_keep=False``). Identity in
    eval mode. Shape-agnostic: any input with the batch on dim 0. Give deeper
    blocks larger rates with :func:`dropkit.drop_path_rates`, as ViT and
    ConvNeXt do.

    Args:
        p: probability of dropping the branch for a sample. Default: 0.
        scale_by_keep: rescale kept samples by :math:`1/(1-p)`. Default: ``True``.
        mode: ``"row"`` (one decision per sample, default) or ``"batch"``
            (one for the whole batch, as torchvision's ``StochasticDepth``).

    Shape:
        - Input: :math:`(B, *)`. Output: :math:`(B, *)`, same shape.

    Examples::

        >>> rates = dropkit.drop_path_rates(12, 0.1)
        >>> paths = [dropkit.DropPath(r) for r in rates]
        >>> y = x + paths[3](block(x))

    Reference: Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016.
    """

    __constants__ = ["p", "scale_by_keep", "mode"]

    def __init__(self, p: float = 0.0, *, scale_by_keep: bool = True, mode: str = "row") -> None:
        super().__init__()
        self.p = F._check_p(p)
        self.scale_by_keep = bool(scale_by_keep)
        self.mode = F._check_mode(mode)

    def forward(self, x: Tensor) -> Tensor:
        return F.drop_path(
            x, self.p, self.training, scale_by_keep=self.scale_by_keep, mode=self.mode
        )

    def extra_repr(self) -> str:
        return f"p={self.p}, scale_by_keep={self.scale_by_keep}, mode={self.mode!r}"


# torchvision's name for the same idea.
StochasticDepth = DropPath
