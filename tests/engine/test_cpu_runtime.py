"""dropkit's CPU runtime: threads that claim pieces of the work, and the kernels' cache key.

The threads of a call share its work dynamically (``cpu_runtime.claim``), so
every unit must be done exactly once whatever the threads do, and a call must
not wait for a worker that never gets to run.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from dropkit.engine import cpu_kernels, cpu_runtime, philox_cpu, reference
from dropkit.engine.cpu_runtime import claim, finished


@philox_cpu.kernel
def _count_units(counts, work):
    """counts[u] += 1 for every unit u this thread claims."""
    first, stop = claim(work)
    while first < stop:
        for unit in range(first, stop):
            counts[unit] += 1
        finished(work)
        first, stop = claim(work)


def test_the_threads_of_a_call_do_every_unit_exactly_once():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for units in (1, 2, 31, 32, 33, 1000, 4097):
            counts = np.zeros(units, dtype=np.int64)
            cpu_runtime.run(_count_units, units, 1 << 20, counts)
            assert (counts == 1).all(), units
    finally:
        torch.set_num_threads(previous)


def test_a_call_does_not_wait_for_a_worker_that_cannot_start():
    """With dropkit's one worker busy elsewhere, the calling thread does all the work itself."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    release = threading.Event()
    try:
        blocker = cpu_runtime.executor(1).submit(release.wait, 60)
        x = torch.randn(1 << 18)
        out = torch.empty_like(x)
        done = threading.Event()

        def call():
            cpu_kernels.dropout_into(x, out, 30000, 1.25, 7, 3)
            done.set()

        threading.Thread(target=call, daemon=True).start()
        assert done.wait(30), "the call waited for the blocked worker"
        expected = reference.dropout_reference(x, 30000 / reference.THRESHOLD_ONE, 1.25, 7, 3)
        assert torch.equal(out.view(torch.int32), expected.view(torch.int32))
    finally:
        release.set()
        blocker.result()
        torch.set_num_threads(previous)


def test_the_cache_key_covers_files_that_exist():
    """A renamed source would silently drop out of the hash that keys the kernels' cache."""
    here = Path(philox_cpu.__file__).parent
    assert all((here / name).is_file() for name in philox_cpu._INLINED_SOURCES)


def test_steering_the_workers_survives_workers_that_are_gone(monkeypatch):
    """Steering is a hint: a worker id that no longer exists is skipped, not an error."""
    monkeypatch.setattr(cpu_runtime, "_worker_ids", [*cpu_runtime._worker_ids, 2**22 + 12345])
    monkeypatch.setattr(cpu_runtime, "_steered", (-1, 0))
    cpu_runtime._steer_workers()
