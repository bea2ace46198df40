"""``dropkit bench``: speed and memory of dropkit's dropout, side by side with torch's.

For each dtype and size it times, in the same run and interleaved repetition
by repetition (this machine is shared and noisy, so only ratios measured side
by side mean anything):

- ``dropkit``: ``dropkit.functional.dropout(x, p)`` (the Philox engine);
- ``torch``: ``torch.nn.functional.dropout(x, p)``;
- ``mul``: ``torch.mul(x, s, out=y)``, the memory-bound reference (one read,
  one write, nothing random, no allocation);

for the forward pass, the backward pass alone (``torch.autograd.grad`` on a
graph kept with ``retain_graph``) and forward + backward.  The reference for
the backward is one multiply, for forward + backward two.  Ratios are the
median over repetitions of the per-repetition ratio.  It also measures the
bytes autograd keeps for backward per input element, with
``torch.autograd.graph.saved_tensors_hooks``.

Two fused patterns are timed the same way, against their unfused spelling:

- ``bias_dropout_add``: ``dk.bias_dropout_add(x, b, r, p)`` against
  ``r + dk.dropout(x + b, p)`` and ``r + torch.nn.functional.dropout(x + b, p)``
  at each size and dtype (``x`` of ``(n / 1024, 1024)``, ``b`` of ``(1024,)``);
- ``residual_mlp``: one training step (forward, backward, SGD step) of a
  stack of pre-norm residual MLP blocks with the linear drop-path schedule
  ``dk.drop_path_rates(depth, max_rate)``, written with ``dk.ResidualDropPath``
  (the branch runs on the kept samples only) and with ``x + dk.DropPath(p)(f(x))``
  (multiply by zero), the same weights in both.

Results are printed and written as JSON under ``out`` (by default a cache
directory, never the current directory).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

DEFAULT_SIZES = (1 << 20, 16 << 20)
DEFAULT_DTYPES = ("float32", "bfloat16")
CONTENDERS = ("dropkit", "torch", "mul")
PHASES = ("forward", "backward", "forward+backward")

# The residual-MLP training step: samples, tokens per sample, width, blocks, max drop rate.
DEFAULT_RESIDUAL_MLP = {"batch": 64, "tokens": 8, "width": 128, "depth": 12, "max_rate": 0.3}
FUSED_WIDTH = 1024  # the bias_dropout_add rows use x of (n / 1024, 1024) and a (1024,) bias


def default_out_dir() -> Path:
    """Where results go by default: ``$XDG_CACHE_HOME/dropkit/bench``, else ``~/.cache/...``."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "dropkit" / "bench"


def result_path(out: str | os.PathLike | None) -> Path:
    """The JSON file for ``out``: a path ending in ``.json`` is the file itself, anything else
    a directory that gets ``bench.json``; ``None`` is :func:`default_out_dir`."""
    path = default_out_dir() if out is None else Path(out)
    return path if path.suffix == ".json" else path / "bench.json"


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


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


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


