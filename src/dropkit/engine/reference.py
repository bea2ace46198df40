"""The mask scheme in plain Python and plain torch: slow, exact, the oracle.

Everything here follows ``docs/mask-spec.md`` literally, one step per line, so
that it can be read next to the spec.  The fast backends (``cpu_kernels``,
``triton_kernels``) must equal these functions bit for bit; the tests check it.

Philox4x32-10 is the counter-based generator of Salmon et al., "Parallel random
numbers: as easy as 1, 2, 3" (SC 2011), as implemented in Random123 and in
Triton's ``tl.randint4x``.  torch has no unsigned 32-bit multiply with a high
half, so the torch version keeps every 32-bit word in an ``int64`` tensor: the
product of two 32-bit words is exact modulo 2**64 in two's complement, which is
all ``mulhilo`` needs.
"""

from __future__ import annotations

import math

import torch

# Random123's constants (philox.h): the two round multipliers and the two
# Weyl-sequence key increments (golden ratio and sqrt(3) - 1, as 32-bit fractions).
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10

MASK32 = 0xFFFFFFFF
# Each Philox call yields 4 x 32 = 128 bits = 8 lanes of 16 bits: one lane per element.
LANES_PER_COUNTER = 8
# p is quantised to multiples of 1/65536: an element is dropped iff its 16-bit lane < threshold.
THRESHOLD_ONE = 1 << 16
COUNTER_LIMIT = 1 << 64


def philox4x32(counter: tuple[int, int, int, int], key: tuple[int, int],
               rounds: int = PHILOX_ROUNDS) -> tuple[int, int, int, int]:
    """Philox4x32-``rounds`` of one counter, on Python ints (for known answers and the spec)."""
    c0, c1, c2, c3 = (c & MASK32 for c in counter)
    k0, k1 = (k & MASK32 for k in key)
    for r in range(rounds):
        if r:  # Random123 bumps the key before every round but the first
            k0 = (k0 + PHILOX_W0) & MASK32
            k1 = (k1 + PHILOX_W1) & MASK32
        p0 = PHILOX_M0 * c0
        p1 = PHILOX_M1 * c2
        c0, c1, c2, c3 = (
            (p1 >> 32) ^ c1 ^ k0,
            p1 & MASK32,
            (p0 >> 32) ^ c3 ^ k1,
            p0 & MASK32,
        )
    return c0, c1, c2, c3


def threshold(p: float) -> int:
    """The integer threshold ``t = round(p * 65536)`` in [0, 65536]; halves round up.

    An element is dropped iff its 16-bit lane ``u < t``, so the drop
    probability actually used is ``t / 65536``.
    """
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"p must be a probability in [0, 1]; received p={p!r}")
    return lane_threshold(p)


def lane_threshold(p: float) -> int:
    """``threshold(p)`` for a ``p`` already checked where it entered the library.

    The kernels' entry points use this one: a rate is checked once, at the
    boundary of the public function that received it, not again per layer.
    """
    return int(math.floor(p * THRESHOLD_ONE + 0.5))


