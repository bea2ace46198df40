"""Fused CPU kernels of the mask scheme (Numba), forward and backward in one.

The backward of ``y = where(keep, x * scale, 0)`` is ``where(keep, g * scale, 0)``:
the same kernel applied to the gradient, so there is one kernel per dtype.

Design, from measurements of a planning prototype and of these kernels:
Philox is not the bottleneck, the element pass and the memory are.
So the work is cut into fixed chunks of ``BLOCK_COUNTERS`` counters
(8 * BLOCK_COUNTERS elements) and each chunk does a few simple loops while its
data sits in L1:

1. Philox4x32-10 for the chunk's counters, the 4 words of each stored
   contiguously in a small scratch buffer (vectorised across counters);
2. branch-free contiguous passes over the elements that read the scratch back
   as uint16.  On a little-endian machine halfword ``j`` of a counter's 4 words
   *is* the spec's lane ``j`` (low half of word ``j // 2`` first), so no
   per-lane shifts are needed and LLVM vectorises the passes.  A dropped
   element is zeroed by ANDing the bits of its product with 0 rather than by
   a select: +0.0 even for inf/nan inputs, and faster.

Large inputs are cut into one contiguous part per thread, at chunk boundaries,
and the parts run on a small pool of Python threads that dropkit owns
(``cpu_runtime``); small inputs run on the calling thread.  Large outputs are
advised to use transparent huge pages (``cpu_runtime.empty_like``).

Chunks are independent and every element's lane depends only on its index, so
the result does not depend on the number of threads or on the split.

float32 and float64 are multiplied in their own precision.  float16 and
bfloat16 are handled on their bit patterns (``half_precision``): widened
exactly to float32, multiplied in float32 and rounded once back.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from dropkit.engine.cpu_runtime import PARALLEL_MIN_ELEMENTS as PARALLEL_MIN_ELEMENTS
from dropkit.engine.cpu_runtime import empty_like as empty_like
from dropkit.engine.cpu_runtime import num_threads as num_threads
from dropkit.engine.cpu_runtime import run
from dropkit.engine.half_precision import round_pass, widen_pass
from dropkit.engine.philox_cpu import inline as _inline
from dropkit.engine.philox_cpu import kernel as _jit
from dropkit.engine.philox_cpu import key_words, philox_words_into
from dropkit.engine.philox_cpu import philox_words as philox_words  # the generator, for tests

if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for
    raise ImportError("dropkit's CPU kernels read Philox words as halfwords: little-endian only")

# 512 counters = 4096 elements per chunk: the 8 KiB of scratch stays in L1.
BLOCK_COUNTERS = 512
BLOCK_ELEMENTS = 8 * BLOCK_COUNTERS


@_inline
def _chunk_lanes(c, n, key0, key1, offset, words):
    """Chunk ``c``: its element range and its 16-bit lanes (a uint16 view of ``words``)."""
    start = c * BLOCK_ELEMENTS
    stop = min(start + BLOCK_ELEMENTS, n)
    counters = (stop - start + 7) // 8
    philox_words_into(offset + np.uint64(c) * np.uint64(BLOCK_COUNTERS), counters, key0, key1,
                      words)
    return start, stop, words.view(np.uint16)


@_inline
def _float_chunk(x, out, t, scale, key0, key1, offset, c, words, wide):
    """out = where(u >= t, x * scale, 0) on chunk c, float32 / float64.

    Two passes over the chunk while it sits in L1: the product, then an AND of
    its bits with all-ones (kept) or all-zeros (dropped).  That gives +0.0 for a
    dropped element whatever x is (inf, nan), and measured 1.8x faster than a
    select on the value, which LLVM vectorised poorly.
    """
    start, stop, lanes = _chunk_lanes(c, x.size, key0, key1, offset, words)
    # Slices, not x[start + e]: with them LLVM vectorises the loops (measured 2.5x).
    xs = x[start:stop]
    outs = out[start:stop]
    for e in range(stop - start):
        outs[e] = xs[e] * scale
    if outs.itemsize == 8:
        bits64 = outs.view(np.uint64)
        for e in range(stop - start):
            bits64[e] &= np.uint64(0) - np.uint64(np.int32(lanes[e]) >= t)
    else:
        bits32 = outs.view(np.uint32)
        for e in range(stop - start):
            bits32[e] &= np.uint32(0) - np.uint32(np.int32(lanes[e]) >= t)


@_inline
def _half_chunk(x, out, t, scale, key0, key1, offset, c, words, wide, f16):
    """The 16-bit chunk on its bit patterns (float16 if ``f16`` else bfloat16), math in float32.

    A dropped element is +0.0 before rounding, and both roundings keep +0.0.
    """
    start, stop, lanes = _chunk_lanes(c, x.size, key0, key1, offset, words)
    m = stop - start
    values = wide.view(np.float32)
    widen_pass(x[start:stop], wide, m, f16)
    for e in range(m):
        values[e] = values[e] * scale if np.int32(lanes[e]) >= t else np.float32(0)
    round_pass(wide, out[start:stop], m, f16)


@_inline
def _mask_chunk(out, t, key0, key1, offset, c, words):
    """out = 1 where kept (u >= t) else 0, uint8, on chunk c."""
    start, stop, lanes = _chunk_lanes(c, out.size, key0, key1, offset, words)
    outs = out[start:stop]
    for e in range(stop - start):
        outs[e] = np.uint8(np.int32(lanes[e]) >= t)


# Drivers: one per kind, each running on the calling thread over a range of
# chunks.  They are written out per kind on purpose: one driver taking the
# chunk function as an argument is specialised on the function object, which
# Numba's on-disk cache misses in every new process (tried: a 2-4 s compile on
# each import).  A part of a large input is given to a driver as the slices
# ``x[start:stop]`` with ``offset + start // 8``: with ``start`` a multiple of
# BLOCK_ELEMENTS, its chunks and counters are exactly those of the whole.


@_inline
def _chunks(n):
    return (n + BLOCK_ELEMENTS - 1) // BLOCK_ELEMENTS


@_inline
def _scratch():
    """Philox words of one chunk, and one chunk of widened 16-bit values."""
    return np.empty(4 * BLOCK_COUNTERS, dtype=np.uint32), np.empty(BLOCK_ELEMENTS, np.uint32)


@_jit
def _dropout_float(x, out, t, scale, seed, offset):
    words, wide = _scratch()
    key0, key1 = key_words(seed)
    for c in range(_chunks(x.size)):
        _float_chunk(x, out, t, scale, key0, key1, offset, c, words, wide)


@_jit
def _dropout_half(x, out, f16, t, scale, seed, offset):
    words, wide = _scratch()
    key0, key1 = key_words(seed)
    for c in range(_chunks(x.size)):
        _half_chunk(x, out, t, scale, key0, key1, offset, c, words, wide, f16)


@_jit
def _keep_mask_kernel(out, t, seed, offset):
    words = np.empty(4 * BLOCK_COUNTERS, dtype=np.uint32)
    key0, key1 = key_words(seed)
    for c in range(_chunks(out.size)):
        _mask_chunk(out, t, key0, key1, offset, c, words)


# ---------------------------------------------------------------------------
# Fused bias + dropout + residual add: out = residual + where(keep, (x + bias) * scale, 0)
#
# Each intermediate is rounded to the tensors' dtype exactly where the unfused
# torch/dropkit sequence ``residual + dropout(x + bias)`` rounds it (three
# roundings for the 16-bit types), so the fused result equals the unfused one
# bit for bit; only the memory traffic of the two intermediates is saved.  The
# bias is a flat array whose values repeat along the flat elements with period
# ``bias.size`` (a bias over the trailing dims of x); ``first`` is the index of
# the first element of the part a driver is given, so the bias phase does not
# depend on how the elements were split across threads.


@_inline
def _add_bias(xs, bias, dst, first, m):
    """dst[e] = xs[e] + bias[(first + e) % bias.size] for e < m, in runs of one bias period.

    A run walks x and the bias contiguously, so the inner loop vectorises.
    """
    period = bias.size
    j = first % period
    e = 0
    while e < m:
        run = min(m - e, period - j)
        xr = xs[e:e + run]
        dr = dst[e:e + run]
        br = bias[j:j + run]
        for k in range(run):
            dr[k] = xr[k] + br[k]
        e += run
        j = 0


@_inline
def _bda_float_chunk(x, residual, out, bias, has_bias, t, scale, key0, key1, offset, c, words,
                     first):
    """The fused chunk c for float32 / float64: each step in the dtype's own precision."""
    start, stop, lanes = _chunk_lanes(c, x.size, key0, key1, offset, words)
    m = stop - start
    xs = x[start:stop]
    rs = residual[start:stop]
    outs = out[start:stop]
    if has_bias:
        _add_bias(xs, bias, outs, first + start, m)
        for e in range(m):
            outs[e] = outs[e] * scale
    else:
        for e in range(m):
            outs[e] = xs[e] * scale
    # dropped -> +0.0 by ANDing the bits, as in _float_chunk
    if outs.itemsize == 8:
        bits64 = outs.view(np.uint64)
        for e in range(m):
            bits64[e] &= np.uint64(0) - np.uint64(np.int32(lanes[e]) >= t)
    else:
        bits32 = outs.view(np.uint32)
        for e in range(m):
            bits32[e] &= np.uint32(0) - np.uint32(np.int32(lanes[e]) >= t)
    for e in range(m):
        outs[e] = rs[e] + outs[e]


