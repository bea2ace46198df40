"""Concrete dropout: a drop rate learned by gradient descent."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from dropkit import functional as F
from dropkit.layers.base import DropoutLayer

__all__ = ["ConcreteDropout", "concrete_regularization"]


def _check_positive(value: float, name: str, allow_zero: bool = True) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(
            f"Invalid value received for argument `{name}`. Expected a {kind} float. "
            f"Received: {name}={value!r}"
        )
    return float(value)


class ConcreteDropout(DropoutLayer):
    r"""Dropout whose rate :math:`p = \sigma(\ell)` is a parameter, learned with the model.

    .. math::
        z = \sigma\!\left(\frac{\ell + \log u - \log(1-u)}{t}\right),\quad u \sim U(0,1),
        \qquad y_{\text{train}} = \frac{x \odot (1-z)}{1-p}, \qquad y_{\text{eval}} = x

    The relaxed Bernoulli :math:`z` makes the output differentiable in
    :math:`\ell`. On its own the data loss would drive ``p`` to 0; add
    :meth:`regularization` (or :func:`concrete_regularization` of the whole
    model) to the loss:

    .. math::
        R = \lambda_w \frac{\lVert W \rVert^2}{1-p}
            + \lambda_p K \bigl(p\log p + (1-p)\log(1-p)\bigr)

    with :math:`W` the weights of the wrapped ``layer`` (if any) and :math:`K`
    the number of features of the last input. Set
    :math:`\lambda_w = l^2/N`, :math:`\lambda_p = 2/N` for :math:`N` training
    points (the paper's regression set-up).

    Args:
        p_init: initial drop probability, in ``(0, 1)``. Default: 0.1.
        temperature: of the relaxation; small is closer to Bernoulli. Default: 0.1.
        weight_regularizer: :math:`\lambda_w`. Default: 1e-6.
        dropout_regularizer: :math:`\lambda_p`. Default: 1e-5.
        layer: optional module applied after the dropout, whose ``*weight``
            parameters enter :math:`R` (as the reference Keras wrapper).

    Shape:
        - Input: :math:`(N, *)`. Output: :math:`(N, *)`, or ``layer``'s output.

    Examples::

        >>> cd = dropkit.ConcreteDropout(p_init=0.1, layer=nn.Linear(64, 64))
        >>> loss = criterion(head(cd(x)), y) + dropkit.concrete_regularization(model)
        >>> cd.p        # the current drop rate, a float

    Reference: Gal, Hron & Kendall, "Concrete Dropout", NeurIPS 2017.
    """

    def __init__(
        self,
        p_init: float = 0.1,
        *,
        temperature: float = 0.1,
        weight_regularizer: float = 1e-6,
        dropout_regularizer: float = 1e-5,
        layer: nn.Module | None = None,
    ) -> None:
        super().__init__()
        p_init = F._check_p(p_init, "p_init")
        if not 0.0 < p_init < 1.0:
            raise ValueError(
                "Invalid value received for argument `p_init`. Expected a float strictly "
                f"between 0 and 1 (its logit must be finite). Received: p_init={p_init!r}"
            )
        self.temperature = _check_positive(temperature, "temperature", allow_zero=False)
        self.weight_regularizer = _check_positive(weight_regularizer, "weight_regularizer")
        self.dropout_regularizer = _check_positive(dropout_regularizer, "dropout_regularizer")
        if layer is not None and not isinstance(layer, nn.Module):
            raise TypeError(
                "Invalid type received for argument `layer`. Expected an nn.Module or None. "
                f"Received: {type(layer).__name__}"
            )
        self.p_logit = nn.Parameter(torch.tensor(math.log(p_init) - math.log1p(-p_init)))
        self.layer = layer
        self.input_dim: int | None = None

    @property
    def p(self) -> float:
        """The current drop probability :math:`\\sigma(\\ell)`."""
        return float(torch.sigmoid(self.p_logit.detach()))

    def forward(self, x: Tensor) -> Tensor:
        # K, the number of dropped features per sample (input_shape[1:] in the
        # reference implementation).
        self.input_dim = math.prod(x.shape[1:]) if x.ndim > 1 else x.numel()
        y = F.concrete_dropout(x, self.p_logit, self.temperature, self.training)
        return y if self.layer is None else self.layer(y)

    def regularization(self) -> Tensor:
        """The term :math:`R` to add to the loss (needs one forward pass for :math:`K`)."""
        if self.input_dim is None:
            raise RuntimeError(
                "ConcreteDropout.regularization() needs the input size: call the module on "
                "a batch first."
            )
        weight_sq_sum: Tensor | float = 0.0
        if self.layer is not None:
            weight_sq_sum = sum(
                (w.pow(2).sum() for n, w in self.layer.named_parameters() if n.endswith("weight")),
                torch.zeros((), device=self.p_logit.device),
            )
        return F.concrete_dropout_regularizer(
            self.p_logit,
            self.input_dim,
            weight_sq_sum,
            self.weight_regularizer,
            self.dropout_regularizer,
        )

    def extra_repr(self) -> str:
        return (
            f"p={self.p:.4g}, temperature={self.temperature}, "
            f"weight_regularizer={self.weight_regularizer}, "
            f"dropout_regularizer={self.dropout_regularizer}"
        )


def concrete_regularization(model: nn.Module) -> Tensor:
    """The sum of :meth:`ConcreteDropout.regularization` over every such layer of ``model``."""
    terms = [m.regularization() for m in model.modules() if isinstance(m, ConcreteDropout)]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()
