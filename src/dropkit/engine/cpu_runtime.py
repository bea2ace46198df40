"""Where the CPU kernels run: dropkit's own thread pool, and their output buffers.

``run`` cuts a call into one contiguous part per thread and runs the parts on
a small pool of Python threads that dropkit owns (the Numba kernels release
the GIL); small calls run on the calling thread.  ``empty_like`` allocates an
output and advises the kernel to back a large one with transparent huge pages.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

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


def executor(workers: int) -> ThreadPoolExecutor:
    """dropkit's pool with at least ``workers`` threads."""
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is None or _pool_workers < workers:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dropkit")
            _pool_workers = workers
            if old is not None:
                old.shutdown(wait=False)  # its running tasks finish; it takes no new ones
        return _pool


def run(kernel, numel: int, block: int, arrays: tuple[np.ndarray, ...], *args,
        pass_start: bool = False) -> None:
    """``kernel(*arrays, *args[:-1], offset)`` over all elements, split across threads.

    ``arrays`` are the flat element arrays, sliced per part at multiples of
    ``block`` elements (the kernel's chunk); the last of ``args`` is the
    Philox counter offset, advanced by ``start // 8`` per part.
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
    chunks = (numel + block - 1) // block
    per_part = (chunks + threads - 1) // threads * block
    starts = range(0, numel, per_part)

    def part(start: int) -> None:
        stop = min(start + per_part, numel)
        first = (np.int64(start),) if pass_start else ()
        kernel(*(a[start:stop] for a in arrays), *params,
               offset + np.uint64(start // 8), *first)

    pool = executor(threads - 1)
    futures = [pool.submit(part, start) for start in starts[1:]]
    try:
        part(starts[0])  # the calling thread does the first part itself
    finally:
        for future in futures:
            future.result()  # re-raises a worker's exception


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
