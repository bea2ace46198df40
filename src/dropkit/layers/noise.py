"""Noise-based relatives of dropout: Gaussian dropout and alpha dropout."""

from __future__ import annotations

from torch import Tensor, nn

from dropkit import functional as F

__all__ = ["GaussianDropout", "AlphaDropout"]


class GaussianDropout(nn.Module):
    r"""Multiply by Gaussian noise :math:`\mathcal{N}(1, p/(1-p))` during training.

    .. math::
        y_{\text{train}} = x \odot \epsilon,\quad
        \epsilon_i \sim \mathcal{N}\!\left(1, \tfrac{p}{1-p}\right), \qquad y_{\text{eval}} = x

    Same mean and variance as the inverted-dropout factor :math:`m/(1-p)`, but
    continuous (Srivastava et al., 2014, sec. 10; Wang & Manning, "Fast
    dropout training", 2013). ``p`` is the drop rate it imitates, as Keras'
    ``GaussianDropout(rate)``; ``p = 1`` is rejected (infinite variance).

    Args:
        p: the equivalent drop probability, in ``[0, 1)``. Default: 0.5.

    Shape:
        - Input: :math:`(*)`. Output: :math:`(*)`, same shape.

    Examples::

        >>> m = dropkit.GaussianDropout(p=0.2)   # noise std sqrt(0.25) = 0.5
        >>> y = m(torch.randn(20, 16))
    """

    __constants__ = ["p"]

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        p = F._check_p(p)
        if p == 1.0:
            raise ValueError(
                "Invalid value received for argument `p`. GaussianDropout needs p < 1 "
                f"(its noise variance p/(1-p) is infinite at p=1). Received: p={p!r}"
            )
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.gaussian_dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class AlphaDropout(nn.Module):
    r"""Dropout for SELU networks: keeps mean 0 and variance 1.

    .. math::
        y = a\,\bigl(x \odot m + \alpha'(1-m)\bigr) + b,\quad
        a = \bigl((1-p)(1 + p\,\alpha'^2)\bigr)^{-1/2},\quad b = -a\,\alpha' p

    with :math:`\alpha' = -\lambda\alpha \approx -1.7581`, SELU's negative
    saturation value: dropped units go where SELU's inputs saturate instead
    of to 0, and the affine map restores zero mean and unit variance, which
    plain dropout would break. Identity in eval. Same semantics as
    ``torch.nn.AlphaDropout`` and Keras ``AlphaDropout``.

    Args:
        p: probability of an element to be dropped. Default: 0.5.

    Shape:
        - Input: :math:`(*)`. Output: :math:`(*)`, same shape.

    Examples::

        >>> net = nn.Sequential(nn.Linear(64, 64), nn.SELU(), dropkit.AlphaDropout(0.1))

    Reference: Klambauer et al., "Self-Normalizing Neural Networks", NeurIPS 2017.
    """

    __constants__ = ["p"]

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = F._check_p(p)

    def forward(self, x: Tensor) -> Tensor:
        return F.alpha_dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
