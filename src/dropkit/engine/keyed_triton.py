"""Keyed masks as Triton kernels, for CUDA tensors: ``keyed_reference`` on the GPU.

``tl.philox(seed, c0, c1, c2, c3)`` with 32-bit counter words is Philox4x32-10
with key ``(lo32(seed), hi32(seed))``: the spec's generator with all four
counter words, ``(g, sample_id, step, call | 2**31)``. Program ``(r, c)``
handles ``BLOCK_COUNTERS`` counters of row ``r``: its elements ``8 g + j``.

Tested against the reference with ``TRITON_INTERPRET=1`` on CPU tensors
(tests/engine/test_keyed_kernels.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dropkit.engine.keyed_reference import KEYED_TAG
from dropkit.engine.triton_kernels import philox_lanes, scaled_like

BLOCK_COUNTERS = 256
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@triton.jit
def _keyed_lanes(ids_ptr, seed, step, tag, BLOCK_COUNTERS: tl.constexpr):
    """Indices within the row (int64, [BLOCK_COUNTERS, 8]) and their 16-bit lanes (int32)."""
    row = tl.program_id(0)
    group = tl.program_id(1) * BLOCK_COUNTERS + tl.arange(0, BLOCK_COUNTERS)
    sample = tl.load(ids_ptr + row).to(tl.uint32)  # ids < 2**32 (checked on the host)
    c0 = group.to(tl.uint32)
    c1 = tl.zeros_like(c0) + sample
    c2 = tl.zeros_like(c0) + step.to(tl.uint32)
    c3 = tl.zeros_like(c0) + tag.to(tl.uint32)
    u = philox_lanes(seed, c0, c1, c2, c3)
    return group.to(tl.int64)[:, None] * 8 + tl.arange(0, 8)[None, :], u


_SCALARS = ["m", "threshold", "seed", "step", "tag"]


@triton.jit(do_not_specialize=_SCALARS)
def _keyed_dropout_kernel(x_ptr, out_ptr, scale_ptr, ids_ptr, m, threshold, seed, step, tag,
                          BLOCK_COUNTERS: tl.constexpr):
    index, u = _keyed_lanes(ids_ptr, seed, step, tag, BLOCK_COUNTERS)
    inside = index < m
    flat = tl.program_id(0).to(tl.int64) * m + index
    x = tl.load(x_ptr + flat, mask=inside)
    scaled = scaled_like(x, tl.load(scale_ptr))
    y = tl.where(u >= threshold, scaled, tl.zeros_like(scaled))
    tl.store(out_ptr + flat, y, mask=inside)


@triton.jit(do_not_specialize=_SCALARS)
def _keyed_mask_kernel(out_ptr, ids_ptr, m, threshold, seed, step, tag,
                       BLOCK_COUNTERS: tl.constexpr):
    index, u = _keyed_lanes(ids_ptr, seed, step, tag, BLOCK_COUNTERS)
    flat = tl.program_id(0).to(tl.int64) * m + index
    tl.store(out_ptr + flat, (u >= threshold).to(tl.int8), mask=index < m)


def supports(x: torch.Tensor) -> bool:
    return x.dtype in _DTYPES


def _grid(rows: int, m: int) -> tuple[int, int]:
    return rows, triton.cdiv(triton.cdiv(m, 8), BLOCK_COUNTERS)


def keyed_dropout(x: torch.Tensor, t: int, scale: float, seed: int, step: int, call: int,
                  sample_ids: torch.Tensor) -> torch.Tensor:
    """A new contiguous ``where(keep, x * scale, 0)``; ``x`` contiguous ``(N, ...)``."""
    x = x.contiguous()
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    rows = x.shape[0]
    m = x.numel() // rows if rows else 0
    if x.numel():
        scale_t = torch.tensor([scale], dtype=torch.float64, device=x.device)
        ids = sample_ids.to(x.device, torch.int64)
        _keyed_dropout_kernel[_grid(rows, m)](x, out, scale_t, ids, m, t, seed, step,
                                               call | KEYED_TAG, BLOCK_COUNTERS=BLOCK_COUNTERS)
    return out


def keyed_keep_mask(rows: int, m: int, t: int, seed: int, step: int, call: int,
                    sample_ids: torch.Tensor, device) -> torch.Tensor:
    """Bool tensor ``(rows, m)`` on ``device``, True where kept."""
    out = torch.empty((rows, m), dtype=torch.int8, device=device)
    if rows * m:
        ids = sample_ids.to(device, torch.int64)
        _keyed_mask_kernel[_grid(rows, m)](out, ids, m, t, seed, step, call | KEYED_TAG,
                                           BLOCK_COUNTERS=BLOCK_COUNTERS)
    return out.view(torch.bool)
