"""Dropout for sequences and embeddings: locked (variational) and embedding dropout."""

from __future__ import annotations

import torch
from torch import Tensor

from dropkit import engine
from dropkit.engine import keyed
from dropkit.functional._checks import (
    _apply_mask,
    _call_keys,
    _check_input,
    _check_p,
    _check_seed,
    _keep_mask,
    _keep_scale,
    _keyed_mask_apply,
)


def locked_dropout(
    x: Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    batch_first: bool = False,
    seed: int | None = None,
) -> Tensor:
    r"""Variational dropout for sequences: one mask per sequence, shared over time.

    .. math::
        y_{t,n,h} = \frac{m_{n,h}}{1-p}\,x_{t,n,h}, \qquad m_{n,h} \sim \mathrm{Bernoulli}(1-p)

    The same units are dropped at every time step, so the recurrence cannot
    average the noise away (Gal & Ghahramani, 2016; the ``LockedDropout`` of
    AWD-LSTM, Merity et al., 2018).

    Args:
        x: :math:`(T, N, H)`, or :math:`(N, T, H)` with ``batch_first=True``,
            or an unbatched :math:`(T, H)`.
        batch_first: the layout of a 3D input.
    """
    p = _check_p(p)
    _check_input(x, "locked_dropout")
    seed = _check_seed(seed)
    if x.ndim not in (2, 3):
        raise ValueError(
            "locked_dropout() expects a 3D input (T, N, H) (or (N, T, H) with batch_first=True) "
            f"or an unbatched 2D input (T, H); received a {x.ndim}D input of shape "
            f"{tuple(x.shape)}"
        )
    if not training or p == 0.0:
        return x
    time_dim = 1 if (batch_first and x.ndim == 3) else 0
    mask_shape = list(x.shape)
    mask_shape[time_dim] = 1
    # keyed: a sample's mask is its H units, locked over time; the batch is
    # dim 1 of a time-major (T, N, H) input, as for nn.LSTM
    batch_dim = 0 if batch_first else 1
    if (keys := _call_keys(seed, x, batch_dim, "locked_dropout", x.ndim == 2)) is not None:
        return _keyed_mask_apply(x, tuple(mask_shape), batch_dim, p,
                                 _keep_scale(p, rescale=True), keys, inplace=False)
    keep = _keep_mask(tuple(mask_shape), p, seed, x.device)
    return _apply_mask(x, keep, _keep_scale(p, rescale=True), inplace=False)


def embedding_dropout(
    input: Tensor,
    weight: Tensor,
    p: float = 0.1,
    training: bool = True,
    *,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
    seed: int | None = None,
) -> Tensor:
    r"""Look up ``input`` in ``weight`` after dropping whole rows (words).

    .. math::
        y_{\dots} = \frac{m_{w}}{1-p}\,W_{w}, \quad w = \text{input}_{\dots},
        \qquad m_w \sim \mathrm{Bernoulli}(1-p) \text{ per vocabulary row}

    One decision per word *type* for the call, so every occurrence of a word
    in the batch is dropped together (Gal & Ghahramani, 2016; AWD-LSTM's
    ``embedded_dropout``). Equivalent to masking the rows of ``weight`` and
    looking up, but masks only the looked-up vectors, so no masked copy of a
    large vocabulary matrix is made. Other arguments as
    :func:`torch.nn.functional.embedding`.
    """
    p = _check_p(p)
    _check_input(weight, "embedding_dropout")
    seed = _check_seed(seed)
    if not isinstance(input, Tensor) or input.is_floating_point() or input.dtype == torch.bool:
        got = input.dtype if isinstance(input, Tensor) else type(input).__name__
        raise TypeError(
            f"embedding_dropout() expects integer indices as `input`; received {got}"
        )
    if weight.ndim != 2:
        raise ValueError(
            "embedding_dropout() expects a 2D `weight` (num_embeddings, embedding_dim); "
            f"received shape {tuple(weight.shape)}"
        )
    out = torch.nn.functional.embedding(
        input, weight, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse
    )
    if not training or p == 0.0:
        return out
    keys = _call_keys(seed, weight, None, "embedding_dropout", shared_reason=(
        "its mask is over the vocabulary (one decision per word, shared by every sample "
        "that uses the word), not over a sample's elements."))
    if keys is not None:
        keep_rows = keyed.keyed_keep_mask((weight.shape[0],), None, p, keys, weight.device)
    else:
        keep_rows = _keep_mask((weight.shape[0],), p, seed, weight.device)
    keep = keep_rows[input].unsqueeze(-1)
    return _apply_mask(out, keep, _keep_scale(p, rescale=True), inplace=False)


def _drop_weight(weight: Tensor, p: float, fn: str = "WeightDrop") -> Tensor:
    """``dropout(weight, p)`` for :class:`~dropkit.WeightDrop`; keyed as one whole tensor.

    A weight mask is shared by every sample of the batch, so per-sample keys
    refuse it; a single shared id (``dk.mc.predict(consistent=True)``) keys it.
    """
    p = _check_p(p)  # the one check: the engine takes the rate as given
    if p == 0.0:
        return weight
    scale = _keep_scale(p, rescale=True)
    keys = _call_keys(None, weight, None, fn, shared_reason=(
        "its mask is on weights shared by the whole batch (DropConnect), so it cannot be a "
        "function of a sample's id."))
    if keys is None:  # as dk.dropout: an empty weight is returned itself
        return weight if weight.numel() == 0 else engine.dropout(weight, p, scale)
    return keyed.keyed_dropout(weight, p, scale, keys, batch_dim=None)