@_inline
def _bda_half_chunk(x, residual, out, bias, has_bias, t, scale, key0, key1, offset, c, words,
                    first, wide_a, wide_b, f16):
    """The fused 16-bit chunk on bit patterns (float16 if ``f16`` else bfloat16).

    ``bias`` is float32 (exactly widened); each step is rounded to the 16-bit
    type where the unfused sequence rounds it.
    """
    start, stop, lanes = _chunk_lanes(c, x.size, key0, key1, offset, words)
    m = stop - start
    xs = x[start:stop]
    rs = residual[start:stop]
    outs = out[start:stop]
    a = wide_a[:m]
    b = wide_b[:m]
    av = a.view(np.float32)
    bv = b.view(np.float32)
    widen_pass(xs, a, m, f16)
    if has_bias:  # h = half(x + bias), kept as float32 in a
        _add_bias(av, bias, av, first + start, m)
        round_pass(a, outs, m, f16)
        widen_pass(outs, a, m, f16)
    for e in range(m):
        av[e] = av[e] * scale
    round_pass(a, outs, m, f16)  # d = half(h * scale) ...
    for e in range(m):  # ... or +0 where dropped
        outs[e] &= np.uint16(0) - np.uint16(np.int32(lanes[e]) >= t)
    widen_pass(outs, a, m, f16)
    widen_pass(rs, b, m, f16)
    for e in range(m):
        av[e] = bv[e] + av[e]
    round_pass(a, outs, m, f16)


