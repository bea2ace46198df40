"""Gaussian and alpha dropout: noise that keeps a layer's moments."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dropkit.engine import keyed
from dropkit.functional._checks import (
    _apply_mask,
    _call_keys,
    _check_input,
    _check_p,
    _check_seed,
    _keep_mask,
    _noise_dtype,
    _noise_generator,
)
from dropkit.functional.dropout import _feature_mask_shape

# SELU's saturation value -lambda * alpha (Klambauer et al., 2017): the value a
# SELU unit takes for x -> -inf, and so the value alpha dropout sets dropped
# units to (0 would shift SELU's mean and variance).
SELU_ALPHA_PRIME = -1.7580993408473766



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
    std = math.sqrt(p / (1.0 - p))
    if (keys := _call_keys(seed, x, 0, "gaussian_dropout")) is not None:
        def noisy(t: Tensor) -> Tensor:  # the noise regenerated from the keys, also in backward
            # one Philox word per element, through the inverse normal CDF (float64)
            u = keyed.keyed_uniform(t.shape, 0, keys, t.device)
            noise = torch.special.ndtri(u).to(_noise_dtype(t)).mul_(std).add_(1.0)
            return t * noise.to(t.dtype)

        return keyed.regenerated(x, noisy)
    gen = _noise_generator(seed, x.device)
    noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=_noise_dtype(x))
    noise = noise.mul_(std).add_(1.0).to(x.dtype)
    return x * noise


def _alpha_factors(keep: Tensor, a: float, alpha: float, p: float) -> tuple[Tensor, Tensor]:
    """``(a * keep, b)`` with ``y = a * keep * x + b`` (``keep``, 0/1 in x's dtype, is reused).

    torch's own sequence of ops (aten's ``_dropout_impl``), so that values, the
    output's memory layout and the gradient's follow torch exactly. Kept:
    ``a*x + a*alpha*p``; dropped: the constant ``a*(-alpha) + a*alpha*p``.
    """
    b = keep.add(-1).mul_(alpha * a).add_(alpha * a * p)
    return keep.mul_(a), b


def _alpha_dropout(x, p, training, inplace, seed, fn, feature):
    p = _check_p(p)
    _check_input(x, fn)
    seed = _check_seed(seed)
    if not training or p == 0.0 or x.numel() == 0:
        return x
    if p == 1.0:
        keep = torch.zeros((), dtype=torch.bool, device=x.device)
        return _apply_mask(x, keep, 0.0, inplace)
    a = ((1.0 - p) * (1.0 + p * SELU_ALPHA_PRIME**2)) ** -0.5
    alpha = -SELU_ALPHA_PRIME
    shape = _feature_mask_shape(x, False, fn) if feature else tuple(x.shape)
    if (keys := _call_keys(seed, x, 0, fn)) is not None:
        def factors(t: Tensor) -> tuple[Tensor, Tensor]:  # regenerated, also in backward
            keep = keyed.keyed_keep_mask(shape, 0, p, keys, t.device).to(t.dtype)
            return _alpha_factors(keep, a, alpha, p)

        out = keyed.regenerated(x, lambda t: t * factors(t)[0], lambda y: y + factors(y)[1])
        return x.copy_(out) if inplace else out
    # only the mask comes from the engine; the rest is torch's sequence
    noise, b = _alpha_factors(_keep_mask(shape, p, seed, x.device).to(x.dtype), a, alpha, p)
    if inplace:
        return x.mul_(noise).add_(b)
    return x * noise + b


def alpha_dropout(
    input: Tensor,
    p: float = 0.5,
    training: bool = False,
    inplace: bool = False,
    *,
    seed: int | None = None,
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

    The signature of ``torch.nn.functional.alpha_dropout``, whose ``training``
    defaults to ``False`` (unlike ``dropout``): pass ``training=True``.

    Reference: Klambauer et al., "Self-Normalizing Neural Networks", NeurIPS 2017.
    """
    return _alpha_dropout(input, p, training, inplace, seed, "alpha_dropout", feature=False)


def feature_alpha_dropout(
    input: Tensor,
    p: float = 0.5,
    training: bool = False,
    inplace: bool = False,
    *,
    seed: int | None = None,
) -> Tensor:
    r"""Alpha dropout of whole channels: one decision per (sample, channel).

    .. math::
        y_{n,c} = a\,\bigl(x_{n,c} m_{n,c} + \alpha'(1-m_{n,c})\bigr) + b

    with :math:`a, b, \alpha'` of :func:`alpha_dropout` and
    :math:`m_{n,c} \sim \mathrm{Bernoulli}(1-p)` broadcast over the dims after
    the channel. Input :math:`(N, C, *)`, at least 2D, as
    ``torch.nn.functional.feature_alpha_dropout`` (whose ``training`` also
    defaults to ``False``).
    """
    return _alpha_dropout(input, p, training, inplace, seed, "feature_alpha_dropout",
                          feature=True)
