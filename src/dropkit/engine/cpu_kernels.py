"""Fused CPU kernels of the mask scheme (Numba), forward and backward in one.

The backward of ``y = where(keep, x * scale, 0)`` is ``where(keep, g * scale, 0)``:
the same kernel applied to the gradient, so there is one kernel per dtype.

Design, from measurements of these kernels on a Zen 4 core (AVX-512):
Philox is most of the work.  Its 10 rounds cost about 48 cycles per 8 counters
(64 elements), bound by the 20 ``vpmuludq`` among them, while the element pass
(load, compare, multiply, store) costs a fraction of that.  So the work is cut
into small chunks of ``CHUNK_COUNTERS`` counters (8 * CHUNK_COUNTERS elements)
and each chunk does two short loops:

1. Philox4x32-10 for the chunk's counters, the 4 words of each stored
   contiguously in a small scratch buffer (vectorised across counters);
2. one branch-free contiguous pass over the elements that reads the scratch
   back as uint16.  On a little-endian machine halfword ``j`` of a counter's
   4 words *is* the spec's lane ``j`` (low half of word ``j // 2`` first), so
   no per-lane shifts are needed and LLVM vectorises the pass: the lanes are
   compared into a mask register and the product is stored under it, +0.0
   where the element is dropped (also for inf/nan inputs).

The chunks are small (256 elements) so that the out-of-order core overlaps one
chunk's memory pass with the next chunk's Philox: measured 1.3-1.6x faster
than 4096-element chunks with a separate zeroing pass.

Large calls run on several threads that claim pieces of the chunks
dynamically (``cpu_runtime.run``); small calls run on the calling thread.
Every element's lane depends only on its index, so the result does not depend
on the number of threads or on which thread did which chunk.

float32 and float64 are multiplied in their own precision.  float16 and
bfloat16 are handled on their bit patterns (``half_precision``): widened
exactly to float32, multiplied in float32 and rounded once back.
"""

from __future__ import annotations

import sys

import numba
import numpy as np
import torch
from numba import types
from numba.extending import intrinsic

from dropkit.engine.cpu_runtime import PARALLEL_MIN_ELEMENTS as PARALLEL_MIN_ELEMENTS
from dropkit.engine.cpu_runtime import claim, finished, one_piece, run
from dropkit.engine.cpu_runtime import empty_like as empty_like
from dropkit.engine.cpu_runtime import num_threads as num_threads
from dropkit.engine.half_precision import (
    f16_round_pass,
    f16_widen_pass,
    half_bits,
    half_rounded,
    half_value,
    one_loop,
)
from dropkit.engine.op import as_int64
from dropkit.engine.philox_cpu import inline as _inline
from dropkit.engine.philox_cpu import kernel as _jit
from dropkit.engine.philox_cpu import key_words, philox_words_into
from dropkit.engine.philox_cpu import philox_words as philox_words  # the generator, for tests

if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for
    raise ImportError("dropkit's CPU kernels read Philox words as halfwords: little-endian only")

# A chunk: the counters whose Philox words sit in the scratch at once.
CHUNK_COUNTERS = 32
CHUNK_ELEMENTS = 8 * CHUNK_COUNTERS
# keep_mask's pass is too light to overlap with Philox: longer Philox loops win (4%).
MASK_CHUNK_COUNTERS = 512
# Work is handed to threads in whole blocks of this many elements (tests use it
# to size an input that takes the parallel path).
BLOCK_ELEMENTS = 4096


