"""float16 and bfloat16 on their bit patterns, for the CPU kernels (Numba).

Numba has no 16-bit float type, so the kernels see float16 and bfloat16
tensors as uint16 arrays and do their math in float32: a chunk is widened
exactly to float32 bit patterns (``wide``, read as values through a float32
view), computed on, and rounded once back, to nearest even, which is what
torch does when it multiplies a 16-bit tensor by a Python scalar.  NaN
payloads are not specified: a NaN stays a NaN.

Each float16 conversion is a pass over a whole chunk (``m`` elements) so that
LLVM vectorises it; ``f16`` picks float16 (True) or bfloat16 (False).
bfloat16 is the top half of a float32, so its conversions are a shift and a
rounding add on the bits: the kernels do them per element inside their one
loop (``bf16_value``, ``bf16_bits``, ``bf16_rounded``), through a bit cast
between float32 and uint32, instead of a pass each (measured: one pass per
conversion made the fused bias-dropout-add slower than its unfused sequence).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from dropkit.engine.philox_cpu import inline, kernel


@intrinsic
def _float32_of_bits(typingctx, bits):
    """The float32 whose bit pattern is the uint32 ``bits``."""
    if bits != types.uint32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _bits_of_float32(typingctx, value):
    """The uint32 bit pattern of the float32 ``value``."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(value), codegen


@inline
def _bf16_round(bits):
    """float32 bit pattern -> bfloat16 bit pattern, round to nearest even; NaN -> 0x7FC0."""
    if (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
        return np.uint16(0x7FC0)
    bias = np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return np.uint16((bits + bias) >> np.uint32(16))


@kernel
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


@kernel
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


@inline
def bf16_value(h):
    """The float32 value of the bfloat16 bit pattern ``h`` (exact)."""
    return _float32_of_bits(np.uint32(np.uint32(h) << np.uint32(16)))


@inline
def bf16_bits(v):
    """The bfloat16 bit pattern of the float32 ``v``, rounded to nearest even; NaN -> 0x7FC0."""
    return _bf16_round(_bits_of_float32(v))


@inline
def bf16_rounded(v):
    """``v`` rounded to bfloat16 and widened back: ``bf16_value(bf16_bits(v))``."""
    return bf16_value(bf16_bits(v))


@inline
def _bf16_widen_pass(src, wide, m):
    for e in range(m):  # bfloat16 is the top half of a float32: widening is a shift
        wide[e] = np.uint32(src[e]) << np.uint32(16)


@inline
def _bf16_round_pass(wide, dst, m):
    for e in range(m):
        dst[e] = _bf16_round(wide[e])


@inline
def _f16_widen_pass(src, wide, m):
    values = wide.view(np.float32)
    for e in range(m):
        wide[e] = _f16_widen(np.uint32(src[e]))
    for e in range(m):
        h = np.uint32(src[e])
        if (h & np.uint32(0x7C00)) == np.uint32(0):  # zero / subnormal: mantissa * 2**-24
            v = np.float32(h & np.uint32(0x3FF)) * _F16_STEP
            values[e] = -v if h & np.uint32(0x8000) else v


@inline
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


@inline
def widen_pass(src, wide, m, f16):
    """wide[:m] = the float32 bit patterns of the 16-bit patterns src[:m], exactly."""
    if f16:
        _f16_widen_pass(src, wide, m)
    else:
        _bf16_widen_pass(src, wide, m)


@inline
def round_pass(wide, dst, m, f16):
    """dst[:m] = the float32 values in wide[:m] rounded to 16 bits (``wide`` is clobbered)."""
    if f16:
        _f16_round_pass(wide, dst, m)
    else:
        _bf16_round_pass(wide, dst, m)
