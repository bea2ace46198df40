"""Drop path / stochastic depth, and the linear depth schedule of its rates."""

from __future__ import annotations

import numbers

from torch import Tensor

from dropkit.functional._checks import (
    _apply_mask,
    _call_keys,
    _check_input,
    _check_mode,
    _check_p,
    _check_seed,
    _keep_mask,
    _keep_scale,
    _keyed_mask_apply,
)


def _path_mask_shape(x: Tensor, mode: str) -> tuple[int, ...]:
    """The shape of drop path's keep mask: ``(B, 1, 1, ...)`` in ``"row"`` mode, ``(1, ...)``
    (one decision for the whole batch) in ``"batch"`` mode or for a 0-dim ``x``.

    Shape-agnostic: ``(B, 1, 1, ...)`` broadcasts one decision over every
    non-batch dim, whatever the layout (tokens, channels, pixels).
    """
    if mode == "row" and x.ndim > 0:
        return (x.shape[0],) + (1,) * (x.ndim - 1)
    return (1,) * x.ndim


def drop_path(
    x: Tensor,
    p: float = 0.0,
    training: bool = True,
    *,
    scale_by_keep: bool = True,
    mode: str = "row",
    seed: int | None = None,
) -> Tensor:
    r"""Drop whole samples of a residual branch (stochastic depth).

    Apply to the *branch*, before it is added back: ``x + drop_path(f(x), p)``.
    With one keep variable per sample, :math:`m_n \sim \mathrm{Bernoulli}(1-p)`:

    .. math::
        y_{n,\dots} = \frac{m_n}{1-p}\, x_{n,\dots} \quad (\texttt{scale\_by\_keep=True}),
        \qquad y_{n,\dots} = m_n\, x_{n,\dots} \quad \text{otherwise}.

    "Drop path" rather than "drop connect": DropConnect (Wan et al., 2013)
    drops *weights*; this drops a whole path through the network for a sample,
    as in FractalNet and stochastic depth (Huang et al., 2016). The name
    follows timm.

    Args:
        x: branch output, any shape with the batch on dim 0 (e.g. ViT tokens
            ``(B, 197, C)`` or conv maps ``(B, C, H, W)``).
        p: probability of dropping the branch for a sample. Default: 0.
        training: apply only in training; eval returns ``x``.
        scale_by_keep: divide kept samples by ``1 - p`` (keeps the mean).
        mode: ``"row"`` draws one decision per sample (timm); ``"batch"`` one
            for the whole batch (torchvision's ``StochasticDepth(mode="batch")``).
        seed: fix the decision(s); ``None`` draws from torch's generator.

    Examples::

        >>> branch = torch.randn(8, 197, 384)
        >>> y = drop_path(branch, p=0.1)   # each of the 8 samples kept or zeroed
    """
    p = _check_p(p)
    _check_input(x, "drop_path")
    seed = _check_seed(seed)
    _check_mode(mode)
    if not training or p == 0.0:
        return x
    mask_shape = _path_mask_shape(x, mode)
    row = mode == "row" and x.ndim > 0
    keys = _call_keys(seed, x, 0 if row else None, "drop_path",
                      shared_reason=f"mode={mode!r} draws one decision for the whole batch, "
                      "not one per sample.")
    if keys is not None:  # a sample's mask: its one decision
        return _keyed_mask_apply(x, mask_shape, 0 if row else None, p,
                                 _keep_scale(p, rescale=scale_by_keep), keys, inplace=False)
    keep = _keep_mask(mask_shape, p, seed, x.device)
    return _apply_mask(x, keep, _keep_scale(p, rescale=scale_by_keep), inplace=False)


def stochastic_depth(input: Tensor, p: float, mode: str, training: bool = True) -> Tensor:
    r"""Stochastic depth with torchvision's signature: :func:`drop_path` by another name.

    .. math::
        y_{n,\dots} = \frac{m_n}{1-p}\, x_{n,\dots}, \qquad m_n \sim \mathrm{Bernoulli}(1-p)

    with one :math:`m_n` per sample (``mode="row"``) or a single :math:`m`
    for the whole batch (``mode="batch"``). ``p=1`` gives zeros; eval
    (``training=False``) and ``p=0`` return ``input`` itself. The same
    arguments and errors as ``torchvision.ops.stochastic_depth`` (``mode``
    required; a ``ValueError`` for ``p`` outside ``[0, 1]`` or an unknown
    ``mode``), the masks of dropkit's engine.

    Args:
        input: a tensor with the batch on dim 0, :math:`(N, *)`.
        p: probability of zeroing a row (or the batch).
        mode: ``"row"`` or ``"batch"``.
        training: apply only if ``True``. Default: ``True``.

    Shape:
        - Input: :math:`(N, *)`. Output: :math:`(N, *)`, same shape.

    Examples::

        >>> y = x + stochastic_depth(block(x), p=0.2, mode="row")

    Reference: Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016.
    """
    return drop_path(input, p, training, mode=mode)


def drop_path_rates(depth: int, max_rate: float) -> list[float]:
    r"""The linear stochastic-depth schedule: block ``i`` of ``depth`` gets
    :math:`p_i = \text{max\_rate} \cdot i / (\text{depth} - 1)`.

    The first block is never dropped and the last gets ``max_rate``, as in
    ``torch.linspace(0, drop_path_rate, depth)`` of timm's ViT and ConvNeXt
    (Huang et al., 2016, argue early blocks extract features every later block
    relies on).

    Examples::

        >>> drop_path_rates(5, 0.2)
        [0.0, 0.05, 0.1, 0.15000000000000002, 0.2]
    """
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1:
        raise ValueError(
            f"Invalid value received for argument `depth`. Expected a positive int. "
            f"Received: depth={depth!r}"
        )
    max_rate = _check_p(max_rate, "max_rate")
    if depth == 1:
        return [0.0]
    return [max_rate * i / (depth - 1) for i in range(depth)]
