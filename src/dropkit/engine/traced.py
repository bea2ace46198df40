"""Seed-as-tensor, rate-as-tensor variants of the engine's ops: what ``torch.compile`` traces.

``engine.api`` routes every call made under ``torch.compile`` here, whatever its seed.

Eager dropkit draws one seed per call as a Python int (``draw_seed``), which
needs ``Tensor.item()``: under ``torch.compile`` that is a graph break, and an
int crossing into a compiled graph would be specialised as a constant (every
call the same mask). Here the seed stays a 0-dim int64 tensor drawn inside
the graph from torch's generator; the op reads its value only inside its own
opaque implementation.

The rate ``p`` and the scale cross the op boundary as 0-dim float64 tensors
too, for the same reason: a rate that changes every step (``dk.DropoutSchedule``)
is a new Python float every step, and an op argument of type ``int``/``float``
(the threshold ``round(p * 65536)``, the scale) would make dynamo specialise
the graph on it and recompile every step. Made by arithmetic
(``scalar_tensor``), the tensor follows a symbolic ``p`` without pinning it;
the op computes the threshold from ``p.item()``, the same float the eager
path uses, so the mask's bits do not depend on the path. Autograd keeps those
one-element tensors (seed, rate, scale) and nothing per element.
"""

from __future__ import annotations

import torch

from dropkit.engine import op
from dropkit.engine.reference import lane_threshold


def draw_seed_tensor() -> torch.Tensor:
    """One 63-bit draw from torch's default CPU generator, kept as a 0-dim int64 tensor.

    ``randint`` rather than ``random_``: dynamo traces the out-of-place op only.
    The draw is ``engine.draw_seed``'s: ``random_`` on int64 takes one 64-bit
    word ``r`` and returns ``r mod 2**63``; ``randint`` over ``[-2**63, 0)`` takes
    the same word and returns ``r mod 2**63 - 2**63``, whose low 63 bits are
    the same number. So a compiled graph that runs the draw as torch does
    (``backend="eager"``/``"aot_eager"``; inductor draws with its own RNG) makes
    the masks of eager mode for the same ``torch.manual_seed``.
    """
    low = torch.randint(-(2**63), 0, (), dtype=torch.int64, device="cpu")
    return low & (2**63 - 1)


def seed_tensor(seed: int) -> torch.Tensor:
    """An int seed in [0, 2**64) as a 0-dim int64 tensor of its bit pattern.

    By arithmetic, as ``scalar_tensor``: a seed that dynamo has made symbolic
    stays symbolic rather than pinning the graph.
    """
    return torch.zeros((), dtype=torch.int64) + op.as_int64(seed)


def scalar_tensor(value) -> torch.Tensor:
    """A 0-dim float64 CPU tensor holding ``value``, a float or a ``torch.SymFloat``.

    By arithmetic on purpose: under ``torch.compile``, ``torch.tensor(p)`` and
    ``torch.as_tensor(p)`` specialise the graph on the value of ``p`` (a guard
    ``p == 0.095``, a recompile per new value); ``zeros + p`` keeps it symbolic.
    ``0.0 + p`` is ``p`` exactly in float64.
    """
    return torch.zeros((), dtype=torch.float64) + value


@torch.library.custom_op("dropkit::philox_dropout_tseed", mutates_args=())
def _dropout_tseed(x: torch.Tensor, p: torch.Tensor, scale: torch.Tensor, seed: torch.Tensor,
                   offset: int) -> torch.Tensor:
    return op.dropout_impl(x, lane_threshold(p.item()), scale.item(),
                           op.as_uint64(int(seed.item())), op.as_uint64(offset))


@_dropout_tseed.register_fake
def _(x, p, scale, seed, offset):
    return op.output_like(x)


def _setup_context(ctx, inputs, output):
    _, p, scale, seed, ctx.offset = inputs
    ctx.save_for_backward(p, scale, seed)  # three one-element tensors, not a mask


def _backward(ctx, grad):
    p, scale, seed = ctx.saved_tensors
    return _dropout_tseed(grad, p, scale, seed, ctx.offset), None, None, None, None


_dropout_tseed.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("dropkit::philox_keep_mask_tseed", mutates_args=())
def _keep_mask_tseed(shape: list[int], p: torch.Tensor, seed: torch.Tensor, offset: int,
                     device: torch.device) -> torch.Tensor:
    return op.keep_mask_impl(shape, lane_threshold(p.item()), op.as_uint64(int(seed.item())),
                             op.as_uint64(offset), device)


@_keep_mask_tseed.register_fake
def _(shape, p, seed, offset, device):
    return torch.empty(shape, dtype=torch.bool, device=device)


def dropout(x: torch.Tensor, p, scale, seed: torch.Tensor, offset: int = 0):
    """``engine.dropout`` with the seed a 0-dim int64 tensor (the seed's int64 bit pattern).

    ``p`` and ``scale``: floats, ``torch.SymFloat``s, or 0-dim float64 tensors.
    The arguments are checked by ``engine.dropout``, which calls this.
    """
    return _dropout_tseed(x, _as_tensor(p), _as_tensor(scale), seed, op.as_int64(offset))


def keep_mask(shape, p, seed: torch.Tensor, offset: int = 0, device=None):
    """``engine.keep_mask`` with the seed a 0-dim int64 tensor (the seed's int64 bit pattern).

    ``p``: a float, a ``torch.SymFloat``, or a 0-dim float64 tensor.
    """
    shape = [int(s) for s in shape]
    device = torch.device(device) if device is not None else torch.device("cpu")
    return _keep_mask_tseed(shape, _as_tensor(p), seed, op.as_int64(offset), device)


def _as_tensor(value) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else scalar_tensor(value)