@_jit
def _bias_dropout_add_float(x, residual, out, bias, has_bias, t, scale, seed, offset, first):
    words = np.empty(4 * BLOCK_COUNTERS, dtype=np.uint32)
    key0, key1 = key_words(seed)
    for c in range(_chunks(x.size)):
        _bda_float_chunk(x, residual, out, bias, has_bias, t, scale, key0, key1, offset, c, words,
                         first)


@_jit
def _bias_dropout_add_half(x, residual, out, bias, has_bias, f16, t, scale, seed, offset, first):
    words, wide_a = _scratch()
    wide_b = np.empty(BLOCK_ELEMENTS, np.uint32)
    key0, key1 = key_words(seed)
    for c in range(_chunks(x.size)):
        _bda_half_chunk(x, residual, out, bias, has_bias, t, scale, key0, key1, offset, c, words,
                        first, wide_a, wide_b, f16)


_DROPOUT_KERNELS = {  # dtype -> (driver, scale type, driver flags)
    torch.float64: (_dropout_float, np.float64, ()),
    torch.float32: (_dropout_float, np.float32, ()),
    torch.bfloat16: (_dropout_half, np.float32, (False,)),
    torch.float16: (_dropout_half, np.float32, (True,)),
}


def _flat_numpy(t: torch.Tensor) -> np.ndarray:
    """A 1-D numpy view of a contiguous CPU tensor; 16-bit floats as their uint16 bit patterns."""
    t = t.detach().reshape(-1)
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def dropout_into(x: torch.Tensor, out: torch.Tensor, t: int, scale: float, seed: int,
                 offset: int) -> None:
    """``out = where(keep, x * scale, 0)``; x and out contiguous CPU tensors (may be the same)."""
    try:
        kernel, scale_type, flags = _DROPOUT_KERNELS[x.dtype]
    except KeyError:
        raise TypeError(f"no CPU kernel for dtype {x.dtype}") from None
    run(kernel, x.numel(), BLOCK_ELEMENTS, (_flat_numpy(x), _flat_numpy(out)), *flags,
        np.int32(t), scale_type(scale), np.uint64(seed), np.uint64(offset))


def keep_mask(numel: int, t: int, seed: int, offset: int) -> torch.Tensor:
    """Flat bool tensor of ``numel`` elements, True where kept."""
    out = torch.empty(numel, dtype=torch.uint8)  # torch's own storage, not numpy's
    if numel:
        run(_keep_mask_kernel, numel, BLOCK_ELEMENTS, (out.numpy(),), np.int32(t),
            np.uint64(seed), np.uint64(offset))
    return out.view(torch.bool)


_BIAS_DROPOUT_ADD_KERNELS = {  # dtype -> (driver, scale type, bias array type, driver flags)
    torch.float64: (_bias_dropout_add_float, np.float64, torch.float64, ()),
    torch.float32: (_bias_dropout_add_float, np.float32, torch.float32, ()),
    torch.bfloat16: (_bias_dropout_add_half, np.float32, torch.float32, (False,)),
    torch.float16: (_bias_dropout_add_half, np.float32, torch.float32, (True,)),
}


def bias_dropout_add_into(x: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor,
                          out: torch.Tensor, t: int, scale: float, seed: int,
                          offset: int) -> None:
    """``out = residual + where(keep, (x + bias) * scale, 0)``, rounded as the unfused sequence.

    ``x``, ``residual`` and ``out`` contiguous CPU tensors of one shape and
    dtype; ``bias`` None or a contiguous 1-D tensor of that dtype whose values
    repeat along the flat elements (element ``i`` gets ``bias[i % bias.numel()]``).
    """
    try:
        kernel, scale_type, bias_dtype, flags = _BIAS_DROPOUT_ADD_KERNELS[x.dtype]
    except KeyError:
        raise TypeError(f"no CPU kernel for dtype {x.dtype}") from None
    if bias is None:
        bias_array = np.zeros(1, dtype=scale_type)
    else:  # 16-bit biases widened to float32, exactly
        bias_array = bias.detach().reshape(-1).to(bias_dtype).numpy()
    run(kernel, x.numel(), BLOCK_ELEMENTS,
        (_flat_numpy(x), _flat_numpy(residual), _flat_numpy(out)), bias_array,
        bias is not None, *flags, np.int32(t), scale_type(scale), np.uint64(seed),
        np.uint64(offset), pass_start=True)

