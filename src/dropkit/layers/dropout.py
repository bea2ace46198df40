"""Element-wise and channel dropout: thin ``nn.Module`` holders of
:func:`dropkit.functional.dropout` and its channel variants.

Drop-in replacements for ``torch.nn.Dropout`` / ``Dropout1d/2d/3d``: each is
a *subclass* of torch's class (so ``isinstance(m, nn.Dropout)`` finds it), and of
:class:`~dropkit.layers.DropoutLayer` after it, with
the same constructor, accepted shapes, warnings, errors and train/eval
semantics; the masks come from dropkit's Philox mask engine, and backward
keeps no mask alive. dropkit's extras (``inverted``) are keyword-only.
"""

from __future__ import annotations

from torch import Tensor, nn

from dropkit import functional as F
from dropkit.layers.base import DropoutLayer


class Dropout(nn.Dropout, DropoutLayer):
    r"""Zero each element with probability ``p`` during training.

    .. math::
        \text{inverted (default):}\quad y_{\text{train}} = \frac{x \odot m}{1-p},
            \quad y_{\text{eval}} = x
        \qquad
        \text{classic:}\quad y_{\text{train}} = x \odot m,\quad y_{\text{eval}} = (1-p)\,x

    with :math:`m_i \sim \mathrm{Bernoulli}(1-p)` drawn afresh on every call.
    Scale at train time *or* at test time, never both.

    Args:
        p: probability of an element to be zeroed. Default: 0.5.
        inplace: do the operation in place. Default: ``False``.
        inverted: ``True`` (default) scales kept units by :math:`1/(1-p)` in
            training; ``False`` is the formulation of the original paper,
            which scales by :math:`1-p` at test time instead.

    Shape:
        - Input: :math:`(*)`. Output: :math:`(*)`, same shape as the input.

    Examples::

        >>> m = dropkit.Dropout(p=0.2)
        >>> y = m(torch.randn(20, 16))
        >>> m.eval(); torch.equal(m(x), x)
        True

    Reference: Srivastava et al., "Dropout: A Simple Way to Prevent Neural
    Networks from Overfitting", JMLR 2014.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, inverted: bool = True) -> None:
        super().__init__(F._check_p(p), bool(inplace))
        self.inverted = bool(inverted)

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout(input, self.p, self.training, self.inplace, inverted=self.inverted)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, inverted={self.inverted}"


class Dropout1d(nn.Dropout1d, DropoutLayer):
    r"""Zero whole channels of a 1D signal: :math:`y_{n,c,:} = m_{n,c}\,x_{n,c,:}/(1-p)`.

    Adjacent positions of a conv feature map are strongly correlated, so
    element-wise dropout barely regularises them; dropping whole channels does
    (Tompson et al., "Efficient Object Localization Using Convolutional
    Networks", 2015).

    Args:
        p: probability of a channel to be zeroed. Default: 0.5.
        inplace: do the operation in place. Default: ``False``.

    Shape:
        - Input: :math:`(N, C, L)` or :math:`(C, L)`. Output: same shape.

    Examples::

        >>> m = dropkit.Dropout1d(p=0.2)
        >>> y = m(torch.randn(20, 16, 32))
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__(F._check_p(p), bool(inplace))

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout1d(input, self.p, self.training, self.inplace)


class Dropout2d(nn.Dropout2d, DropoutLayer):
    r"""Zero whole channels of a 2D map: :math:`y_{n,c,:,:} = m_{n,c}\,x_{n,c,:,:}/(1-p)`.

    Args:
        p: probability of a channel to be zeroed. Default: 0.5.
        inplace: do the operation in place. Default: ``False``.

    Shape:
        - Input: :math:`(N, C, H, W)` or :math:`(C, H, W)`. Output: same shape.

    Examples::

        >>> m = dropkit.Dropout2d(p=0.2)
        >>> y = m(torch.randn(20, 16, 32, 32))

    Reference: Tompson et al., 2015 (SpatialDropout).
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__(F._check_p(p), bool(inplace))

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout2d(input, self.p, self.training, self.inplace)


class Dropout3d(nn.Dropout3d, DropoutLayer):
    r"""Zero whole channels of a 3D volume: :math:`y_{n,c} = m_{n,c}\,x_{n,c}/(1-p)`.

    Args:
        p: probability of a channel to be zeroed. Default: 0.5.
        inplace: do the operation in place. Default: ``False``.

    Shape:
        - Input: :math:`(N, C, D, H, W)` or :math:`(C, D, H, W)`. Output: same shape.

    Examples::

        >>> m = dropkit.Dropout3d(p=0.2)
        >>> y = m(torch.randn(4, 16, 8, 8, 8))
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__(F._check_p(p), bool(inplace))

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout3d(input, self.p, self.training, self.inplace)
