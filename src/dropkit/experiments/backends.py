"""Where the planned runs execute: this process, worker processes, or a Ray cluster.

Every backend calls the same :func:`execute` on the same ``(experiment, config,
spec)`` and hands the record back to the driver, which alone writes results. A run
is a pure function of its spec and seed (``train.py`` seeds everything it draws),
and each run gets the same number of torch threads everywhere, so the numbers are
the same whichever backend ran them and in whichever order they finished.

- ``local`` with ``workers=1``: in this process, with per-epoch progress.
- ``local`` with ``workers=N``: N spawned processes (spawn, not fork: a forked
  child of a process that has run torch's thread pools can hang).
- ``ray``: one Ray task per run on a cluster (``address``) or on a Ray started
  here for ``workers`` runs at a time (``workers x threads`` CPUs). The nodes
  need the same dropkit and torch installed, and a task needs ``threads`` CPUs
  on one node.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from dropkit.experiments.train import RunSpec

BACKENDS = ("local", "ray")

#: per-process state of a worker: the run context (data sets loaded once)
_CONTEXTS: dict[str, Any] = {}


def default_workers() -> int:
    """The CPUs this process may run on (its affinity set, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def finite_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with every non-finite number replaced by None and ``diverged`` set.

    A run whose loss overflowed (``--lr 1e30``) is a result, not a crash: it is
    kept, marked, and results.json stays valid JSON.
    """
    diverged = False

    def clean(value: Any) -> Any:
        nonlocal diverged
        if isinstance(value, float) and not math.isfinite(value):
            diverged = True
            return None
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    cleaned = clean(record)
    cleaned["diverged"] = diverged or record.get("stopped_by") == "diverged"
    return cleaned


def _context(config: dict[str, Any]) -> Any:
    import torch

    from dropkit.experiments.train import RunContext

    device = str(config["device"])
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    ctx = _CONTEXTS.get(device)
    if ctx is None:
        ctx = _CONTEXTS[device] = RunContext(device=torch.device(device))
    ctx.config = config
    ctx.progress = None
    return ctx


def execute(
    experiment: str,
    config: dict[str, Any],
    spec: RunSpec,
    threads: int,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run one planned run in this process; return its JSON-safe record."""
    import torch

    from dropkit.experiments import registry

    torch.set_num_threads(threads)
    ctx = _context(config)
    ctx.progress = progress
    record = registry.get(experiment)().run_one(spec, ctx.dataset(spec.dataset), ctx)
    ctx.progress = None
    return finite_record(record)


def _init_worker(threads: int, loaders: dict[str, Callable]) -> None:
    import torch

    from dropkit.experiments import data

    torch.set_num_threads(threads)
    for name, loader in loaders.items():  # data sets registered in the driver
        data.register_dataset(name, loader)


OnDone = Callable[[RunSpec, dict[str, Any]], None]


def run_processes(
    experiment: str,
    config: dict[str, Any],
    todo: Sequence[RunSpec],
    *,
    threads: int,
    workers: int,
    on_done: OnDone,
) -> None:
    """Run ``todo`` on ``workers`` spawned processes; ``on_done`` as each finishes."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    loaders = _registered_loaders(todo)
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(todo)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads, loaders),
    )
    try:
        pending = {pool.submit(execute, experiment, config, s, threads): s for s in todo}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                spec = pending.pop(future)
                on_done(spec, future.result())
    finally:
        # on an interruption or error: drop what has not started and stop the workers
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()


def _registered_loaders(todo: Sequence[RunSpec]) -> dict[str, Callable]:
    """The data sets of ``todo`` registered in this process beyond the built-in ones (a
    test's data, a table the uci experiment registered): workers get them by reference."""
    from dropkit.experiments import data

    used = {s.dataset for s in todo}
    return {n: data._LOADERS[n] for n in data.names() if n in used and n not in data.BUILTIN}


def _ray_execute(
    experiment: str, config: dict[str, Any], spec: RunSpec, threads: int,
    loaders: dict[str, Callable],
) -> dict[str, Any]:
    _init_worker(threads, loaders)
    return execute(experiment, config, spec, threads)


def run_ray(
    experiment: str,
    config: dict[str, Any],
    todo: Sequence[RunSpec],
    *,
    threads: int,
    workers: int,
    address: str | None,
    on_done: OnDone,
) -> None:
    """Run ``todo`` as Ray tasks (one CPU each x ``threads``); ``on_done`` as each finishes.

    ``address`` None starts a local Ray with ``workers x threads`` CPUs (and stops
    it at the end); otherwise it is passed to ``ray.init`` (``"auto"``, ``"host:6379"`` or
    ``"ray://host:10001"``). If Ray is already initialised in this process, that
    instance is used as it is.
    """
    try:
        import ray
    except ImportError:
        raise RuntimeError(
            "--backend ray needs Ray: pip install 'dropkit[ray]'"
        ) from None

    started = False
    if not ray.is_initialized():
        if address is None:
            # ``workers`` runs at a time, each on ``threads`` CPUs (a task asking for
            # more CPUs than the cluster has would wait forever)
            ray.init(num_cpus=workers * threads, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(num_cpus=threads, max_retries=0)(_ray_execute)
        loaders = _registered_loaders(todo)
        pending = {remote.remote(experiment, config, s, threads, loaders): s for s in todo}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    spec = pending.pop(ref)
                    on_done(spec, ray.get(ref))
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
    finally:
        if started:
            ray.shutdown()
