"""float16 and bfloat16 on their bit patterns, for the CPU kernels (Numba).

Numba has no 16-bit float type, so the kernels see float16 and bfloat16
tensors as uint16 arrays and do their math in float32: each value is widened
exactly to float32, computed on, and rounded once back, to nearest even,
which is what torch does when it multiplies a 16-bit tensor by a Python
scalar.  NaN payloads are not specified: a NaN stays a NaN.

``f16`` picks float16 (True) or bfloat16 (False).  The kernels convert per
element inside their one loop (``half_value``, ``half_bits``,
``half_rounded``) rather than in a pass over the chunk per conversion
(measured: a pass per conversion made the fused bias-dropout-add slower than
its unfused sequence).  bfloat16 is the top half of a float32, so its
conversions are a shift and a rounding add on the bits, through a bit cast
between float32 and uint32.  float16 converts in hardware (F16C's
``vcvtph2ps``/``vcvtps2ph``, exact and round-to-nearest-even) where the CPU
has it; elsewhere in software, in passes over a whole chunk
(``f16_widen_pass``, ``f16_round_pass``: ``wide`` holds the chunk's float32
bit patterns, read as values through a float32 view), so that LLVM still
vectorises them.
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


def _has_f16c() -> bool:
    """Whether the kernels are compiled for a CPU with F16C (float16 <-> float32 in hardware).

    Numba compiles for this machine's CPU unless ``NUMBA_CPU_NAME`` names
    another; then only ``NUMBA_CPU_FEATURES`` can grant F16C.  Without it LLVM
    would lower a half conversion to a library call that the JIT may not find.
    """
    from numba.core import config

    if config.CPU_NAME and config.CPU_NAME != "host":
        return "+f16c" in (config.CPU_FEATURES or "")
    try:
        from llvmlite import binding

        return bool(binding.get_host_cpu_features().get("f16c", False))
    except Exception:  # pragma: no cover - llvmlite without the query: the passes
        return False


# float16 converts per element in the kernels' one loop when the CPU converts
# in hardware (exact, round to nearest even, as the passes); else in passes.
F16C = _has_f16c()


@intrinsic
def _float32_of_f16(typingctx, bits):
    """The float32 value of the float16 bit pattern ``bits`` (exact; F16C only)."""
    if bits != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _f16_of_float32(typingctx, value):
    """The float16 bit pattern of the float32 ``value``, rounded to nearest even (F16C only)."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(value), codegen


@inline
def bf16_value(h):
    """The float32 value of the bfloat16 bit pattern ``h`` (exact)."""
    return _float32_of_bits(np.uint32(np.uint32(h) << np.uint32(16)))


@inline
def bf16_bits(v):
    """The bfloat16 bit pattern of the float32 ``v``, rounded to nearest even; NaN -> 0x7FC0."""
    return _bf16_round(_bits_of_float32(v))


if F16C:
    @inline
    def half_value(h, f16):
        """The float32 value of the 16-bit pattern ``h`` (float16 if ``f16`` else bfloat16)."""
        return _float32_of_f16(np.uint16(h)) if f16 else bf16_value(h)

    @inline
    def half_bits(v, f16):
        """The 16-bit pattern of the float32 ``v``, rounded to nearest even."""
        return _f16_of_float32(v) if f16 else bf16_bits(v)
else:
    # float16 never reaches the one-loop code here (``one_loop``): no half type in the IR
    @inline
    def half_value(h, f16):
        return bf16_value(h)

    @inline
    def half_bits(v, f16):
        return bf16_bits(v)


@inline
def half_rounded(v, f16):
    """``v`` rounded to the 16-bit type and widened back."""
    return half_value(half_bits(v, f16), f16)


@inline
def one_loop(f16):
    """Whether this 16-bit type converts per element in one loop (else in passes)."""
    return F16C or not f16


@inline
def f16_widen_pass(src, wide, m):
    """wide[:m] = the float32 bit patterns of the float16 patterns src[:m], exactly."""
    values = wide.view(np.float32)
    for e in range(m):
        wide[e] = _f16_widen(np.uint32(src[e]))
    for e in range(m):
        h = np.uint32(src[e])
        if (h & np.uint32(0x7C00)) == np.uint32(0):  # zero / subnormal: mantissa * 2**-24
            v = np.float32(h & np.uint32(0x3FF)) * _F16_STEP
            values[e] = -v if h & np.uint32(0x8000) else v


@inline
def f16_round_pass(wide, dst, m):
    """dst[:m] = float16 bits of the float32 values in wide[:m] (which it overwrites)."""
    values = wide.view(np.float32)
    for e in range(m):
        bits = wide[e]
        if (bits & np.uint32(0x7FFFFFFF)) < np.uint32(113 << 23):  # a float16 subnormal or 0
            sign = (bits >> np.uint32(16)) & np.uint32(0x8000)
            values[e] = abs(values[e]) + _F16_DENORM_MAGIC  # one float add rounds it
            dst[e] = np.uint16((wide[e] - _F16_DENORM_MAGIC_BITS) | sign)
        else:
            dst[e] = _f16_round(bits)
