"""dropkit next to fork and next to a user's own parallel Numba code.

A process forked while another thread is inside dropkit inherits whatever
that thread held (a lock, a thread team that no longer exists in the child);
the child must still be able to call dropout.  And dropkit must not change
Numba's process-wide threading layer under a user's own ``parallel=True``
functions: Numba's "workqueue" layer aborts the whole process ("Concurrent
access") when two threads launch parallel regions at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import torch

import dropkit

N = 1 << 21  # float32 elements: 8 MiB, large enough for the parallel path
P = 0.5
FORKS = 100
CHILD_TIMEOUT = 10.0  # seconds for one forked child's two dropout calls


def _input(tag: int, n: int = N) -> torch.Tensor:
    return torch.full((n,), float(tag))


def _wait(pid: int, timeout: float) -> int | None:
    """The child's exit code, or None if it was still running after ``timeout`` (then killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)  # polling a child: there is no event to wait on
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_while_another_thread_runs_dropout_never_hangs_the_child():
    large, small = _input(1), _input(2, 1000)
    expected_large = dropkit.dropout(large, p=P, seed=1).numpy().copy()
    expected_small = dropkit.dropout(small, p=P, seed=2).numpy().copy()
    busy_input = _input(3)
    running, stop = threading.Event(), threading.Event()

    def call_dropout_until_stopped():
        seed = 3
        while not stop.is_set():
            dropkit.dropout(busy_input, p=P, seed=seed)
            running.set()
            seed += 1

    busy = threading.Thread(target=call_dropout_until_stopped, daemon=True)
    busy.start()
    outcomes = []
    try:
        assert running.wait(60), "the busy thread never finished a dropout call"
        for _ in range(FORKS):
            pid = os.fork()
            if pid == 0:  # the child: no pytest, no torch ops of its own, just dropkit
                code = 1
                try:
                    same_large = np.array_equal(dropkit.dropout(large, p=P, seed=1).numpy(),
                                                expected_large)
                    same_small = np.array_equal(dropkit.dropout(small, p=P, seed=2).numpy(),
                                                expected_small)
                    code = 0 if same_large and same_small else 2
                finally:
                    os._exit(code)
            outcomes.append(_wait(pid, CHILD_TIMEOUT))
            if outcomes[-1] is None:
                break  # one hang is enough; do not pile up more
    finally:
        stop.set()
        busy.join()
    hung = [i for i, code in enumerate(outcomes) if code is None]
    wrong = [i for i, code in enumerate(outcomes) if code == 2]
    crashed = {i: code for i, code in enumerate(outcomes) if code not in (0, 2, None)}
    assert not hung, (
        f"forked child {hung[0]} of {FORKS} hung in dropout for {CHILD_TIMEOUT} s "
        f"(forked while another thread was inside dropkit)")
    assert not wrong, f"forked children {wrong} got wrong dropout results"
    assert not crashed, f"forked children exited with these codes: {crashed}"


# The child script: Python threads run a user's parallel Numba function and
# dropkit dropout at the same time, after either of them ran first.
_NUMBA_NEIGHBOUR = textwrap.dedent("""
    import sys
    import threading

    import numba
    import numpy as np
    import torch

    import dropkit
    from dropkit import engine

    try:  # a layer that allows concurrent launches; without one the user's code alone aborts
        from numba.np.ufunc import omppool  # noqa: F401
    except ImportError:
        try:
            from numba.np.ufunc import tbbpool  # noqa: F401
        except ImportError:
            print("neither the omp nor the tbb threading layer can be loaded")
            sys.exit(77)


    @numba.njit(parallel=True, nogil=True)
    def user_sum(a):
        total = 0.0
        for i in numba.prange(a.size):
            total += a[i]
        return total


    a = np.arange(1 << 20, dtype=np.float64)
    expected_sum = float(a.size * (a.size - 1) // 2)  # every partial sum is exact in float64
    x = torch.full((1 << 21,), 3.0)  # 8 MiB: dropkit's parallel path

    if sys.argv[1] == "dropkit-first":  # nothing of dropkit's engine has run before this
        dropkit.dropout(x, p=0.5, seed=7)
        user_sum(a)
    else:
        user_sum(a)
        dropkit.dropout(x, p=0.5, seed=7)
    expected = torch.where(engine.keep_mask(x.shape, 0.5, seed=7), x * 2.0, 0.0)

    start = threading.Barrier(5)
    errors = []

    def user_calls():
        start.wait()
        for _ in range(40):
            total = user_sum(a)
            if total != expected_sum:
                errors.append(f"user_sum gave {total}, expected {expected_sum}")

    def dropkit_calls():
        start.wait()
        for _ in range(10):
            if not torch.equal(dropkit.dropout(x, p=0.5, seed=7), expected):
                errors.append("dropkit.dropout gave a wrong result")

    threads = [threading.Thread(target=user_calls) for _ in range(3)]
    threads += [threading.Thread(target=dropkit_calls) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("threading layer:", numba.threading_layer())
    print("\\n".join(errors[:5]))
    sys.exit(1 if errors else 0)
""")


@pytest.mark.slow
@pytest.mark.parametrize("first", ["dropkit-first", "numba-first"])
def test_a_users_parallel_numba_code_in_threads_next_to_dropkit_does_not_abort(first):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    try:
        run = subprocess.run([sys.executable, "-c", _NUMBA_NEIGHBOUR, first], env=env,
                             capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"the child ({first}) hung for {error.timeout} s")
    if run.returncode == 77:
        pytest.skip(run.stdout.strip())
    code = run.returncode
    died = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    assert code == 0, (
        f"threads running a user's parallel Numba function next to dropkit ({first}): "
        f"{died}\nstdout: {run.stdout[-2000:]}\nstderr: {run.stderr[-2000:]}")


@pytest.mark.slow
def test_idle_worker_threads_do_not_spin_after_a_large_call():
    # Numba's libgomp layer left spinning threads that made every later training
    # step of the process cost several times its CPU; dropkit's own pool sleeps.
    # CPU time over wall time of a single-threaded training loop after large
    # (multi-threaded) calls: ~1.0 when idle workers sleep, ~2 if one spins.
    script = (
        "import time, torch\nfrom torch import nn\nimport dropkit as dk\n"
        "torch.set_num_threads(2)\n"
        "for _ in range(3):\n    dk.dropout(torch.randn(1 << 22), 0.5)\n"
        "torch.set_num_threads(1)\n"
        "net = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), dk.Dropout(0.5), nn.Linear(64, 10))\n"
        "opt = torch.optim.SGD(net.parameters(), lr=0.1)\n"
        "x, y = torch.randn(32, 40), torch.randint(0, 10, (32,))\n"
        "w0, c0 = time.perf_counter(), time.process_time()\n"
        "for _ in range(1500):\n"
        "    opt.zero_grad(); nn.functional.cross_entropy(net(x), y).backward(); opt.step()\n"
        "print((time.process_time() - c0) / (time.perf_counter() - w0))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip().splitlines()[-1]) < 1.5