def _chunks(n: int, chunk_counters: int = CHUNK_COUNTERS) -> int:
    return -(-n // (8 * chunk_counters))


@_inline
def _chunk_lanes(c, n, key0, key1, offset, words, chunk_counters=CHUNK_COUNTERS):
    """Chunk ``c``: its element range and its 16-bit lanes (a uint16 view of ``words``)."""
    start = c * 8 * chunk_counters
    stop = min(start + 8 * chunk_counters, n)
    counters = (stop - start + 7) // 8
    philox_words_into(offset + np.uint64(c) * np.uint64(chunk_counters), counters, key0, key1,
                      words)
    return start, stop, words.view(np.uint16)


@_inline
def _float_chunk(x, out, in_place, t, scale, zero, key0, key1, offset, c, words):
    """out = where(u >= t, x * scale, +0.0) on chunk c, float32 / float64.

    ``in_place``: x and out are the same memory.  That case has its own loop
    over one array: on two arrays LLVM's run-time overlap check sends
    overlapping memory to the scalar loop (measured 5x slower).
    """
    start, stop, lanes = _chunk_lanes(c, x.size, key0, key1, offset, words)
    # Slices, not x[start + e]: with them LLVM vectorises the loop (measured 2.5x).
    xs = x[start:stop]
    if in_place:
        for e in range(stop - start):
            xs[e] = xs[e] * scale if np.int32(lanes[e]) >= t else zero
        return
    outs = out[start:stop]
    for e in range(stop - start):
        outs[e] = xs[e] * scale if np.int32(lanes[e]) >= t else zero


@_inline
def _half_chunk(x, out, in_place, t, scale, key0, key1, offset, c, words, wide, f16):
    """The 16-bit chunk on its bit patterns (float16 if ``f16`` else bfloat16), math in float32.

    A dropped element is +0.0 before rounding, and both roundings keep +0.0.
    One loop converting per element where ``one_loop(f16)`` (one array when
    ``in_place``, as in ``_float_chunk``), else passes over the chunk.
    """
    start, stop, lanes = _chunk_lanes(c, x.size, key0, key1, offset, words)
    m = stop - start
    if one_loop(f16):
        xs = x[start:stop]
        if in_place:
            for e in range(m):
                xs[e] = half_bits(half_value(xs[e], f16) * scale if np.int32(lanes[e]) >= t
                                  else np.float32(0), f16)
            return
        outs = out[start:stop]
        for e in range(m):
            outs[e] = half_bits(half_value(xs[e], f16) * scale if np.int32(lanes[e]) >= t
                                else np.float32(0), f16)
        return
    values = wide.view(np.float32)
    f16_widen_pass(x[start:stop], wide, m)
    for e in range(m):
        values[e] = values[e] * scale if np.int32(lanes[e]) >= t else np.float32(0)
    f16_round_pass(wide, out[start:stop], m)


@_inline
def _mask_chunk(out, t, key0, key1, offset, c, words):
    """out = 1 where kept (u >= t) else 0, uint8, on chunk c."""
    start, stop, lanes = _chunk_lanes(c, out.size, key0, key1, offset, words, MASK_CHUNK_COUNTERS)
    outs = out[start:stop]
    for e in range(stop - start):
        outs[e] = np.uint8(np.int32(lanes[e]) >= t)


# Drivers: one per kind, each running on one thread over the pieces of chunks
# it claims from ``work``.  They are written out per kind on purpose: one
# driver taking the chunk function as an argument is specialised on the
# function object, which Numba's on-disk cache misses in every new process
# (tried: a 2-4 s compile on each import).


@_inline
def _scratch():
    """Philox words of one chunk, and one chunk of widened 16-bit values."""
    return np.empty(4 * CHUNK_COUNTERS, dtype=np.uint32), np.empty(CHUNK_ELEMENTS, np.uint32)


@_jit
def _dropout_float(x, out, t, scale, seed, offset, work):
    words = np.empty(4 * CHUNK_COUNTERS, dtype=np.uint32)
    key0, key1 = key_words(seed)
    zero = np.zeros(1, out.dtype)[0]  # +0.0 of out's type (a literal would be float64)
    in_place = x.ctypes.data == out.ctypes.data  # dropkit's x and out: the same or disjoint
    first, stop = claim(work)
    while first < stop:
        for c in range(first, stop):
            _float_chunk(x, out, in_place, t, scale, zero, key0, key1, offset, c, words)
        finished(work)
        first, stop = claim(work)


@_jit
def _dropout_half(x, out, f16, t, scale, seed, offset, work):
    words, wide = _scratch()
    key0, key1 = key_words(seed)
    in_place = x.ctypes.data == out.ctypes.data  # dropkit's x and out: the same or disjoint
    first, stop = claim(work)
    while first < stop:
        for c in range(first, stop):
            _half_chunk(x, out, in_place, t, scale, key0, key1, offset, c, words, wide, f16)
        finished(work)
        first, stop = claim(work)


@_jit
def _keep_mask_kernel(out, t, seed, offset, work):
    words = np.empty(4 * MASK_CHUNK_COUNTERS, dtype=np.uint32)
    key0, key1 = key_words(seed)
    first, stop = claim(work)
    while first < stop:
        for c in range(first, stop):
            _mask_chunk(out, t, key0, key1, offset, c, words)
        finished(work)
        first, stop = claim(work)


# ---------------------------------------------------------------------------
# Fused bias + dropout + residual add: out = residual + where(keep, (x + bias) * scale, 0)
#
# Each intermediate is rounded to the tensors' dtype exactly where the unfused
# torch/dropkit sequence ``residual + dropout(x + bias)`` rounds it (three
# roundings for the 16-bit types), so the fused result equals the unfused one
# bit for bit; only the memory traffic of the two intermediates is saved.  The
# bias is a flat array whose values repeat along the flat elements with period
# ``bias.size`` (a bias over the trailing dims of x).


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
def _bda_float_chunk(x, residual, out, bias, has_bias, t, scale, zero, key0, key1, offset, c,
                     words):
    """The fused chunk c for float32 / float64: each step in the dtype's own precision."""
    start, stop, lanes = _chunk_lanes(c, x.size, key0, key1, offset, words)
    m = stop - start
    xs = x[start:stop]
    rs = residual[start:stop]
    outs = out[start:stop]
    # the product is rounded before the add (no FMA without fastmath), as unfused
    if has_bias:
        _add_bias(xs, bias, outs, start, m)
        for e in range(m):
            outs[e] = rs[e] + (outs[e] * scale if np.int32(lanes[e]) >= t else zero)
    else:
        for e in range(m):
            outs[e] = rs[e] + (xs[e] * scale if np.int32(lanes[e]) >= t else zero)


@_inline
def _bda_one_loop_chunk(xs, rs, outs, bias, has_bias, t, scale, lanes, start, m, f16):
    """The fused 16-bit chunk, one loop per bias period, rounded where the passes round.

    h = half(x + bias); d = half(h * scale) or +0 where dropped; out = half(r + d).
    """
    if not has_bias:
        for i in range(m):
            d = half_rounded(half_value(xs[i], f16) * scale, f16) if np.int32(lanes[i]) >= t \
                else np.float32(0)
            outs[i] = half_bits(half_value(rs[i], f16) + d, f16)
        return
    period = bias.size
    j = start % period
    e = 0
    while e < m:  # runs of one bias period: slices, so that LLVM vectorises the loop
        run = min(m - e, period - j)
        xr = xs[e:e + run]
        rr = rs[e:e + run]
        outr = outs[e:e + run]
        lr = lanes[e:e + run]
        br = bias[j:j + run]
        for k in range(run):
            h = half_rounded(half_value(xr[k], f16) + br[k], f16)
            d = half_rounded(h * scale, f16) if np.int32(lr[k]) >= t else np.float32(0)
            outr[k] = half_bits(half_value(rr[k], f16) + d, f16)
        e += run
        j = 0


@_inline
def _bda_half_chunk(x, residual, out, bias, has_bias, t, scale, key0, key1, offset, c, words,
                    wide_a, wide_b, f16):
    """The fused 16-bit chunk on bit patterns (float16 if ``f16`` else bfloat16).

    ``bias`` is float32 (exactly widened); each step is rounded to the 16-bit
    type where the unfused sequence rounds it.
    """
    start, stop, lanes = _chunk_lanes(c, x.size, key0, key1, offset, words)
    m = stop - start
    rs = residual[start:stop]
    outs = out[start:stop]
    if one_loop(f16):
        _bda_one_loop_chunk(x[start:stop], rs, outs, bias, has_bias, t, scale, lanes, start, m,
                            f16)
        return
    av = wide_a.view(np.float32)
    bv = wide_b.view(np.float32)
    f16_widen_pass(x[start:stop], wide_a, m)
    if has_bias:  # h = half(x + bias), kept as float32 in a
        _add_bias(av, bias, av, start, m)
        f16_round_pass(wide_a, outs, m)
        f16_widen_pass(outs, wide_a, m)
    for e in range(m):  # d = half(h * scale), or +0 where dropped
        av[e] = av[e] * scale if np.int32(lanes[e]) >= t else np.float32(0)
    f16_round_pass(wide_a, outs, m)
    f16_widen_pass(outs, wide_a, m)
    f16_widen_pass(rs, wide_b, m)
    for e in range(m):
        av[e] = bv[e] + av[e]
    f16_round_pass(wide_a, outs, m)


@_jit
def _bias_dropout_add_float(x, residual, out, bias, has_bias, t, scale, seed, offset, work):
    words = np.empty(4 * CHUNK_COUNTERS, dtype=np.uint32)
    key0, key1 = key_words(seed)
    zero = np.zeros(1, out.dtype)[0]
    first, stop = claim(work)
    while first < stop:
        for c in range(first, stop):
            _bda_float_chunk(x, residual, out, bias, has_bias, t, scale, zero, key0, key1, offset,
                             c, words)
        finished(work)
        first, stop = claim(work)


@_jit
def _bias_dropout_add_half(x, residual, out, bias, has_bias, f16, t, scale, seed, offset, work):
    words, wide_a = _scratch()
    wide_b = np.empty(CHUNK_ELEMENTS, np.uint32)
    key0, key1 = key_words(seed)
    first, stop = claim(work)
    while first < stop:
        for c in range(first, stop):
            _bda_half_chunk(x, residual, out, bias, has_bias, t, scale, key0, key1, offset, c,
                            words, wide_a, wide_b, f16)
        finished(work)
        first, stop = claim(work)


_DROPOUT_KERNELS = {  # dtype -> (driver, scale type, driver flags)
    torch.float64: (_dropout_float, np.float64, ()),
    torch.float32: (_dropout_float, np.float32, ()),
    torch.bfloat16: (_dropout_half, np.float32, (False,)),
    torch.float16: (_dropout_half, np.float32, (True,)),
}


def _flat_numpy(t: torch.Tensor) -> np.ndarray:
    """A 1-D numpy view of a contiguous CPU tensor; 16-bit floats as their uint16 bit patterns."""
    t = t.detach()  # numpy's reshape of the whole tensor: 1 us less per array than torch's
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.view(torch.int16).numpy().view(np.uint16).reshape(-1)
    return t.numpy().reshape(-1)


# ---------------------------------------------------------------------------
# Small calls: the drivers entered on the tensors' addresses.
#
# On the activations of a small MLP (2048 elements) the kernel takes ~1.5 us,
# while turning two tensors into numpy arrays and Numba typing them took 7-9
# us of each call.  A small call (one thread) therefore passes the tensors'
# data addresses as integers, and the entry point below makes arrays over
# them in compiled code.  ``dropout_into`` only takes this path after checking
# everything the arrays assume: CPU, the dtype of the entry point, contiguous,
# the same number of elements, addresses aligned to the element size, and x
# and out either the same memory or disjoint.  The tensors are referenced by
# the caller for the whole call, which runs on the calling thread.


@intrinsic
def _pointer(typingctx, address, like):
    """The integer ``address`` as a pointer to values of ``like``'s type."""
    if not isinstance(address, types.Integer):
        return None
    pointer_type = types.CPointer(like)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(pointer_type))

    return pointer_type(address, like), codegen


