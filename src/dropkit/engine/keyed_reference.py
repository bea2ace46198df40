"""Keyed masks in plain torch: the oracle of ``keyed_cpu`` and ``keyed_triton``.

The extension of the mask scheme written down in ``docs/mask-spec.md``,
section "Keyed masks": inside ``dk.mask_keys(seed, step, sample_ids)`` the
mask of one sample of one call is a pure function of

    (seed, step, call index, sample id, element position within the sample)

through the same Philox4x32-10, now with all four counter words in use::

    counter = (i // 8, sample_id, step, call | 2**31),  key = (lo32(seed), hi32(seed))

and lane ``i % 8`` of the output, exactly as the unkeyed scheme reads lanes.
The top bit of the fourth word marks a keyed counter: unkeyed counters have
``c2 = c3 = 0``, so no keyed mask ever reuses an unkeyed one under one seed.

Continuous noise (Gaussian and concrete dropout) takes whole 32-bit words:
element ``i`` of a sample is word ``i % 4`` of counter ``(i // 4, id, step,
call | 2**31)``, read as ``u = (w + 0.5) / 2**32`` in ``(0, 1)``.
"""

from __future__ import annotations

import torch

from dropkit.engine.reference import (
    LANES_PER_COUNTER,
    MASK32,
    num_counters,
    philox4x32_torch,
    threshold,
)

#: The top bit of the fourth counter word: set on every keyed counter.
KEYED_TAG = 1 << 31
WORD_LIMIT = 1 << 32
#: Call indices are 31-bit (the 32nd bit is the tag).
CALL_LIMIT = 1 << 31
WORDS_PER_COUNTER = 4


def check_keys(seed: int, step: int, call: int, per_sample: int,
               sample_ids: torch.Tensor | None = None) -> None:
    """Raise ValueError unless every key fits its counter word (docs/mask-spec.md)."""
    for name, value in (("seed", seed), ("step", step), ("call", call)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int; received {name}={value!r}")
    if not 0 <= seed < 1 << 64:
        raise ValueError(f"seed must be in [0, 2**64); received seed={seed}")
    if not 0 <= step < WORD_LIMIT:
        raise ValueError(f"step must be in [0, 2**32); received step={step}")
    if not 0 <= call < CALL_LIMIT:
        raise ValueError(
            f"a forward pass may draw at most 2**31 keyed masks; received call index {call}")
    if num_counters(per_sample) > WORD_LIMIT:
        raise ValueError(
            "a sample's mask must have at most 2**35 elements (its counters fill one 32-bit "
            f"word); received {per_sample} elements per sample")
    if sample_ids is not None and sample_ids.numel():
        low, high = int(sample_ids.min()), int(sample_ids.max())
        if low < 0 or high >= WORD_LIMIT:
            raise ValueError(
                f"sample ids must be in [0, 2**32); received ids from {low} to {high}")


def keyed_words_reference(per_sample: int, seed: int, step: int, call: int,
                          sample_ids: torch.Tensor, counters: int | None = None,
                          device=None) -> list[torch.Tensor]:
    """The four Philox words of counters ``(g, id, step, call | 2**31)``, g < counters.

    Each word is an int64 tensor of shape ``(len(sample_ids), counters)``.
    """
    ids = sample_ids.to(device=device, dtype=torch.int64).reshape(-1, 1)
    if counters is None:
        counters = num_counters(per_sample)
    c0 = torch.arange(counters, dtype=torch.int64, device=device).expand(ids.shape[0], -1)
    c1 = ids.expand(-1, counters)
    c2 = torch.full_like(c0, step)
    c3 = torch.full_like(c0, call | KEYED_TAG)
    return philox4x32_torch(c0, c1, c2, c3, seed & MASK32, seed >> 32)


def keyed_lanes_reference(per_sample: int, seed: int, step: int, call: int,
                          sample_ids: torch.Tensor, device=None) -> torch.Tensor:
    """The 16-bit lanes of each sample's ``per_sample`` elements: int32, ``(N, per_sample)``."""
    check_keys(seed, step, call, per_sample, sample_ids)
    words = keyed_words_reference(per_sample, seed, step, call, sample_ids, device=device)
    lanes = [(words[j // 2] >> (16 * (j % 2))) & 0xFFFF for j in range(LANES_PER_COUNTER)]
    n = words[0].shape[0]
    return torch.stack(lanes, dim=2).reshape(n, -1)[:, :per_sample].to(torch.int32)


def keyed_keep_mask_reference(shape, batch_dim: int | None, p: float, seed: int, step: int,
                              call: int, sample_ids: torch.Tensor, device=None) -> torch.Tensor:
    """Boolean mask of ``shape``, True where kept; ``shape[batch_dim]`` rows, one per id.

    A sample's elements are numbered in row-major order over the other dims.
    ``batch_dim=None``: the whole tensor is one sample (``sample_ids`` has one id).
    """
    shape = list(torch.Size(shape))
    if batch_dim is None:
        rows, rest = 1, shape
    else:
        rows, rest = shape[batch_dim], shape[:batch_dim] + shape[batch_dim + 1:]
    if sample_ids.numel() != rows:
        raise ValueError(f"{sample_ids.numel()} sample ids for a batch of {rows}")
    per_sample = torch.Size(rest).numel()
    u = keyed_lanes_reference(per_sample, seed, step, call, sample_ids, device)
    keep = (u >= threshold(p)).reshape([rows] + rest)
    return keep.reshape(shape) if batch_dim is None else keep.movedim(0, batch_dim)


def keyed_dropout_reference(x: torch.Tensor, p: float, scale: float, seed: int, step: int,
                            call: int, sample_ids: torch.Tensor,
                            batch_dim: int | None = 0) -> torch.Tensor:
    """``where(keep, x * scale, 0)`` with the keyed mask of ``x``'s shape; the spec's rounding."""
    keep = keyed_keep_mask_reference(x.shape, batch_dim, p, seed, step, call, sample_ids,
                                     x.device)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    scale_t = torch.tensor(scale, dtype=torch.float64).to(compute).item()
    scaled = (x.to(compute) * scale_t).to(x.dtype)
    return torch.where(keep, scaled, torch.zeros((), dtype=x.dtype, device=x.device))


def keyed_uniform_reference(shape, batch_dim: int, seed: int, step: int, call: int,
                            sample_ids: torch.Tensor, device=None) -> torch.Tensor:
    """float64 uniforms in (0, 1) of ``shape``, one 32-bit word per element, keyed per sample.

    Element ``i`` of a sample is word ``i % 4`` of counter ``(i // 4, id, step,
    call | 2**31)``; ``u = (w + 0.5) / 2**32`` is exact in float64 and never 0 or 1.
    """
    shape = list(torch.Size(shape))
    rows, rest = shape[batch_dim], shape[:batch_dim] + shape[batch_dim + 1:]
    per_sample = torch.Size(rest).numel()
    check_keys(seed, step, call, per_sample // 2 + 1, sample_ids)
    counters = -(-per_sample // WORDS_PER_COUNTER)
    words = keyed_words_reference(per_sample, seed, step, call, sample_ids, counters, device)
    w = torch.stack(words, dim=2).reshape(rows, -1)[:, :per_sample]
    u = (w.to(torch.float64) + 0.5) * 2.0**-32
    return u.reshape([rows] + rest).movedim(0, batch_dim)
