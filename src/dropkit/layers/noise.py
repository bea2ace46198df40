"""Noise-based relatives of dropout: Gaussian dropout and alpha dropout."""

from __future__ import annotations

from torch import Tensor, nn

from dropkit import functional as F
from dropkit.layers.base import DropoutLayer

__all__ = ["GaussianDropout", "AlphaDropout", "FeatureAlphaDropout"]


class GaussianDropout(DropoutLayer):
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


class AlphaDropout(nn.AlphaDropout, DropoutLayer):
    r"""Dropout for SELU networks: keeps mean 0 and variance 1.

    .. math::
        y = a\,\bigl(x \odot m + \alpha'(1-m)\bigr) + b,\quad
        a = \bigl((1-p)(1 + p\,\alpha'^2)\bigr)^{-1/2},\quad b = -a\,\alpha' p

    with :math:`\alpha' = -\lambda\alpha \approx -1.7581`, SELU's negative
    saturation value: dropped units go where SELU's inputs saturate instead
    of to 0, and the affine map restores zero mean and unit variance, which
    plain dropout would break. Identity in eval. Same semantics as
    ``torch.nn.AlphaDropout`` and Keras ``AlphaDropout``.

    A subclass of ``torch.nn.AlphaDropout``, with its constructor.

    Args:
        p: probability of an element to be dropped. Default: 0.5.
        inplace: do the operation in place. Default: ``False``.

    Shape:
        - Input: :math:`(*)`. Output: :math:`(*)`, same shape.

    Examples::

        >>> net = nn.Sequential(nn.Linear(64, 64), nn.SELU(), dropkit.AlphaDropout(0.1))

    Reference: Klambauer et al., "Self-Normalizing Neural Networks", NeurIPS 2017.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__(F._check_p(p), bool(inplace))

    def forward(self, input: Tensor) -> Tensor:
        return F.alpha_dropout(input, self.p, self.training, self.inplace)


class FeatureAlphaDropout(nn.FeatureAlphaDropout, DropoutLayer):
    r"""Alpha dropout of whole channels, for SELU conv networks.

    .. math::
        y_{n,c} = a\,\bigl(x_{n,c} m_{n,c} + \alpha'(1-m_{n,c})\bigr) + b,
        \qquad m_{n,c} \sim \mathrm{Bernoulli}(1-p)

    with :math:`a, b, \alpha'` of :class:`AlphaDropout`: a dropped channel is
    set to SELU's saturation value and the affine map keeps mean 0 and
    variance 1. Identity in eval. A subclass of ``torch.nn.FeatureAlphaDropout``.

    Args:
        p: probability of a channel to be dropped. Default: 0.5.
        inplace: do the operation in place. Default: ``False``.

    Shape:
        - Input: :math:`(N, C, *)`. Output: same shape.

    Examples::

        >>> m = dropkit.FeatureAlphaDropout(0.2)
        >>> y = m(torch.randn(20, 16, 4, 32, 32))

    Reference: Klambauer et al., "Self-Normalizing Neural Networks", NeurIPS 2017.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__(F._check_p(p), bool(inplace))

    def forward(self, input: Tensor) -> Tensor:
        return F.feature_alpha_dropout(input, self.p, self.training, self.inplace)