@_inline
def _whole_call(n):
    """The work of a call on ``n`` elements run on this thread: every chunk, ``_chunks(n)``."""
    return one_piece((n + CHUNK_ELEMENTS - 1) // CHUNK_ELEMENTS)


@_jit
def _dropout_float_at(x_address, out_address, n, like, t, scale, seed, offset):
    """``_dropout_float`` on the ``n`` values of ``like``'s type at the two addresses."""
    x = numba.carray(_pointer(x_address, like), n)
    out = numba.carray(_pointer(out_address, like), n)
    typed_scale = np.empty(1, out.dtype)  # the scale rounded to the dtype, as the driver takes it
    typed_scale[0] = scale
    _dropout_float(x, out, np.int32(t), typed_scale[0], np.uint64(seed),
                   np.uint64(offset), _whole_call(n))


@_jit
def _dropout_half_at(x_address, out_address, n, f16, t, scale, seed, offset):
    """``_dropout_half`` on the ``n`` 16-bit patterns at the two addresses."""
    x = numba.carray(_pointer(x_address, np.uint16(0)), n)
    out = numba.carray(_pointer(out_address, np.uint16(0)), n)
    _dropout_half(x, out, f16, np.int32(t), np.float32(scale), np.uint64(seed),
                  np.uint64(offset), _whole_call(n))


_SMALL_ENTRIES = {  # dtype -> (entry point, its dtype argument)
    torch.float64: (_dropout_float_at, np.float64(0)),
    torch.float32: (_dropout_float_at, np.float32(0)),
    torch.bfloat16: (_dropout_half_at, False),
    torch.float16: (_dropout_half_at, True),
}

_PLAIN = (torch.Tensor, torch.nn.Parameter)


def _small_call(x: torch.Tensor, out: torch.Tensor, n: int) -> tuple | None:
    """The entry point and addresses for ``x`` and ``out`` when the address path applies.

    Plain tensors only: a subclass (a wrapper such as DTensor or FakeTensor),
    a ZeroTensor or a nested tensor has no data at ``data_ptr()`` (it is 0),
    and a negative-bit view's memory holds ``-x``; those take the array path,
    which converts them or raises.
    """
    entry = _SMALL_ENTRIES.get(x.dtype)
    if (entry is None or type(x) not in _PLAIN or type(out) not in _PLAIN
            or out.dtype != x.dtype or out.numel() != n or not x.is_cpu or not out.is_cpu
            or x.layout != torch.strided or out.layout != torch.strided
            or not x.is_contiguous() or not out.is_contiguous() or x.is_neg() or out.is_neg()):
        return None
    x_address, out_address = x.data_ptr(), out.data_ptr()
    size = x.element_size()
    nbytes = n * size
    if not x_address or not out_address or x_address % size or out_address % size:
        return None
    if x_address != out_address and not (x_address + nbytes <= out_address
                                         or out_address + nbytes <= x_address):
        return None  # partly overlapping: not a layout dropkit makes
    return entry, x_address, out_address


def dropout_into(x: torch.Tensor, out: torch.Tensor, t: int, scale: float, seed: int,
                 offset: int) -> None:
    """``out = where(keep, x * scale, 0)``; x and out contiguous CPU tensors (may be the same)."""
    n = x.numel()
    if 0 < n < PARALLEL_MIN_ELEMENTS:  # runs on this thread: enter on the addresses
        call = _small_call(x, out, n)
        if call is not None:
            (entry, flag), x_address, out_address = call
            # seeds and offsets as their int64 bit patterns: one compiled signature
            entry(x_address, out_address, n, flag, t, scale, as_int64(seed), as_int64(offset))
            return
    try:
        kernel, scale_type, flags = _DROPOUT_KERNELS[x.dtype]
    except KeyError:
        raise TypeError(f"no CPU kernel for dtype {x.dtype}") from None
    run(kernel, _chunks(n), n, _flat_numpy(x), _flat_numpy(out), *flags, np.int32(t),
        scale_type(scale), np.uint64(seed), np.uint64(offset))


def keep_mask(numel: int, t: int, seed: int, offset: int) -> torch.Tensor:
    """Flat bool tensor of ``numel`` elements, True where kept."""
    out = torch.empty(numel, dtype=torch.uint8)  # torch's own storage, not numpy's
    if numel:
        run(_keep_mask_kernel, _chunks(numel, MASK_CHUNK_COUNTERS), numel, out.numpy(),
            np.int32(t), np.uint64(seed), np.uint64(offset))
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
    n = x.numel()
    run(kernel, _chunks(n), n, _flat_numpy(x), _flat_numpy(residual), _flat_numpy(out),
        bias_array, bias is not None, *flags, np.int32(t), scale_type(scale), np.uint64(seed),
        np.uint64(offset))
