"""The mask scheme as a Triton kernel, for CUDA tensors.

Each program handles ``BLOCK_COUNTERS`` Philox counters, i.e. ``8 *
BLOCK_COUNTERS`` consecutive elements.  ``tl.randint4x(seed, counter)`` is
Philox4x32-10 with counter words ``(lo32(counter), hi32(counter), 0, 0)`` and
key ``(lo32(seed), hi32(seed))``, exactly the spec's generator, so the only
work here is slicing the four words into eight 16-bit lanes.

Tested against the pure-torch reference with ``TRITON_INTERPRET=1`` on CPU
tensors (tests/engine/test_triton.py); on a GPU the same test runs natively.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_COUNTERS = 256
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@triton.jit
def philox_lanes(seed, c0, c1, c2, c3):
    """The 16-bit lanes (int32, [BLOCK, 8]) of Philox4x32-10 on counters ``(c0, c1, c2, c3)``.

    ``tl.philox`` with uint32 counter words is the spec's generator with key
    ``(lo32(seed), hi32(seed))``; lane j is half (j % 2) of word j // 2, low half first.
    """
    w0, w1, w2, w3 = tl.philox(seed, c0, c1, c2, c3)
    lane = tl.arange(0, 8)[None, :]
    word = tl.where(lane < 2, w0[:, None],
                    tl.where(lane < 4, w1[:, None], tl.where(lane < 6, w2[:, None], w3[:, None])))
    u = (word >> ((lane % 2) * 16).to(tl.uint32)) & 0xFFFF
    return u.to(tl.int32)


@triton.jit
def _lanes(seed, offset, pid, BLOCK_COUNTERS: tl.constexpr):
    """Element indices (int64, [BLOCK_COUNTERS, 8]) and their 16-bit lanes (int32)."""
    group = pid.to(tl.int64) * BLOCK_COUNTERS + tl.arange(0, BLOCK_COUNTERS).to(tl.int64)
    counter = offset.to(tl.uint64) + group.to(tl.uint64)  # 64-bit: never wraps (checked on host)
    c0 = counter.to(tl.uint32)  # the spec's counter: (lo32, hi32, 0, 0)
    zero = c0 * 0
    u = philox_lanes(seed, c0, (counter >> 32).to(tl.uint32), zero, zero)
    return group[:, None] * 8 + tl.arange(0, 8)[None, :], u


@triton.jit
def _narrow(value, like):
    """A float32 ``value`` rounded to ``like``'s dtype, to nearest even (float32: itself)."""
    if like.dtype == tl.bfloat16:
        # on the bits, as the CPU kernel does: the interpreter's own cast truncates
        bits = value.to(tl.uint32, bitcast=True)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        rounded = tl.where(value != value, 0x7FC0, rounded)  # NaN
        return rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    elif like.dtype == tl.float16:
        return value.to(tl.float16)
    else:
        return value


@triton.jit
def scaled_like(x, scale):
    """``x * scale`` as the spec multiplies: float64 in float64, the others in float32 then
    rounded once to x's dtype, to nearest even (docs/mask-spec.md)."""
    if x.dtype == tl.float64:
        return x * scale
    else:
        return _narrow(x.to(tl.float32) * scale.to(tl.float32), x)


# Scalars are not specialised: Triton would otherwise turn a value of 1 into a
# constexpr (``seed.to`` would fail) and compile a variant per alignment.
_SCALARS = ["n", "threshold", "seed", "offset"]


@triton.jit(do_not_specialize=_SCALARS)
def _dropout_kernel(x_ptr, out_ptr, scale_ptr, n, threshold, seed, offset,
                    BLOCK_COUNTERS: tl.constexpr):
    index, u = _lanes(seed, offset, tl.program_id(0), BLOCK_COUNTERS)
    inside = index < n
    x = tl.load(x_ptr + index, mask=inside)
    scaled = scaled_like(x, tl.load(scale_ptr))
    y = tl.where(u >= threshold, scaled, tl.zeros_like(scaled))
    tl.store(out_ptr + index, y, mask=inside)


