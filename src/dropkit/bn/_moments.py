"""Moment collection for :mod:`dropkit.bn`: run a model over ``data`` and pool the
per-channel mean and variance of chosen modules' inputs.

The machinery both halves of :mod:`dropkit.bn` stand on -- the variance-shift
measurement (:mod:`dropkit.bn.shift`) and the recalibration
(:mod:`dropkit.bn.recalibration`): reading ``data`` (a tensor or an iterable of
batches), forward pre-hooks that see each module's input, Chan et al.'s merge
of per-batch moments, and saving/restoring BatchNorm buffers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

Data = Tensor | Iterable[Tensor] | Iterable[tuple[Tensor, ...]]


def _batch_norms(model: nn.Module) -> dict[str, _BatchNorm]:
    layers = {name: m for name, m in model.named_modules() if isinstance(m, _BatchNorm)}
    if not layers:
        raise ValueError(
            "The model has no BatchNorm layer (torch.nn.BatchNorm1d/2d/3d or a subclass of "
            "torch.nn.modules.batchnorm._BatchNorm); nothing to measure or recalibrate."
        )
    return layers


def _check_iterable(data: Data) -> None:
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(
            "`data` must be a tensor or an iterable of batches (tensors or (x, y) tuples); "
            f"received {type(data).__name__}"
        )


def _batches(data: Data, batch_size: int | None) -> Iterator[Tensor]:
    """Yield input tensors from a tensor, or from an iterable of tensors / (x, y) tuples."""
    if isinstance(data, Tensor):
        if batch_size is None:
            yield data
        else:
            yield from torch.split(data, batch_size)
        return
    _check_iterable(data)
    for batch in data:
        if isinstance(batch, (tuple, list)):
            if not batch or not isinstance(batch[0], Tensor):
                raise TypeError(
                    "each batch of `data` must be a tensor or a tuple whose first item is the "
                    f"input tensor; received a {type(batch).__name__} of "
                    f"{[type(b).__name__ for b in batch]}"
                )
            batch = batch[0]
        elif not isinstance(batch, Tensor):
            raise TypeError(
                "each batch of `data` must be a tensor or an (x, y) tuple; "
                f"received {type(batch).__name__}"
            )
        yield batch


def _reusable(data: Data) -> Data:
    """``data`` in a form that can be read more than once (a generator cannot)."""
    if isinstance(data, Tensor):
        return data
    _check_iterable(data)
    return list(data)


def _device(model: nn.Module) -> torch.device | None:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


class _ChannelMoments:
    """Per-channel mean and variance over a stream of batches (Chan et al.'s merge).

    The input of a BatchNorm layer is ``(N, C, *)``; a channel's statistics are
    taken over every dim except 1, as BatchNorm itself does. Accumulated in
    float64 so that millions of values lose no precision.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None
        self.batches = 0

    def update(self, x: Tensor) -> None:
        x = x.detach().to(torch.float64)
        if x.ndim < 2:
            raise ValueError(f"BatchNorm input must be (N, C, *); received shape {tuple(x.shape)}")
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)  # (C, N * prod(*))
        n = flat.shape[1]
        if n == 0:
            return
        mean = flat.mean(dim=1)
        m2 = ((flat - mean[:, None]) ** 2).sum(dim=1)
        self.batches += 1
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def var(self) -> Tensor:
        """Unbiased per-channel variance (BatchNorm's ``running_var`` convention)."""
        if self.m2 is None or self.count < 2:
            raise ValueError(
                "`data` holds fewer than two values per channel; cannot estimate a variance"
            )
        return self.m2 / (self.count - 1)


def _collect(
    model: nn.Module, layers: dict[str, nn.Module], data: Data, batch_size: int | None
) -> dict[str, _ChannelMoments]:
    """Forward all of ``data`` through ``model`` (in its current modes) and collect
    the per-channel moments of each listed module's input (BatchNorm or dropout layers)."""
    moments = {name: _ChannelMoments() for name in layers}
    handles = [
        layer.register_forward_pre_hook(lambda _m, args, _name=name: moments[_name].update(args[0]))
        for name, layer in layers.items()
    ]
    device = _device(model)
    seen = 0
    try:
        with torch.no_grad():
            for x in _batches(data, batch_size):
                model(x.to(device) if device is not None else x)
                seen += 1
    finally:
        for h in handles:
            h.remove()
    if seen == 0:
        raise ValueError("`data` is empty: no batch to measure")
    return moments


def _bn_buffers(layers: dict[str, _BatchNorm]) -> dict[str, dict[str, Tensor]]:
    return {
        name: {k: b.detach().clone() for k, b in layer.named_buffers(recurse=False)}
        for name, layer in layers.items()
    }


def _restore_bn_buffers(layers: dict[str, _BatchNorm], saved: dict[str, dict[str, Tensor]]) -> None:
    with torch.no_grad():
        for name, layer in layers.items():
            for k, b in layer.named_buffers(recurse=False):
                b.copy_(saved[name][k])