def _phase_functions(name: str, x: torch.Tensor, grad: torch.Tensor, p: float,
                     out: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The three timed callables of one contender."""
    scale = 1.0 / (1.0 - p)
    if name == "mul":
        def once():
            return torch.mul(x, scale, out=out)

        def twice():
            torch.mul(x, scale, out=out)
            return torch.mul(grad, scale, out=out)

        return {"forward": once, "backward": once, "forward+backward": twice}

    if name.startswith("dropkit"):
        from dropkit.functional import dropout as fn
    else:
        fn = torch.nn.functional.dropout
    leaf = x.detach().requires_grad_()
    kept = {}

    def forward():
        with torch.no_grad():
            return fn(x, p, training=True)

    def backward():
        if "y" not in kept:  # one graph, kept alive across repetitions
            kept["y"] = fn(leaf, p, training=True)
        return torch.autograd.grad(kept["y"], leaf, grad, retain_graph=True)

    def forward_backward():
        y = fn(leaf, p, training=True)
        return torch.autograd.grad(y, leaf, grad)

    return {"forward": forward, "backward": backward, "forward+backward": forward_backward}


def time_keep_mask(n: int, p: float, repeat: int) -> dict:
    """``engine.keep_mask`` against torch's Bernoulli draw of a bool mask, interleaved.

    The mask alone is what channel dropout, DropPath, LockedDropout and the
    other structured layers draw (their masks are small; this shows the rate).
    """
    from dropkit import engine

    contenders = {
        "dropkit": lambda: engine.keep_mask((n,), p, seed=1),
        "torch": lambda: torch.empty(n, dtype=torch.bool).bernoulli_(1.0 - p),
    }
    times = interleave(contenders, repeat)
    return {
        "numel": n,
        "median_ms": {name: 1e3 * statistics.median(t) for name, t in times.items()},
        "speedup_over_torch": statistics.median(
            u / v for u, v in zip(times["torch"], times["dropkit"], strict=True)),
    }


def _ratio(slow: list[float], fast: list[float]) -> float:
    return statistics.median(u / v for u, v in zip(slow, fast, strict=True))


def time_bias_dropout_add(n: int, dtype: torch.dtype, p: float, repeat: int) -> dict:
    """``dk.bias_dropout_add`` against ``r + dk.dropout(x + b)`` and torch's sequence.

    Forward under ``no_grad``, and forward + backward into ``x``, ``b`` and ``r``.
    """
    from dropkit.functional import bias_dropout_add, dropout

    width = FUSED_WIDTH if n % FUSED_WIDTH == 0 else n
    gen = torch.Generator().manual_seed(0)
    x, residual, grad = (torch.randn(n // width, width, generator=gen).to(dtype)
                         for _ in range(3))
    bias = torch.randn(width, generator=gen).to(dtype)
    leaves = [t.detach().requires_grad_() for t in (x, bias, residual)]
    sequences = {
        "fused": lambda a, b, r: bias_dropout_add(a, b, r, p),
        "unfused": lambda a, b, r: r + dropout(a + b, p),
        "torch": lambda a, b, r: r + torch.nn.functional.dropout(a + b, p),
    }

    def forward(fn):
        def call():
            with torch.no_grad():
                return fn(x, bias, residual)
        return call

    def forward_backward(fn):
        return lambda: torch.autograd.grad(fn(*leaves), leaves, grad)

    row = {"dtype": str(dtype).removeprefix("torch."), "numel": n, "width": width, "p": p,
           "repeat": repeat, "phases": {}}
    for phase, wrap in (("forward", forward), ("forward+backward", forward_backward)):
        times = interleave({name: wrap(fn) for name, fn in sequences.items()}, repeat)
        row["phases"][phase] = {
            "median_ms": {name: 1e3 * statistics.median(t) for name, t in times.items()},
            "speedup_over_unfused": _ratio(times["unfused"], times["fused"]),
            "speedup_over_torch": _ratio(times["torch"], times["fused"]),
        }
    return row


def _residual_mlp_models(batch: int, tokens: int, width: int, depth: int, max_rate: float):
    """The same pre-norm MLP blocks twice: with ``ResidualDropPath`` and with ``DropPath``."""
    import copy

    from torch import nn

    from dropkit.functional import drop_path_rates
    from dropkit.layers import DropPath, ResidualDropPath

    def mlp() -> nn.Module:
        return nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.GELU(),
                             nn.Linear(4 * width, width))

    class MultiplyByZero(nn.Module):
        def __init__(self, branches, rates):
            super().__init__()
            self.branches = nn.ModuleList(branches)
            self.paths = nn.ModuleList(DropPath(r) for r in rates)

        def forward(self, x):
            for branch, path in zip(self.branches, self.paths, strict=True):
                x = x + path(branch(x))
            return x

    rates = drop_path_rates(depth, max_rate)
    branches = [mlp() for _ in rates]
    skipping = nn.Sequential(*(ResidualDropPath(b, r) for b, r in zip(branches, rates,
                                                                         strict=True)))
    zeroing = MultiplyByZero(copy.deepcopy(branches), rates)
    return {"ResidualDropPath": skipping, "DropPath": zeroing}, rates


def time_residual_mlp(batch: int, tokens: int, width: int, depth: int, max_rate: float,
                      repeat: int) -> dict:
    """One training step of the residual MLP stack, ``ResidualDropPath`` against ``DropPath``."""
    torch.manual_seed(0)
    models, rates = _residual_mlp_models(batch, tokens, width, depth, max_rate)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, tokens, width, generator=gen)
    target = torch.randn(batch, tokens, width, generator=gen)

    def training_step(model):
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

        def step():
            optimizer.zero_grad(set_to_none=True)
            loss = (model(x) - target).square().mean()
            loss.backward()
            optimizer.step()
        return step

    times = interleave({name: training_step(m) for name, m in models.items()}, repeat)
    return {
        "config": {"batch": batch, "tokens": tokens, "width": width, "depth": depth,
                   "max_rate": max_rate},
        "mean_rate": statistics.fmean(rates),
        "repeat": repeat,
        **summary_ms(times),
        "speedup": _ratio(times["DropPath"], times["ResidualDropPath"]),
    }


def _progress(total: int, quiet: bool):
    """A rich progress bar when rich is installed and output is wanted, else a no-op."""
    if quiet:
        return nullcontext(None)
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:  # rich comes with the [experiments] extra
        return nullcontext(None)
    return Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                    transient=True)


def run(sizes=DEFAULT_SIZES, dtypes=DEFAULT_DTYPES, p: float = 0.5, repeat: int = 15,
        quiet: bool = False, residual_mlp: dict | bool | None = True) -> dict:
    """Measure everything; returns the JSON-ready result.

    ``residual_mlp``: the configuration of the training-step comparison
    (keys of :data:`DEFAULT_RESIDUAL_MLP`), ``True`` for that default, or
    ``None``/``False`` to skip it.
    """
    if residual_mlp is True:
        residual_mlp = DEFAULT_RESIDUAL_MLP
    import numba

    from dropkit import engine
    from dropkit.engine import cpu_kernels

    rows = []
    steps = len(sizes) * len(dtypes) * repeat
    with _progress(steps, quiet) as progress:
        task = progress.add_task("benchmark", total=steps) if progress else None
        for dtype_name in dtypes:
            dtype = getattr(torch, dtype_name)
            for n in sizes:
                gen = torch.Generator().manual_seed(0)
                x = torch.randn(n, generator=gen).to(dtype)
                grad = torch.randn(n, generator=gen).to(dtype)
                out = torch.empty_like(x)
                label = f"{dtype_name} {format_size(n)}"
                if progress:
                    progress.update(task, description=f"{label}: warm-up (Numba compile or cache)")
                start = time.perf_counter()
                engine.dropout(x, p, 2.0, seed=1)
                first_call_s = time.perf_counter() - start
                funcs = {name: _phase_functions(name, x, grad, p, out) for name in CONTENDERS}
                for name in CONTENDERS:  # warm every path once, untimed
                    for phase in PHASES:
                        funcs[name][phase]()
                times = {(name, phase): [] for name in CONTENDERS for phase in PHASES}
                for r in range(repeat):
                    if progress:
                        progress.update(task, description=f"{label}: repetition {r + 1}")
                    turn = r % len(CONTENDERS)
                    order = CONTENDERS[turn:] + CONTENDERS[:turn]  # rotate who goes first
                    for phase in PHASES:
                        for name in order:
                            times[(name, phase)].append(_timed(funcs[name][phase]))
                    if progress:
                        progress.advance(task)
                del funcs
                row = {"dtype": dtype_name, "numel": n, "p": p, "repeat": repeat,
                       "dropkit_first_call_s": first_call_s, "phases": {}}
                for phase in PHASES:
                    dk, tt, mul = (times[(name, phase)] for name in CONTENDERS)

                    def ratio(a, b):
                        return statistics.median(u / v for u, v in zip(a, b, strict=True))

                    row["phases"][phase] = {
                        "median_ms": {name: 1e3 * statistics.median(times[(name, phase)])
                                      for name in CONTENDERS},
                        # the least disturbed repetition: on a shared machine, a floor
                        "min_ms": {name: 1e3 * min(times[(name, phase)])
                                   for name in CONTENDERS},
                        "speedup_over_torch": ratio(tt, dk),
                        "dropkit_over_mul": ratio(dk, mul),
                        "torch_over_mul": ratio(tt, mul),
                    }
                from dropkit.functional import dropout as dk_dropout

                row["saved_bytes_per_element"] = {
                    "dropkit": saved_bytes_per_element(lambda t: dk_dropout(t, p), x),
                    "torch": saved_bytes_per_element(
                        lambda t: torch.nn.functional.dropout(t, p), x),
                }
                rows.append(row)
    masks = [time_keep_mask(n, p, repeat) for n in sizes]
    fused = [time_bias_dropout_add(n, getattr(torch, d), p, repeat)
             for d in dtypes for n in sizes]
    residual = time_residual_mlp(repeat=repeat, **residual_mlp) if residual_mlp else None
    return {
        "benchmark": "dropout forward/backward, dropkit vs torch vs torch.mul(x, s, out=y); "
                     "fused bias_dropout_add and ResidualDropPath vs their unfused spelling",
        "machine": {
            "platform": platform.platform(),
            "processor": cpu_name(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            # threads of dropkit's CPU kernels: torch's intra-op setting
            "dropkit_threads": cpu_kernels.num_threads(),
            "torch": torch.__version__,
            "numba": numba.__version__,
            # other work on the machine: the 1/5/15-minute load averages at the end
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
        "keep_mask": masks,
        "bias_dropout_add": fused,
        "residual_mlp": residual,
    }


def render(result: dict) -> str:
    """A plain-text table of the result."""
    lines = []
    m = result["machine"]
    lines.append(f"{m['processor']}, {m['cpu_count']} CPUs, torch {m['torch']} "
                 f"({m['torch_threads']} threads), numba {m['numba']} "
                 f"(dropkit kernels: {m['dropkit_threads']} threads)")
    if m.get("load_average"):
        lines.append("load average at the end (1, 5, 15 min): "
                     + ", ".join(f"{v:.2f}" for v in m["load_average"]))
    header = (f"{'dtype':9} {'size':>5} {'phase':17} {'dropkit ms':>10} "
              f"{'torch ms':>9} {'mul ms':>7} {'vs torch':>9} {'vs mul':>7}")
    lines.append(header)
    lines.append("-" * len(header))
    for row in result["rows"]:
        for phase, ph in row["phases"].items():
            ms = ph["median_ms"]
            lines.append(f"{row['dtype']:9} {format_size(row['numel']):>5} {phase:17} "
                         f"{ms['dropkit']:10.2f} "
                         f"{ms['torch']:9.2f} {ms['mul']:7.2f} "
                         f"{ph['speedup_over_torch']:8.1f}x "
                         f"{ph['dropkit_over_mul']:6.2f}x")
        saved = row["saved_bytes_per_element"]
        lines.append(f"{'':9} {'':5} bytes saved for backward per element: dropkit "
                     f"{saved['dropkit']:g}, torch {saved['torch']:g}; dropkit first call "
                     f"{row['dropkit_first_call_s']:.2f} s")
    for mask in result.get("keep_mask", []):
        ms = mask["median_ms"]
        lines.append(f"{'bool mask':9} {format_size(mask['numel']):>5} {'keep_mask':17} "
                     f"{ms['dropkit']:10.2f} {ms['torch']:9.2f} {'':7} "
                     f"{mask['speedup_over_torch']:8.1f}x   (torch: bernoulli_ on a bool tensor)")
    lines.append("'vs torch' = torch time / dropkit time; 'vs mul' = dropkit time / multiply "
                 "time; medians of per-repetition ratios.")
    if result.get("bias_dropout_add"):
        lines.append("")
        lines.append("bias_dropout_add: r + dropout(x + b), x of (n / 1024, 1024)")
        header = (f"{'dtype':9} {'size':>5} {'phase':17} {'fused ms':>10} {'unfused ms':>10} "
                  f"{'torch ms':>9} {'vs unfused':>10} {'vs torch':>9}")
        lines.append(header)
        lines.append("-" * len(header))
        for row in result["bias_dropout_add"]:
            for phase, ph in row["phases"].items():
                ms = ph["median_ms"]
                lines.append(f"{row['dtype']:9} {format_size(row['numel']):>5} {phase:17} "
                             f"{ms['fused']:10.2f} {ms['unfused']:10.2f} {ms['torch']:9.2f} "
                             f"{ph['speedup_over_unfused']:9.2f}x "
                             f"{ph['speedup_over_torch']:8.2f}x")
        lines.append("'unfused' = r + dk.dropout(x + b); 'torch' = r + F.dropout(x + b); "
                     "speed-ups are medians of per-repetition ratios.")
    residual = result.get("residual_mlp")
    if residual:
        c = residual["config"]
        lines.append("")
        lines.append(f"training step of {c['depth']} residual MLP blocks, x of ({c['batch']}, "
                     f"{c['tokens']}, {c['width']}), drop-path rates "
                     f"dk.drop_path_rates({c['depth']}, {c['max_rate']:g}) (mean "
                     f"{residual['mean_rate']:.3f}), SGD with momentum:")
        ms = residual["median_ms"]
        lines.append(f"  ResidualDropPath {ms['ResidualDropPath']:.1f} ms, DropPath "
                     f"{ms['DropPath']:.1f} ms: {residual['speedup']:.2f}x (median of "
                     f"per-repetition ratios; branch work alone would give at most "
                     f"1 / (1 - mean rate) = {1 / (1 - residual['mean_rate']):.2f}x)")
    return "\n".join(lines)


def main(sizes=DEFAULT_SIZES, dtypes=DEFAULT_DTYPES, p: float = 0.5, repeat: int = 15,
         out: str | os.PathLike | None = None, quiet: bool = False,
         residual_mlp: dict | bool | None = True) -> int:
    """Run, print the measurements and write them as JSON.

    ``out``: a directory (``bench.json`` is written in it) or a ``.json`` path;
    ``None`` for :func:`default_out_dir`, ``""`` to write nothing.
    """
    result = run(sizes=sizes, dtypes=dtypes, p=p, repeat=repeat, quiet=quiet,
                 residual_mlp=residual_mlp)
    print(render(result))
    if out != "":
        path = result_path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")
    return 0