@triton.jit(do_not_specialize=_SCALARS)
def _keep_mask_kernel(out_ptr, n, threshold, seed, offset, BLOCK_COUNTERS: tl.constexpr):
    index, u = _lanes(seed, offset, tl.program_id(0), BLOCK_COUNTERS)
    tl.store(out_ptr + index, (u >= threshold).to(tl.int8), mask=index < n)


@triton.jit(do_not_specialize=_SCALARS + ["period"])
def _bias_dropout_add_kernel(x_ptr, bias_ptr, residual_ptr, out_ptr, scale_ptr, n, period,
                             threshold, seed, offset, HAS_BIAS: tl.constexpr,
                             BLOCK_COUNTERS: tl.constexpr):
    """out = residual + where(keep, (x + bias) * scale, 0), rounded after each step as the
    unfused sequence is (bias element i is ``bias[i % period]``)."""
    index, u = _lanes(seed, offset, tl.program_id(0), BLOCK_COUNTERS)
    inside = index < n
    x = tl.load(x_ptr + index, mask=inside)
    residual = tl.load(residual_ptr + index, mask=inside)
    scale = tl.load(scale_ptr)
    if x.dtype == tl.float64:
        h = x
        if HAS_BIAS:
            h = x + tl.load(bias_ptr + index % period, mask=inside)
        scaled = h * scale
        out = residual + tl.where(u >= threshold, scaled, tl.zeros_like(scaled))
    else:
        h = x.to(tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + index % period, mask=inside)
            h = _narrow(h + bias.to(tl.float32), x).to(tl.float32)
        scaled = _narrow(h * scale.to(tl.float32), x)
        dropped = tl.where(u >= threshold, scaled, tl.zeros_like(scaled))
        out = _narrow(residual.to(tl.float32) + dropped.to(tl.float32), x)
    tl.store(out_ptr + index, out, mask=inside)


def supports(x: torch.Tensor) -> bool:
    return x.dtype in _DTYPES


def _grid(numel: int) -> tuple[int]:
    return (triton.cdiv(triton.cdiv(numel, 8), BLOCK_COUNTERS),)


def dropout_into(x: torch.Tensor, out: torch.Tensor, t: int, scale: float, seed: int,
                 offset: int) -> None:
    """``out = where(keep, x * scale, 0)``; x and out contiguous on one device (may alias)."""
    scale_t = torch.tensor([scale], dtype=torch.float64, device=x.device)
    _dropout_kernel[_grid(x.numel())](x, out, scale_t, x.numel(), t, seed, offset,
                                      BLOCK_COUNTERS=BLOCK_COUNTERS)


def keep_mask(numel: int, t: int, seed: int, offset: int, device) -> torch.Tensor:
    """Flat bool tensor of ``numel`` elements on ``device``, True where kept."""
    out = torch.empty(numel, dtype=torch.int8, device=device)
    _keep_mask_kernel[_grid(numel)](out, numel, t, seed, offset, BLOCK_COUNTERS=BLOCK_COUNTERS)
    return out.view(torch.bool)


def bias_dropout_add_into(x: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor,
                          out: torch.Tensor, t: int, scale: float, seed: int,
                          offset: int) -> None:
    """``out = residual + where(keep, (x + bias) * scale, 0)``; all contiguous on one device.

    ``bias``: None or flat, element ``i`` taking ``bias[i % bias.numel()]``.
    Multiply-add contraction is off: an FMA would round once where the
    unfused sequence (and the CPU kernel) rounds twice.
    """
    scale_t = torch.tensor([scale], dtype=torch.float64, device=x.device)
    period = 1 if bias is None else bias.numel()
    _bias_dropout_add_kernel[_grid(x.numel())](
        x, x if bias is None else bias, residual, out, scale_t, x.numel(), period, t, seed,
        offset, HAS_BIAS=bias is not None, BLOCK_COUNTERS=BLOCK_COUNTERS,
        enable_fp_fusion=False)
