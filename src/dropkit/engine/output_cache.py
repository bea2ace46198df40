"""A small cache of large CPU output buffers, handed out again once nothing uses them.

Why: a fresh large CPU allocation is a new ``mmap``, and its first touch costs
a page fault and a zeroed page for every 4 KiB (2 MiB with huge pages).  On
the 2-core machine that was more than the dropout kernel itself (16M float32
forward: ~10 ms of kernel, ~14 ms of first touch).  Training calls dropout
with the same shapes every step, so the buffer that the previous step freed is
exactly the one this step needs: the idea of the CUDA caching allocator, kept
to a few large buffers.

How: the cache keeps a reference to the storage of every large output it
hands out.  A storage whose use count is 1 is referenced by the cache alone
(no tensor, view, tensor saved by autograd or numpy array uses it any more),
so it can be handed out again.  What callers get are ordinary torch tensors
from torch's allocator; the price is that up to ``limit`` bytes of free
buffers stay allocated.  ``dropkit.engine.empty_cache()`` releases them, and
the environment variable ``DROPKIT_CPU_OUTPUT_CACHE_MB=0`` turns the cache off.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import torch

# Only outputs this large are cached: below it, malloc reuses memory by itself.
MIN_BYTES = 4 << 20
DEFAULT_LIMIT_BYTES = 256 << 20
MAX_ENTRIES = 16

# torch's count of references to a storage (a private helper, present since
# torch 1.x); without it the cache stays off.
_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _limit_from_env() -> int:
    value = os.environ.get("DROPKIT_CPU_OUTPUT_CACHE_MB")
    if value is None:
        return DEFAULT_LIMIT_BYTES
    try:
        return max(0, int(float(value) * (1 << 20)))
    except ValueError:
        return DEFAULT_LIMIT_BYTES


class OutputCache:
    """Large CPU buffers handed out by ``empty``; reused when only the cache holds them."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._storages: list[torch.UntypedStorage] = []
        self._lock = threading.Lock()

    @staticmethod
    def _unused(storage: torch.UntypedStorage) -> bool:
        return _use_count(storage._cdata) == 1  # the cache's own reference only

    def empty(self, shape: torch.Size, dtype: torch.dtype,
              allocate: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A contiguous tensor of ``shape`` and ``dtype``: a reused buffer, or ``allocate()``."""
        nbytes = shape.numel() * dtype.itemsize
        if _use_count is None or nbytes < MIN_BYTES or nbytes > self.limit_bytes:
            return allocate()
        with self._lock:  # a buffer is taken (use count 2) before another thread looks
            for storage in self._storages:
                if storage.nbytes() == nbytes and self._unused(storage):
                    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)
            # make room: forget unused buffers until the new one fits under the limit
            kept = sum(s.nbytes() for s in self._storages)
            for storage in list(self._storages):
                if kept + nbytes <= self.limit_bytes and len(self._storages) < MAX_ENTRIES:
                    break
                if self._unused(storage):
                    self._storages.remove(storage)
                    kept -= storage.nbytes()
            out = allocate()
            if kept + nbytes <= self.limit_bytes and len(self._storages) < MAX_ENTRIES:
                self._storages.append(out.untyped_storage())
            return out

    def clear(self) -> None:
        """Forget every buffer; those no tensor uses are freed."""
        with self._lock:
            self._storages.clear()

    def cached_bytes(self) -> tuple[int, int]:
        """(bytes of buffers in use, bytes of unused buffers kept allocated)."""
        with self._lock:
            unused = sum(s.nbytes() for s in self._storages if self._unused(s))
            return sum(s.nbytes() for s in self._storages) - unused, unused


CPU_OUTPUTS = OutputCache(_limit_from_env())


def empty_cache() -> None:
    """Free the large CPU output buffers dropkit keeps for reuse (see ``output_cache``)."""
    CPU_OUTPUTS.clear()
