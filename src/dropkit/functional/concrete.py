"""Concrete dropout: a learnable drop rate through the relaxed Bernoulli."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from dropkit.engine import keyed
from dropkit.functional._checks import (
    _call_keys,
    _check_input,
    _check_seed,
    _noise_dtype,
    _noise_generator,
)


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
    dtype = _noise_dtype(x, p_logit)
    if (keys := _call_keys(seed, x, 0, "concrete_dropout")) is not None:
        u = keyed.keyed_uniform(x.shape, 0, keys, x.device).to(dtype)  # one word per element
    else:
        gen = _noise_generator(seed, x.device)
        u = torch.rand(x.shape, generator=gen, device=x.device, dtype=dtype)
    # keep log(u) and log(1-u) finite: u is drawn from [0, 1).
    eps = 1e-7 if dtype == torch.float32 else 1e-12
    u = u.clamp_(eps, 1.0 - eps)
    logit = p_logit.to(dtype).reshape(())
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
