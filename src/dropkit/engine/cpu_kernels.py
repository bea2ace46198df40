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
and the parts run on a small pool of Python threads that dropkit owns (the
kernels release the GIL); small inputs run on the calling thread.  Numba's
own parallel layer is not used, so dropkit never touches Numba's
process-wide threading configuration (see ``_run``).  Large outputs are
advised to use transparent huge pages (see ``empty_like``).

Chunks are independent and every element's lane depends only on its index, so
the result does not depend on the number of threads or on the split.

float32 and float64 are multiplied in their own precision.  float16 and
bfloat16 are handled on their bit patterns: widened exactly to float32,
multiplied in float32 and rounded once back, round-to-nearest-even (what
torch does when it multiplies them by a Python scalar).  NaN payloads are not
specified: a kept NaN stays a NaN.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

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


@_jit
def _bf16_round(bits):
    """float32 bit pattern -> bfloat16 bit pattern, round to nearest even; NaN -> 0x7FC0."""
    if (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
        return np.uint16(0x7FC0)
    bias = np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return np.uint16((bits + bias) >> np.uint32(16))


@_inline
def _bf16_chunk(x, out, t, scale, key0, key1, offset, c, words, wide):
    """The bfloat16 chunk on uint16 bit patterns; math in float32."""
    start, stop, lanes = _chunk_lanes(c, x.size, key0, key1, offset, words)
    m = stop - start
    xs = x[start:stop]
    outs = out[start:stop]
    wide = wide[:m]
    values = wide.view(np.float32)
    for e in range(m):  # bfloat16 is the top half of a float32: widening is a shift
        wide[e] = np.uint32(xs[e]) << np.uint32(16)
    for e in range(m):
        values[e] = values[e] * scale
    for e in range(m):  # AND with all-ones (kept) or zero (dropped), as in _float_chunk
        outs[e] = _bf16_round(wide[e]) & (np.uint16(0) - np.uint16(np.int32(lanes[e]) >= t))


@_jit
def _f16_widen(h):
    """float16 bit pattern -> float32 bit pattern (exact) for normal numbers, inf and nan.

    Zero and subnormals are done by the caller (mantissa * 2**-24 in float32).
    """
    magnitude = (h & np.uint32(0x7FFF)) << np.uint32(13)
    exponent = magnitude & np.uint32(0x0F800000)
    bits = magnitude + np.uint32(112 << 23)  # rebias the exponent 15 -> 127
    if exponent == np.uint32(0x0F800000):  # inf / nan: exponent all ones
        bits += np.uint32(112 << 23)
    return bits | ((h & np.uint32(0x8000)) << np.uint32(16))


@_jit
def _f16_round(bits):
    """float32 bit pattern -> float16 bit pattern, round to nearest even (overflow -> inf).

    F. Giesen's ``float_to_half_fast3_rtne``; the subnormal case is done by the
    caller with a float add, so here ``bits`` is known to be >= 2**-14 or inf/nan.
    """
    sign = (bits >> np.uint32(16)) & np.uint32(0x8000)
    magnitude = bits & np.uint32(0x7FFFFFFF)
    if magnitude >= np.uint32((127 + 16) << 23):  # overflows to inf, or is inf/nan
        half = np.uint32(0x7E00) if magnitude > np.uint32(0x7F800000) else np.uint32(0x7C00)
    else:
        odd = (magnitude >> np.uint32(13)) & np.uint32(1)
        half = (magnitude + np.uint32(((15 - 127) << 23) & 0xFFFFFFFF) + np.uint32(0xFFF)
                + odd) >> np.uint32(13)
    return np.uint16(half | sign)


# 2**-24, the float16 subnormal step, and the magic number that aligns a float32
# below 2**-14 so that one float add rounds it to a float16 subnormal (Giesen).
_F16_STEP = np.float32(2.0**-24)
_F16_DENORM_MAGIC_BITS = np.uint32(((127 - 15) + (23 - 10) + 1) << 23)
_F16_DENORM_MAGIC = np.float32(0.5)  # 2**-1, whose bit pattern is _F16_DENORM_MAGIC_BITS


@_inline
def _f16_chunk(x, out, t, scale, key0, key1, offset, c, words, wide):
    """The float16 chunk on uint16 bit patterns; math in float32."""
    start, stop, lanes = _chunk_lanes(c, x.size, key0, key1, offset, words)
    m = stop - start
    xs = x[start:stop]
    outs = out[start:stop]
    wide = wide[:m]
    values = wide.view(np.float32)
    for e in range(m):
        wide[e] = _f16_widen(np.uint32(xs[e]))
    for e in range(m):
        h = np.uint32(xs[e])
        if (h & np.uint32(0x7C00)) == np.uint32(0):  # zero / subnormal: mantissa * 2**-24
            v = np.float32(h & np.uint32(0x3FF)) * _F16_STEP
            values[e] = -v if h & np.uint32(0x8000) else v
    for e in range(m):
        values[e] = values[e] * scale
    for e in range(m):
        bits = wide[e]
        if (bits & np.uint32(0x7FFFFFFF)) < np.uint32(113 << 23):  # a float16 subnormal or 0
            sign = (bits >> np.uint32(16)) & np.uint32(0x8000)
            values[e] = abs(values[e]) + _F16_DENORM_MAGIC  # one float add rounds it
            half = np.uint16((wide[e] - _F16_DENORM_MAGIC_BITS) | sign)
        else:
            half = _f16_round(bits)
        # AND with all-ones (kept) or zero (dropped), as in _float_chunk
        outs[e] = half & (np.uint16(0) - np.uint16(np.int32(lanes[e]) >= t))


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
def _dropout_bf16(x, out, t, scale, seed, offset):
    words, wide = _scratch()
    key0, key1 = key_words(seed)
    for c in range(_chunks(x.size)):
        _bf16_chunk(x, out, t, scale, key0, key1, offset, c, words, wide)


@_jit
def _dropout_f16(x, out, t, scale, seed, offset):
    words, wide = _scratch()
    key0, key1 = key_words(seed)
    for c in range(_chunks(x.size)):
        _f16_chunk(x, out, t, scale, key0, key1, offset, c, words, wide)


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


# Whole-chunk conversions between 16-bit patterns and float32, for the fused
# 16-bit kernels: ``wide`` holds float32 bit patterns (read as values through a
# float32 view).  The same arithmetic as _bf16_chunk and _f16_chunk.


@_inline
def _bf16_widen_pass(src, wide, m):
    for e in range(m):
        wide[e] = np.uint32(src[e]) << np.uint32(16)


@_inline
def _bf16_round_pass(wide, dst, m):
    for e in range(m):
        dst[e] = _bf16_round(wide[e])


@_inline
def _f16_widen_pass(src, wide, m):
    values = wide.view(np.float32)
    for e in range(m):
        wide[e] = _f16_widen(np.uint32(src[e]))
    for e in range(m):
        h = np.uint32(src[e])
        if (h & np.uint32(0x7C00)) == np.uint32(0):  # zero / subnormal: mantissa * 2**-24
            v = np.float32(h & np.uint32(0x3FF)) * _F16_STEP
            values[e] = -v if h & np.uint32(0x8000) else v


@_inline
def _f16_round_pass(wide, dst, m):
    """dst = float16 bits of the float32 values in ``wide`` (which it overwrites)."""
    values = wide.view(np.float32)
    for e in range(m):
        bits = wide[e]
        if (bits & np.uint32(0x7FFFFFFF)) < np.uint32(113 << 23):  # a float16 subnormal or 0
            sign = (bits >> np.uint32(16)) & np.uint32(0x8000)
            values[e] = abs(values[e]) + _F16_DENORM_MAGIC  # one float add rounds it
            dst[e] = np.uint16((wide[e] - _F16_DENORM_MAGIC_BITS) | sign)
        else:
            dst[e] = _f16_round(bits)


@_inline
def _widen_pass(src, wide, m, f16):
    if f16:
        _f16_widen_pass(src, wide, m)
    else:
        _bf16_widen_pass(src, wide, m)


@_inline
def _round_pass(wide, dst, m, f16):
    if f16:
        _f16_round_pass(wide, dst, m)
    else:
        _bf16_round_pass(wide, dst, m)


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
    _widen_pass(xs, a, m, f16)
    if has_bias:  # h = half(x + bias), kept as float32 in a
        _add_bias(av, bias, av, first + start, m)
        _round_pass(a, outs, m, f16)
        _widen_pass(outs, a, m, f16)
    for e in range(m):
        av[e] = av[e] * scale
    _round_pass(a, outs, m, f16)  # d = half(h * scale) ...
    for e in range(m):  # ... or +0 where dropped
        outs[e] &= np.uint16(0) - np.uint16(np.int32(lanes[e]) >= t)
    _widen_pass(outs, a, m, f16)
    _widen_pass(rs, b, m, f16)
    for e in range(m):
        av[e] = bv[e] + av[e]
    _round_pass(a, outs, m, f16)


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


# Below this many elements a call runs on the calling thread only: waking
# threads costs more than the work.
PARALLEL_MIN_ELEMENTS = 1 << 16

# Why a pool of our own and not Numba's ``parallel=True``.  Numba's default
# threading layer here is GNU libgomp, whose spinning threads made every later
# training step of the process cost 5-20x the CPU, and which terminates a
# forked child that enters a parallel region.  Its "workqueue" layer has
# neither problem but aborts the process when two threads launch parallel work
# at once, and the layer is chosen once for the whole process: selecting it
# broke users' own ``@njit(parallel=True)`` code.  Plain threads running the
# serial drivers on disjoint parts (the drivers release the GIL) have none of
# these problems: idle workers sleep on a queue, several callers may submit at
# once, and Numba's configuration stays the user's.
_pool: ThreadPoolExecutor | None = None
_pool_workers = 0
_pool_lock = threading.Lock()


def _reset_after_fork() -> None:
    """In a forked child the parent's worker threads do not exist and its locks
    may be held by a thread that is gone: start from nothing."""
    global _pool, _pool_workers, _pool_lock
    _pool, _pool_workers, _pool_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def num_threads() -> int:
    """Threads a large call uses: torch's intra-op setting (``torch.set_num_threads``)."""
    return max(1, torch.get_num_threads())


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is None or _pool_workers < workers:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dropkit")
            _pool_workers = workers
            if old is not None:
                old.shutdown(wait=False)  # its running tasks finish; it takes no new ones
        return _pool


def _run(kernel, numel: int, arrays: tuple[np.ndarray, ...], *args,
         pass_start: bool = False) -> None:
    """``kernel(*arrays, *args[:-1], offset)`` over all elements, split across threads.

    ``arrays`` are the flat element arrays (sliced per part); the last of
    ``args`` is the Philox counter offset, advanced by ``start // 8`` per part.
    With ``pass_start`` the kernel also gets the part's first element index
    (an ``np.int64``) as a last argument, for data that repeats along the
    elements (a broadcast bias).
    """
    *params, offset = args
    # at least PARALLEL_MIN_ELEMENTS / 2 elements per thread: below
    # PARALLEL_MIN_ELEMENTS in all, the calling thread does everything
    threads = min(num_threads(), numel // (PARALLEL_MIN_ELEMENTS // 2))
    first = (np.int64(0),) if pass_start else ()
    if threads < 2:
        kernel(*arrays, *params, offset, *first)
        return
    chunks = (numel + BLOCK_ELEMENTS - 1) // BLOCK_ELEMENTS
    per_part = (chunks + threads - 1) // threads * BLOCK_ELEMENTS
    starts = range(0, numel, per_part)

    def part(start: int) -> None:
        stop = min(start + per_part, numel)
        first = (np.int64(start),) if pass_start else ()
        kernel(*(a[start:stop] for a in arrays), *params,
               offset + np.uint64(start // 8), *first)

    pool = _executor(threads - 1)
    futures = [pool.submit(part, start) for start in starts[1:]]
    try:
        part(starts[0])  # the calling thread does the first part itself
    finally:
        for future in futures:
            future.result()  # re-raises a worker's exception


_DROPOUT_KERNELS = {  # dtype -> (driver, scale type)
    torch.float64: (_dropout_float, np.float64),
    torch.float32: (_dropout_float, np.float32),
    torch.bfloat16: (_dropout_bf16, np.float32),
    torch.float16: (_dropout_f16, np.float32),
}


# Large outputs are advised to use transparent huge pages (when the kernel is in
# THP "madvise" mode, as it often is): the first touch of a fresh 64 MiB output
# then takes a few hundred page faults instead of 16384.  Measured on the
# 2-core machine: a 16M float32 forward, allocation included, 36 -> 22 ms
# (median).  It is a hint on our own pages only; torch frees them as usual.
_HUGE_PAGE = 2 << 20
_HUGE_PAGE_MIN_BYTES = 4 << 20


def _madvise_hugepage():
    """libc's madvise and the THP mode allow the hint, else None."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            if "[madvise]" not in f.read():  # "always" needs no hint, "never" allows none
                return None
        import ctypes
        import mmap

        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        advice = mmap.MADV_HUGEPAGE
    except (OSError, AttributeError):
        return None
    return lambda start, length: madvise(start, length, advice)


_madvise = _madvise_hugepage() if sys.platform.startswith("linux") else None


def _empty_huge_like(x: torch.Tensor) -> torch.Tensor:
    """A contiguous ``torch.empty_like(x)`` whose large interior asks for huge pages."""
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    nbytes = out.numel() * out.element_size()
    if _madvise is not None and nbytes >= _HUGE_PAGE_MIN_BYTES:
        start = out.data_ptr()
        first = (start + _HUGE_PAGE - 1) & ~(_HUGE_PAGE - 1)  # whole huge pages inside the buffer
        last = (start + nbytes) & ~(_HUGE_PAGE - 1)
        if last > first:
            _madvise(first, last - first)  # a hint: failure changes nothing
    return out


def empty_like(x: torch.Tensor) -> torch.Tensor:
    """A fresh contiguous tensor like ``x`` for a kernel's output; large ones ask for huge pages.

    Always a new allocation from torch's allocator: dropkit never hands out a
    buffer again, since something it cannot see (another process holding
    shared memory, a storage object, a DLPack capsule, a C extension) may still
    reach an old one.
    """
    return _empty_huge_like(x)


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
        kernel, scale_type = _DROPOUT_KERNELS[x.dtype]
    except KeyError:
        raise TypeError(f"no CPU kernel for dtype {x.dtype}") from None
    _run(kernel, x.numel(), (_flat_numpy(x), _flat_numpy(out)), np.int32(t),
         scale_type(scale), np.uint64(seed), np.uint64(offset))


def keep_mask(numel: int, t: int, seed: int, offset: int) -> torch.Tensor:
    """Flat bool tensor of ``numel`` elements, True where kept."""
    out = torch.empty(numel, dtype=torch.uint8)  # torch's own storage, not numpy's
    if numel:
        _run(_keep_mask_kernel, numel, (out.numpy(),), np.int32(t), np.uint64(seed),
             np.uint64(offset))
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
    _run(kernel, x.numel(), (_flat_numpy(x), _flat_numpy(residual), _flat_numpy(out)),
         bias_array, bias is not None, *flags, np.int32(t), scale_type(scale), np.uint64(seed),
         np.uint64(offset), pass_start=True)