def num_counters(numel: int) -> int:
    """How many Philox counters a tensor of ``numel`` elements consumes: ceil(numel / 8)."""
    return -(-numel // LANES_PER_COUNTER)


def check_seed_offset(seed: int, offset: int, numel: int) -> None:
    """Raise ValueError unless ``seed`` is a 64-bit key and the counters do not pass 2**64.

    The counter of element ``i`` is ``offset + i // 8``; it must stay below
    2**64 (the scheme never wraps and never carries into the upper counter
    words), so ``offset + ceil(numel / 8) <= 2**64`` is required.
    """
    for name, value in (("seed", seed), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int; received {name}={value!r}")
    if not 0 <= seed < COUNTER_LIMIT:
        raise ValueError(f"seed must be in [0, 2**64); received seed={seed}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0; received offset={offset}")
    if offset + num_counters(numel) > COUNTER_LIMIT:
        raise ValueError(
            f"offset + ceil(numel / 8) must be <= 2**64 (counters never wrap); received "
            f"offset={offset}, numel={numel}"
        )


def philox4x32_torch(c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor,
                     k0: int, k1: int, rounds: int = PHILOX_ROUNDS) -> list[torch.Tensor]:
    """Philox4x32 over int64 tensors holding 32-bit words; returns the 4 output words."""
    for r in range(rounds):
        if r:
            k0 = (k0 + PHILOX_W0) & MASK32
            k1 = (k1 + PHILOX_W1) & MASK32
        p0 = c0 * PHILOX_M0  # exact mod 2**64; the high word is recovered with a mask
        p1 = c2 * PHILOX_M1
        c0, c1, c2, c3 = (
            ((p1 >> 32) & MASK32) ^ c1 ^ k0,
            p1 & MASK32,
            ((p0 >> 32) & MASK32) ^ c3 ^ k1,
            p0 & MASK32,
        )
    return [c0, c1, c2, c3]


def counter_words(offset: int, groups: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Low and high 32-bit words of the 64-bit counters ``offset + g`` for g < groups."""
    g = torch.arange(groups, dtype=torch.int64, device=device)
    low = (offset & MASK32) + (g & MASK32)
    high = (offset >> 32) + (g >> 32) + (low >> 32)  # carry from the low word
    return low & MASK32, high & MASK32


def lanes_reference(numel: int, seed: int, offset: int = 0, device=None) -> torch.Tensor:
    """The 16-bit lane ``u`` of each of ``numel`` elements, as an int32 tensor."""
    check_seed_offset(seed, offset, numel)
    groups = num_counters(numel)
    c0, c1 = counter_words(offset, groups, device)
    zero = torch.zeros_like(c0)
    words = philox4x32_torch(c0, c1, zero, zero, seed & MASK32, seed >> 32)
    lanes = []
    for j in range(LANES_PER_COUNTER):  # lane j = half (j % 2) of word j // 2, low half first
        lanes.append((words[j // 2] >> (16 * (j % 2))) & 0xFFFF)
    return torch.stack(lanes, dim=1).reshape(-1)[:numel].to(torch.int32)


def keep_mask_reference(shape, p: float, seed: int, offset: int = 0, device=None) -> torch.Tensor:
    """Boolean mask of ``shape``, True where the element is kept (``u >= t``)."""
    shape = torch.Size(shape)
    u = lanes_reference(shape.numel(), seed, offset, device)
    return (u >= threshold(p)).reshape(shape)


def dropout_reference(x: torch.Tensor, p: float, scale: float, seed: int,
                      offset: int = 0) -> torch.Tensor:
    """``where(keep, x * scale, 0)`` with the spec's rounding; a new contiguous tensor.

    float64 is multiplied in float64; float32, float16 and bfloat16 are
    multiplied in float32 (``float32(x) * float32(scale)``) and rounded once to
    their dtype, round-to-nearest-even, the way torch multiplies them by a scalar.
    """
    keep = keep_mask_reference(x.shape, p, seed, offset, x.device)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    scale_t = torch.tensor(scale, dtype=torch.float64).to(compute).item()
    scaled = (x.to(compute) * scale_t).to(x.dtype)
    return torch.where(keep, scaled, torch.zeros((), dtype=x.dtype, device=x.device))


def bias_dropout_add_reference(x: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor,
                               p: float, scale: float, seed: int,
                               offset: int = 0) -> torch.Tensor:
    """``residual + dropout(x + bias)``, step by step in torch: what the fused kernels must equal.

    The mask is laid on ``x + bias`` (``x``'s shape); each step rounds to the
    dtype as torch does, so the fused kernels reproduce every rounding.
    """
    h = x if bias is None else x + bias
    return residual + dropout_reference(h, p, scale, seed, offset)
