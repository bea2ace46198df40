"""No buffer of a dropout output is reused while anything may still reach it.

Issue "No silent wrong results": a cache of large CPU output buffers handed a
buffer out again once torch's storage use count said only the cache held it.
That count misses holders: a storage object (``y.untyped_storage()``,
``y.storage()``), and memory shared with another process (a multiprocessing
queue, a DataLoader worker's batch, ``share_memory_()``), of which the sender
keeps only a weak reference.  The next dropout call then wrote into memory
the holder still read: a DataLoader of 6 batches returned 4 holding the last
batch's samples.

Every test below makes an output of 8 MiB (above any size worth caching),
hands it to one route, drops the Python tensor, makes more outputs of the same
size and other content (what a buffer reused too early would be given to),
and checks that what the route reaches still holds the first output.  Inputs
are constant, ``tag`` everywhere, so a kept element reads ``2 * tag`` at
p=0.5 and a message can say whose values a holder reads instead.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np
import pytest
import torch
import torch.multiprocessing
import torch.utils.dlpack
from torch.utils.data import DataLoader, Dataset

import dropkit

N = 1 << 21  # float32 elements: 8 MiB per output
P = 0.5
TIMEOUT = 60.0  # seconds; generous for spawned processes on a loaded 2-core machine

pytestmark = pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")


def _input(tag: int, n: int = N) -> torch.Tensor:
    return torch.full((n,), float(tag))


def _tags(t: torch.Tensor) -> list[int]:
    """The inputs whose values ``t`` holds: kept elements read ``2 * tag``."""
    return [int(v) for v in (t[t != 0] / 2).unique().tolist()]


def _more_outputs(n: int = N, count: int = 4) -> None:
    """Outputs of the same size and other content, each dropped at once.

    A buffer reused too early is handed to one of these and overwritten.
    """
    for k in range(count):
        dropkit.dropout(_input(100 + k, n), p=P, seed=100 + k)


def _dropout_output(tag: int = 1) -> torch.Tensor:
    return dropkit.dropout(_input(tag), p=P, seed=tag)


# --------------------------------------------------------------------------
# Holders in this process


def _over(storage: torch.UntypedStorage) -> torch.Tensor:
    return torch.empty(0, dtype=torch.float32).set_(storage, 0, (N,))


def _pinned(y: torch.Tensor) -> torch.Tensor:
    try:
        return y.pin_memory()
    except RuntimeError as error:  # a CPU-only build has no pinned memory
        pytest.skip(f"pin_memory is not available on this build: {error}")


# route: (hold: output -> holder, read: holder -> a tensor over what the holder reaches)
ROUTES = {
    "view": (lambda y: y.view(2, -1), lambda v: v.reshape(-1)),
    "untyped_storage": (lambda y: y.untyped_storage(), _over),
    "typed_storage": (lambda y: y.storage(), lambda s: _over(s.untyped())),
    "numpy": (lambda y: y.numpy(), torch.from_numpy),
    "memoryview": (lambda y: memoryview(y.numpy()),
                   lambda m: torch.from_numpy(np.frombuffer(m, dtype=np.float32))),
    # a C-level holder: a ctypes array over the buffer (what a C extension is given)
    "ctypes_array": (lambda y: (ctypes.c_float * N).from_buffer(y.numpy()),
                     lambda a: torch.from_numpy(np.ctypeslib.as_array(a))),
    "dlpack_capsule": (torch.utils.dlpack.to_dlpack, torch.from_dlpack),
    "torch_from_dlpack": (lambda y: torch.from_dlpack(torch.utils.dlpack.to_dlpack(y)),
                          lambda t: t),
    "numpy_from_dlpack": (np.from_dlpack, torch.from_numpy),
    "pinned_copy": (_pinned, lambda t: t),
}


@pytest.mark.parametrize("route", ROUTES)
def test_an_output_held_through_a_route_keeps_its_values(route):
    hold, read = ROUTES[route]
    y = _dropout_output(tag=1)
    expected = y.clone()
    holder = hold(y)
    del y
    _more_outputs()
    seen = read(holder)
    assert torch.equal(seen, expected), (
        f"an output held through {route} was overwritten by later dropout calls: "
        f"it holds the values of inputs {_tags(seen)}, expected those of input 1 only")


# --------------------------------------------------------------------------
# Memory shared with another process.  Process targets are at module level:
# spawn pickles them by qualified name and the child imports this module
# (``tests/engine`` is on sys.path, which spawn passes on to the child).

_FORK = pytest.mark.skipif("fork" not in torch.multiprocessing.get_all_start_methods(),
                           reason="needs the fork start method")

# (start method, sharing strategy): every pair for a queue.
QUEUE_CASES = [
    pytest.param("fork", "file_descriptor", marks=_FORK),
    pytest.param("fork", "file_system", marks=_FORK),
    pytest.param("spawn", "file_descriptor", marks=pytest.mark.slow),
    pytest.param("spawn", "file_system", marks=pytest.mark.slow),
]


@pytest.fixture
def sharing_strategy(request):
    """torch's sharing strategy for this test (parametrized indirectly), restored afterwards."""
    before = torch.multiprocessing.get_sharing_strategy()
    torch.multiprocessing.set_sharing_strategy(request.param)
    yield request.param
    torch.multiprocessing.set_sharing_strategy(before)


