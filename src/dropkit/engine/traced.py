"""Seed-as-tensor variants of the engine's ops, for code under ``torch.compile``.

Eager dropkit draws one seed per call as a Python int (``draw_seed``), which
needs ``Tensor.item()``: under ``torch.compile`` that is a graph break, and an
int crossing into a compiled graph would be specialised as a constant (every
call the same mask). Here the seed stays a 0-dim int64 tensor drawn inside
the graph from torch's generator; the op reads its value only inside its own
opaque implementation. Autograd keeps that one-element seed tensor and
nothing per element.
"""

from __future__ import annotations

import torch

from dropkit.engine import op
from dropkit.engine.reference import check_seed_offset, threshold


def draw_seed_tensor() -> torch.Tensor:
    """One 63-bit draw from torch's default CPU generator, kept as a 0-dim int64 tensor.

    ``randint`` rather than ``random_``: dynamo traces the out-of-place op only.
    """
    return torch.randint(0, 2**63 - 1, (), dtype=torch.int64, device="cpu")


@torch.library.custom_op("dropkit::philox_dropout_tseed", mutates_args=())
def _dropout_tseed(x: torch.Tensor, threshold: int, scale: float, seed: torch.Tensor,
                   offset: int) -> torch.Tensor:
    return op._dropout_op(x, threshold, scale, int(seed.item()), offset)


@_dropout_tseed.register_fake
def _(x, threshold, scale, seed, offset):
    return op.output_like(x)


def _setup_context(ctx, inputs, output):
    _, ctx.threshold, ctx.scale, seed, ctx.offset = inputs
    ctx.save_for_backward(seed)  # one int64 element, not a mask


def _backward(ctx, grad):
    (seed,) = ctx.saved_tensors
    return _dropout_tseed(grad, ctx.threshold, ctx.scale, seed, ctx.offset), None, None, None, None


_dropout_tseed.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("dropkit::philox_keep_mask_tseed", mutates_args=())
def _keep_mask_tseed(shape: list[int], threshold: int, seed: torch.Tensor, offset: int,
                     device: torch.device) -> torch.Tensor:
    return op._keep_mask_op(shape, threshold, int(seed.item()), offset, device)


@_keep_mask_tseed.register_fake
def _(shape, threshold, seed, offset, device):
    return torch.empty(shape, dtype=torch.bool, device=device)


def dropout(x: torch.Tensor, p: float, scale: float, seed: torch.Tensor, offset: int = 0):
    """``engine.dropout`` with the seed given as a 0-dim int64 tensor in [0, 2**63)."""
    check_seed_offset(0, offset, x.numel())
    return _dropout_tseed(x, threshold(p), float(scale), seed, op._as_int64(offset))


def keep_mask(shape, p: float, seed: torch.Tensor, offset: int = 0, device=None):
    """``engine.keep_mask`` with the seed given as a 0-dim int64 tensor in [0, 2**63)."""
    shape = [int(s) for s in shape]
    device = torch.device(device) if device is not None else torch.device("cpu")
    return _keep_mask_tseed(shape, threshold(p), seed, op._as_int64(offset), device)
