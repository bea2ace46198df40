"""Where the CPU kernels run: dropkit's own thread pool, and their output buffers.

``run`` runs a kernel on the calling thread and on a small pool of Python
threads that dropkit owns (the Numba kernels release the GIL); small calls run
on the calling thread only.  The threads share the work dynamically: it is a
range of independent units (a kernel's chunks), cut into pieces that each
thread claims one at a time with an atomic counter (``claim``), so a worker
that wakes late, or never gets a core on a busy machine, only does less of the
work instead of holding the call up.  Which thread does a piece never changes
its result.  ``empty_like`` allocates an output and advises the kernel to back
a large one with transparent huge pages.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_all

import numpy as np
import torch
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from dropkit.engine.philox_cpu import inline, kernel

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
_worker_ids: list[int] = []  # native thread ids of the pool's workers
_steered = (-1, 0)  # (the caller's CPU, workers) when the workers were last steered off it


def _reset_after_fork() -> None:
    """In a forked child the parent's worker threads do not exist and its locks
    may be held by a thread that is gone: start from nothing."""
    global _pool, _pool_workers, _pool_lock, _worker_ids, _steered
    _pool, _pool_workers, _pool_lock = None, 0, threading.Lock()
    _worker_ids, _steered = [], (-1, 0)


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
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dropkit",
                                       initializer=_register_worker)
            _pool_workers = workers
            if old is not None:
                old.shutdown(wait=False)  # its running tasks finish; it takes no new ones
        return _pool


def _register_worker() -> None:
    _worker_ids.append(threading.get_native_id())


def _load_sched_getcpu():
    """libc's ``sched_getcpu`` where threads can be given an affinity (Linux), else None."""
    if not (sys.platform.startswith("linux") and hasattr(os, "sched_setaffinity")):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None).sched_getcpu
    except (OSError, AttributeError):
        return None


_sched_getcpu = _load_sched_getcpu()


def _steer_workers() -> None:
    """Keep dropkit's workers off the CPU the calling thread runs on.

    Measured on a 2-vCPU VM (Linux 6.18): a woken worker was placed on its
    waker's CPU and preempted it, so the two threads of a call ran one after
    the other (1M float32 elements: 2 threads as slow as 1, pieces done
    0/32 or 32/0).  An affinity without the caller's CPU makes the scheduler
    wake the worker on another one; the calling thread's own affinity is not
    touched.  Done again only when the caller's CPU or the workers change.
    """
    global _steered
    if _sched_getcpu is None:
        return
    cpu = _sched_getcpu()
    if (cpu, len(_worker_ids)) == _steered:
        return
    _steered = (cpu, len(_worker_ids))
    others = os.sched_getaffinity(0) - {cpu}
    if not others:
        return
    for worker in list(_worker_ids):
        try:
            os.sched_setaffinity(worker, others)
        except OSError:  # a worker of a replaced pool that has exited, or not permitted
            pass


# The work array each thread's call of a kernel gets, int64: the next piece to
# claim, the pieces finished, then the split: pieces, units per piece, units.
_NEXT, _DONE, _PIECES, _PER_PIECE, _UNITS = range(5)
# Pieces per thread: small enough that the last piece a thread finishes after
# the others is short, large enough that claiming one costs nothing.
_PIECES_PER_THREAD = 16
# How often the calling thread polls for the others' last pieces before it
# sleeps on their futures: about 150 us on a Zen 4 core, many pieces of a 1M
# float32 call (~10 us each); the sleep's wake-up costs 40-120 us on the test VM.
_POLLS = 1 << 19


def _item_pointer(context, builder, signature, args):
    array_type = signature.args[0]
    array = context.make_array(array_type)(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, array_type, array, [args[1]],
                                    wraparound=False)


@intrinsic
def _fetch_add(typingctx, array, index):
    """``array[index] += 1`` atomically (sequentially consistent); the value before."""
    def codegen(context, builder, signature, args):
        pointer = _item_pointer(context, builder, signature, args)
        return builder.atomic_rmw("add", pointer, context.get_constant(types.int64, 1), "seq_cst")
    return types.int64(array, index), codegen