def _compare_when_told(y, expected, go, mismatches) -> None:
    # One intra-op thread, as in a DataLoader worker: a forked child whose parent
    # ran torch's OpenMP team hangs in its first parallel op (GNU OpenMP is not
    # fork-safe), whatever dropkit does.
    torch.set_num_threads(1)
    go.wait(TIMEOUT)
    mismatches.put((int((y != expected).sum()), _tags(y)))


def _receive_then_compare(strategy, tensors, received, go, mismatches) -> None:
    torch.multiprocessing.set_sharing_strategy(strategy)
    y, expected = tensors.get(timeout=TIMEOUT)
    received.set()
    _compare_when_told(y, expected, go, mismatches)


def _finish(process) -> None:
    process.join(10)  # it has answered, or it never will
    if process.is_alive():
        process.kill()
        process.join()
        pytest.fail(f"the receiving process (pid {process.pid}) did not finish")


@pytest.mark.parametrize("start_method,sharing_strategy", QUEUE_CASES,
                         indirect=["sharing_strategy"])
def test_an_output_sent_through_a_queue_keeps_its_values(start_method, sharing_strategy):
    ctx = torch.multiprocessing.get_context(start_method)
    tensors, mismatches = ctx.Queue(), ctx.Queue()
    received, go = ctx.Event(), ctx.Event()
    receiver = ctx.Process(target=_receive_then_compare,
                           args=(sharing_strategy, tensors, received, go, mismatches))
    receiver.start()
    try:
        y = _dropout_output(tag=1)
        tensors.put((y, y.clone()))  # moved to shared memory; the sender keeps a weak reference
        del y
        assert received.wait(TIMEOUT), "the receiver never got the tensor"
        _more_outputs()
        go.set()
        wrong, tags = mismatches.get(timeout=TIMEOUT)
    finally:
        go.set()
        _finish(receiver)
    assert wrong == 0, (
        f"{wrong} of {N} elements of a tensor sent to a {start_method} child "
        f"({sharing_strategy}) were overwritten by the sender's later dropout calls: "
        f"it holds the values of inputs {tags}, expected those of input 1 only")


@_FORK
def test_an_output_in_shared_memory_keeps_its_values_for_a_forked_child():
    # After share_memory_() the pages are MAP_SHARED: a child forked now reads
    # the parent's pages, not a copy of them.
    ctx = torch.multiprocessing.get_context("fork")
    go, mismatches = ctx.Event(), ctx.Queue()
    y = _dropout_output(tag=1)
    expected = y.clone()
    y.share_memory_()
    child = ctx.Process(target=_compare_when_told, args=(y, expected, go, mismatches))
    child.start()  # the Process object drops its arguments once started
    try:
        del y
        _more_outputs()
        go.set()
        wrong, tags = mismatches.get(timeout=TIMEOUT)
    finally:
        go.set()
        _finish(child)
    assert wrong == 0, (
        f"{wrong} of {N} elements of a shared output were overwritten by later dropout "
        f"calls: the child reads the values of inputs {tags}, expected those of input 1 only")


