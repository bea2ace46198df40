"""Recalibration: BatchNorm running statistics re-estimated with dropout off."""

from __future__ import annotations

import torch
from torch import nn

from dropkit.bn._moments import Data, _batch_norms, _batches, _collect, _device, _reusable
from dropkit.mc import restore_modes

__all__ = ["recalibrate"]


def recalibrate(model: nn.Module, data: Data, *, batch_size: int | None = None) -> nn.Module:
    r"""Re-estimate every BatchNorm layer's running mean and variance with dropout off.

    For each BatchNorm layer, in the order the forward pass reaches them, the
    whole model runs in eval mode over all of ``data`` (dropout off, earlier
    BatchNorm layers already recalibrated) and the layer's statistics become
    the cumulative per-channel mean and unbiased variance of its input over
    all of ``data`` -- an exact average, not a momentum update:

    .. math::
        \mu_c = \frac{1}{n}\sum_i x_{i,c}, \qquad
        \sigma^2_c = \frac{1}{n-1}\sum_i (x_{i,c} - \mu_c)^2 .

    After it, each layer's ``running_var`` equals the eval-mode variance of
    its input on ``data`` (and ``running_mean`` its mean), so inference
    normalises with the statistics it meets. ``num_batches_tracked`` is set to
    the number of batches read. One pass over ``data`` per BatchNorm layer:
    a later layer's eval-mode input depends on the recalibrated statistics of
    the earlier ones. The ``training`` flag of every submodule is restored;
    the parameters are not touched.

    Args:
        model: a network with at least one BatchNorm layer.
        data: a tensor of inputs, or an iterable of batches (tensors or
            ``(x, y)`` tuples), e.g. the training set.
        batch_size: split a tensor ``data`` into batches of this size
            (default: one batch). Ignored for an iterable.

    Returns:
        ``model`` itself, recalibrated.

    Reference: Li et al., CVPR 2019, section 5 ("adjusting the moving
    statistics"); the same idea as ``torch.optim.swa_utils.update_bn``, which
    however collects the statistics in training mode.
    """
    layers = {n: m for n, m in _batch_norms(model).items() if m.track_running_stats}
    if not layers:
        raise ValueError(
            "No BatchNorm layer of the model tracks running statistics "
            "(track_running_stats=False everywhere); nothing to recalibrate."
        )
    data = _reusable(data)
    with restore_modes(model):
        model.eval()
        # Find the order in which the forward pass reaches the layers.
        order: list[str] = []
        handles = [
            layer.register_forward_pre_hook(
                lambda _m, _a, _name=name: order.append(_name) if _name not in order else None
            )
            for name, layer in layers.items()
        ]
        try:
            with torch.no_grad():
                x0 = next(iter(_batches(data, batch_size)), None)
                if x0 is None:
                    raise ValueError("`data` is empty: no batch to recalibrate with")
                device = _device(model)
                model(x0.to(device) if device is not None else x0)
        finally:
            for h in handles:
                h.remove()
        order += [n for n in layers if n not in order]  # layers the forward never reached
        for name in order:
            layer = layers[name]
            moments = _collect(model, {name: layer}, data, batch_size)[name]
            if moments.mean is None:
                continue  # the forward never reaches this layer
            with torch.no_grad():
                layer.running_mean.copy_(moments.mean.to(layer.running_mean.dtype))
                layer.running_var.copy_(moments.var().to(layer.running_var.dtype))
                if layer.num_batches_tracked is not None:
                    layer.num_batches_tracked.fill_(moments.batches)
    return model