@intrinsic
def _load(typingctx, array, index):
    """``array[index]``, an atomic (sequentially consistent) load."""
    def codegen(context, builder, signature, args):
        return builder.load_atomic(_item_pointer(context, builder, signature, args), "seq_cst", 8)
    return types.int64(array, index), codegen


@inline
def claim(work):
    """The units ``[first, stop)`` of the next unclaimed piece; ``first == stop`` when none is left.

    A driver loops ``first, stop = claim(work)`` / ``while first < stop`` over
    its pieces and calls ``finished(work)`` after each.
    """
    piece = _fetch_add(work, _NEXT)
    first = min(piece * work[_PER_PIECE], work[_UNITS])
    return first, min(first + work[_PER_PIECE], work[_UNITS])


@inline
def finished(work):
    """A claimed piece is written: its release makes the writes visible to ``_all_finished``."""
    _fetch_add(work, _DONE)


@inline
def one_piece(units):
    """The work array of a kernel call run on the calling thread alone: one piece of every unit.

    The compiled twin of the array ``run`` makes for a call below the parallel
    size, for entry points that run a driver from compiled code.
    """
    work = np.zeros(5, dtype=np.int64)
    work[_PIECES] = 1
    work[_PER_PIECE] = units
    work[_UNITS] = units
    return work


@kernel
def _all_finished(work, polls):
    """Whether every piece is finished, polling at most ``polls`` times."""
    for _ in range(polls):
        if _load(work, _DONE) >= work[_PIECES]:
            return True
    return False


def run(kernel, units: int, numel: int, *args) -> None:
    """``kernel(*args, work)`` over ``units`` work units of ``numel`` elements in all.

    The calling thread runs the kernel itself and, for a large call, so do up
    to ``num_threads() - 1`` of dropkit's workers; each kernel call claims
    pieces of the units from ``work`` until none is left.
    """
    # at least PARALLEL_MIN_ELEMENTS / 2 elements per thread: below
    # PARALLEL_MIN_ELEMENTS in all, the calling thread does everything
    threads = min(num_threads(), numel // (PARALLEL_MIN_ELEMENTS // 2), units)
    if threads < 2:
        kernel(*args, np.array([0, 0, 1, units, units], dtype=np.int64))
        return
    per_piece = -(-units // (_PIECES_PER_THREAD * threads))
    pieces = -(-units // per_piece)
    work = np.array([0, 0, pieces, per_piece, units], dtype=np.int64)
    pool = executor(threads - 1)
    _steer_workers()
    futures = [pool.submit(kernel, *args, work) for _ in range(threads - 1)]
    try:
        kernel(*args, work)
    finally:
        # A worker still busy with its last piece is polled for, then slept on.
        # One that has not started yet finds nothing left to claim: no need to wait for it.
        if not _all_finished(work, _POLLS):
            wait_all(futures)
    if work[_DONE] < pieces:  # a worker failed holding a piece: its exception says why
        for future in futures:
            future.result()
        raise RuntimeError("a dropkit worker thread stopped before finishing its work")


# Large outputs are advised to use transparent huge pages (when the kernel is in
# THP "madvise" mode, as it often is): the first touch of a fresh 64 MiB output
# then takes a few hundred page faults instead of 16384.  Measured on the
# 2-core machine: a 16M float32 forward, allocation included, 36 -> 22 ms
# (median).  It is a hint on our own pages only; torch frees them as usual.
# Only from 32 MiB, glibc's largest mmap threshold: smaller blocks are reused
# from the heap after the first free, with no fresh pages to fault, and there
# the hint cost 2-6% of a kernel call (4-16 MiB); from 32 MiB every block is a
# fresh mapping and the hint saved 1.3-2.3x (32 and 64 MiB).
_HUGE_PAGE = 2 << 20
_HUGE_PAGE_MIN_BYTES = 32 << 20


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