# --------------------------------------------------------------------------
# DataLoader workers: a batch made by dropout in the worker goes to the main
# process through shared memory, and the worker's next batch must not reuse it.

SAMPLE = N // 8  # elements per sample: a batch of 8 is 8 MiB
BATCH = 8
BATCHES = 24  # 12 per worker, so a worker makes batches while earlier ones are held


class _Samples(Dataset):
    """Sample ``i`` is ``i + 1`` everywhere, so a batch row says whose sample it is."""

    def __len__(self) -> int:
        return BATCH * BATCHES

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return index, _input(index + 1, SAMPLE)


def _stack_and_drop(samples: list[tuple[int, torch.Tensor]]) -> tuple[list[int], torch.Tensor]:
    indices = [index for index, _ in samples]
    batch = torch.stack([sample for _, sample in samples])
    return indices, dropkit.dropout(batch, p=P, seed=indices[0])


class _DroppedOutItems(Dataset):
    """Each item is an 8 MiB dropout output, sent on as it is (``batch_size=None``)."""

    def __len__(self) -> int:
        return BATCHES

    def __getitem__(self, index: int) -> torch.Tensor:
        return _dropout_output(tag=index + 1)


# Spawned workers under "file_system" are left out: with torch 2.13 each such
# worker takes DataLoader's 5 s shutdown timeout to end (measured with a plain
# torch.stack collate_fn, no dropkit); the spawn queue test covers that pair.
LOADER_CASES = [
    pytest.param("fork", "file_descriptor", marks=_FORK),
    pytest.param("fork", "file_system", marks=_FORK),
    pytest.param("spawn", "file_descriptor", marks=pytest.mark.slow),
]


def _set_sharing_strategy(strategy: str, worker_id: int) -> None:
    torch.multiprocessing.set_sharing_strategy(strategy)


def _loader(dataset, start_method, strategy, **kwargs) -> DataLoader:
    return DataLoader(dataset, num_workers=2, multiprocessing_context=start_method,
                      worker_init_fn=functools.partial(_set_sharing_strategy, strategy),
                      timeout=TIMEOUT, **kwargs)


@pytest.mark.parametrize("start_method,sharing_strategy", LOADER_CASES,
                         indirect=["sharing_strategy"])
def test_batches_made_by_dropout_in_collate_fn_keep_their_samples(start_method,
                                                                   sharing_strategy):
    dataset = _Samples()
    loader = _loader(dataset, start_method, sharing_strategy, batch_size=BATCH,
                     collate_fn=_stack_and_drop)
    received = list(loader)  # every batch held until all have arrived
    assert len(received) == BATCHES
    wrong = {}
    for number, (indices, batch) in enumerate(received):
        assert indices == list(range(number * BATCH, (number + 1) * BATCH))
        expected = _stack_and_drop([dataset[i] for i in indices])[1].clone()
        if not torch.equal(batch, expected):
            wrong[number] = sorted({tag - 1 for row in batch for tag in _tags(row)})
    assert not wrong, (
        f"{len(wrong)} of {BATCHES} batches ({start_method} workers, {sharing_strategy}) "
        f"were overwritten after they were sent; batch b should hold samples "
        f"{BATCH}b to {BATCH}b + {BATCH - 1}, these hold the samples: {wrong}")


@pytest.mark.parametrize("start_method,sharing_strategy", LOADER_CASES,
                         indirect=["sharing_strategy"])
def test_items_made_by_dropout_in_getitem_keep_their_values(start_method, sharing_strategy):
    loader = _loader(_DroppedOutItems(), start_method, sharing_strategy, batch_size=None)
    received = list(loader)
    assert len(received) == BATCHES
    wrong = {}
    for index, item in enumerate(received):
        if not torch.equal(item, _dropout_output(tag=index + 1).clone()):
            wrong[index] = [tag - 1 for tag in _tags(item)]
    assert not wrong, (
        f"{len(wrong)} of {BATCHES} items ({start_method} workers, {sharing_strategy}) were "
        f"overwritten after they were sent; these hold the values of the items: {wrong}")
