"""How ``dropkit bench`` measures: side-by-side timing, ratios, saved bytes, sizes, the CPU.

Nothing here knows what is timed (``dropkit.bench_rows`` does) or how it is
shown (``dropkit.bench``); the experiments time their own contenders with
:func:`interleave` and :func:`summary_ms` (through ``dropkit.bench``, which
re-exports them).
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_size(text: str) -> int:
    """'16M' -> 16 * 2**20, '512K' -> 512 * 2**10, '1000' -> 1000."""
    text = text.strip().upper()
    factor = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(float(text[:-1] if factor > 1 else text) * factor)


def format_size(n: int) -> str:
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def saved_bytes_per_element(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    """Bytes of the distinct storages autograd packs for backward while ``fn(x)`` runs."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    leaf = x.detach().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(leaf)
    # The input itself is not "saved for backward" by dropout; count it if a function keeps it.
    return sum(storages.values()) / x.numel()


def interleave(
    contenders: Mapping[str, Callable[[], object]],
    repeat: int,
    *,
    clock: Callable[[], float] = time.perf_counter,
    number: int = 1,
) -> dict[str, list[float]]:
    """Seconds per call of each contender, measured side by side.

    Each contender is called once untimed first (allocator, compilation and
    first-call overheads). Then ``repeat`` rounds: in each, every contender is
    timed once -- ``number`` calls in a row, the time divided by ``number`` --
    and the order is rotated every round, so that none always runs first
    (after another's cache traffic) or last. On a shared, noisy machine only
    times measured this way can be compared: a burst of load hits every
    contender of a round alike. Summarise the lists with :func:`summary_ms`
    (median, and the minimum: other processes only ever add time, so the
    fastest repetition is the least disturbed one).

    Args:
        contenders: ``{name: zero-argument callable}``, timed in this order in
            the first round.
        repeat: the number of rounds (>= 1).
        clock: ``time.perf_counter`` (wall time, the default) or
            ``time.process_time`` (CPU time of this process: time spent
            waiting for a core on a loaded machine is not counted; with several
            threads it is their total).
        number: calls per timing, for calls too short to time one at a time.

    Returns:
        ``{name: [seconds per call, one per round]}``.

    Examples::

        >>> x = torch.randn(1 << 20)
        >>> times = interleave({"torch": lambda: torch.nn.functional.dropout(x, 0.5),
        ...                     "dropkit": lambda: dropkit.dropout(x, 0.5)}, repeat=15)
        >>> summary_ms(times)["median_ms"]
    """
    if repeat < 1 or number < 1:
        raise ValueError(
            f"`repeat` and `number` must be positive integers. Received: repeat={repeat}, "
            f"number={number}"
        )
    for fn in contenders.values():
        fn()
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeat):
        turn = r % len(names)
        for name in names[turn:] + names[:turn]:
            fn = contenders[name]
            start = clock()
            for _ in range(number):
                fn()
            times[name].append((clock() - start) / number)
    return times


def summary_ms(times: Mapping[str, Sequence[float]]) -> dict[str, dict[str, float]]:
    """``{"median_ms": {name: ...}, "min_ms": {name: ...}}`` of :func:`interleave`'s seconds."""
    return {
        "median_ms": {name: 1e3 * statistics.median(t) for name, t in times.items()},
        # the least disturbed repetition: on a shared machine, a floor
        "min_ms": {name: 1e3 * min(t) for name, t in times.items()},
    }


def median_ratio(slow: Sequence[float], fast: Sequence[float]) -> float:
    """The median over repetitions of ``slow / fast``, both timed in the same round.

    A ratio per round, not a ratio of medians: a burst of load that slows one
    round slows both of its times, and cancels in their ratio.
    """
    return statistics.median(u / v for u, v in zip(slow, fast, strict=True))
