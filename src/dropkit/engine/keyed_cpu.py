"""Keyed masks on the CPU (Numba): ``keyed_reference`` made fast, bit for bit.

The same design as ``cpu_kernels``: chunks of ``BLOCK_COUNTERS`` counters
whose Philox words sit in a small scratch buffer, read back as uint16 lanes,
then a branch-free pass over the chunk's elements. What changes is the
counter: ``(g, sample_id, step, call | 2**31)`` with ``g`` the counter index
*within the sample*, so the work is a list of (row, chunk-of-row) items and a
row's chunks restart at counter 0. The items are split over dropkit's own
thread pool (``cpu_runtime``), so the result does not depend on the thread
count: every element's lanes depend only on its keys and its index.
"""

from __future__ import annotations

import numpy as np
import torch

from dropkit.engine import cpu_runtime
from dropkit.engine.cpu_runtime import claim, finished
from dropkit.engine.keyed_reference import KEYED_TAG
from dropkit.engine.philox_cpu import inline as _inline
from dropkit.engine.philox_cpu import kernel as _jit
from dropkit.engine.philox_cpu import key_words, philox_keyed_into, philox_listed_into

BLOCK_COUNTERS = 512
BLOCK_ELEMENTS = 8 * BLOCK_COUNTERS


@_inline
def _rows_per_item(m):
    """Rows per work item: one row's chunk, or as many short rows as fill one chunk."""
    return max(1, BLOCK_COUNTERS // ((m + 7) // 8))


@_inline
def _items(rows, m):
    per_item = _rows_per_item(m)
    if per_item > 1:
        return (rows + per_item - 1) // per_item
    return rows * ((m + BLOCK_ELEMENTS - 1) // BLOCK_ELEMENTS)


@_inline
def _item_lanes(item, rows, m, ids, step, tag, key0, key1, words, c0s, c1s):
    """Item -> (first row, rows, first and last element in the row, lanes per row, lanes).

    A long row is cut into chunks of BLOCK_ELEMENTS (one row per item); short
    rows are packed several to an item, row j's lanes starting at j * width.
    """
    width = (m + 7) // 8
    per_item = _rows_per_item(m)
    if per_item > 1:
        r = item * per_item
        count = min(per_item, rows - r)
        for j in range(count):  # counters (g, id, step, tag), g < width, row after row
            for g in range(width):
                c0s[j * width + g] = np.uint64(g)
                c1s[j * width + g] = np.uint64(ids[r + j])
        philox_listed_into(count * width, c0s, c1s, step, tag, key0, key1, words)
        return r, count, 0, m, 8 * width, words.view(np.uint16)
    per_row = (m + BLOCK_ELEMENTS - 1) // BLOCK_ELEMENTS
    r = item // per_row
    c = item - r * per_row
    start = c * BLOCK_ELEMENTS
    stop = min(start + BLOCK_ELEMENTS, m)
    counters = (stop - start + 7) // 8
    philox_keyed_into(np.uint64(c) * np.uint64(BLOCK_COUNTERS), counters, np.uint64(ids[r]), step,
                       tag, key0, key1, words)
    return r, 1, start, stop, 0, words.view(np.uint16)


@_inline
def _scratch():
    """An item's Philox words, and the first two counter words of its short rows."""
    counter_words = np.empty((2, BLOCK_COUNTERS), dtype=np.uint64)
    return np.empty(4 * BLOCK_COUNTERS, dtype=np.uint32), counter_words[0], counter_words[1]


@_jit
def _keyed_dropout_float(x, out, m, t, scale, seed, ids, step, tag, work):
    """out = where(u >= t, x * scale, +0.0) over the items claimed from ``work``; float32/64.

    ``x`` and ``out`` are the flat (N * m) arrays.
    """
    words, c0s, c1s = _scratch()
    key0, key1 = key_words(seed)
    zero = np.zeros(1, out.dtype)[0]  # +0.0 of out's type (a literal would be float64)
    rows = x.size // m
    first, stop = claim(work)
    while first < stop:
        for item in range(first, stop):
            r, count, start, end, width, lanes = _item_lanes(item, rows, m, ids, step, tag, key0,
                                                             key1, words, c0s, c1s)
            # short rows of a multiple of 8 elements: their lanes are contiguous, one pass
            aligned = count > 1 and width == m
            span = count * m if aligned else end - start
            for j in range(1 if aligned else count):
                base = (r + j) * m
                xs = x[base + start:base + start + span]
                outs = out[base + start:base + start + span]
                ls = lanes[j * width:]
                for e in range(span):
                    outs[e] = xs[e] * scale if np.int32(ls[e]) >= t else zero
        finished(work)
        first, stop = claim(work)


@_jit
def _keyed_mask(out, m, t, seed, ids, step, tag, work):
    """out = 1 where kept (u >= t) else 0, uint8, over the items claimed from ``work``."""
    words, c0s, c1s = _scratch()
    key0, key1 = key_words(seed)
    rows = out.size // m
    first, stop = claim(work)
    while first < stop:
        for item in range(first, stop):
            r, count, start, end, width, lanes = _item_lanes(item, rows, m, ids, step, tag, key0,
                                                             key1, words, c0s, c1s)
            for j in range(count):
                outs = out[(r + j) * m + start:(r + j) * m + end]
                ls = lanes[j * width:]
                for e in range(end - start):
                    outs[e] = np.uint8(np.int32(ls[e]) >= t)
        finished(work)
        first, stop = claim(work)


@_jit
def _count_items(rows, m):
    return _items(rows, m)


def _run(kernel, rows: int, m: int, *args) -> None:
    """``kernel(*args, work)`` over all (row, chunk) items, shared by dropkit's threads."""
    cpu_runtime.run(kernel, _count_items(rows, m), rows * m, *args)


_SCALE_TYPES = {torch.float32: np.float32, torch.float64: np.float64}


def supports(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in _SCALE_TYPES


def _ids(sample_ids: torch.Tensor) -> np.ndarray:
    return sample_ids.detach().to("cpu", torch.int64).contiguous().numpy().astype(np.uint64)


def keyed_dropout(x: torch.Tensor, t: int, scale: float, seed: int, step: int, call: int,
                  sample_ids: torch.Tensor) -> torch.Tensor:
    """A new contiguous ``where(keep, x * scale, 0)``; ``x`` contiguous (N, ...) float32/64."""
    out = cpu_runtime.empty_like(x)
    rows = x.shape[0]
    m = x.numel() // rows if rows else 0
    if x.numel():
        _run(_keyed_dropout_float, rows, m, x.detach().reshape(-1).numpy(), out.reshape(-1).numpy(),
             np.int64(m), np.int32(t), _SCALE_TYPES[x.dtype](scale), np.uint64(seed),
             _ids(sample_ids), np.uint64(step), np.uint64(call | KEYED_TAG))
    return out


def keyed_keep_mask(rows: int, m: int, t: int, seed: int, step: int, call: int,
                    sample_ids: torch.Tensor) -> torch.Tensor:
    """Bool tensor ``(rows, m)``, True where kept."""
    out = torch.empty((rows, m), dtype=torch.uint8)  # torch's own storage
    if rows * m:
        _run(_keyed_mask, rows, m, out.reshape(-1).numpy(), np.int64(m), np.int32(t),
             np.uint64(seed), _ids(sample_ids), np.uint64(step), np.uint64(call | KEYED_TAG))
    return out.view(torch.bool)
