"""``dropkit bench``: speed and memory of dropkit's dropout, side by side with torch's.

For each dtype and size it times, in the same run and interleaved repetition
by repetition (this machine is shared and noisy, so only ratios measured side
by side mean anything):

- ``dropkit``: ``dropkit.functional.dropout(x, p)`` (the Philox engine);
- ``torch``: ``torch.nn.functional.dropout(x, p)``;
- ``mul``: ``torch.mul(x, s, out=y)``, the memory-bound reference (one read,
  one write, nothing random, no allocation);

for the forward pass, the forward pass in place, the backward pass alone
(``torch.autograd.grad`` on a graph kept with ``retain_graph``) and forward +
backward.  The forward allocates its output, as ``F.dropout`` does; on a large
tensor the fresh pages cost more than the kernel (the multiply, into an
existing ``y``, pays none), so the in-place forward (``inplace=True``, against
``x.mul_(s)``) is the one that compares the kernel with a memory pass.  The
reference for the backward is one multiply, for forward + backward two.  Ratios are the
median over repetitions of the per-repetition ratio.  It also measures the
bytes autograd keeps for backward per input element, with
``torch.autograd.graph.saved_tensors_hooks``.

Small activations, ``(32, 64)`` and ``(100, 64)`` by default (the layers of a
small MLP), are timed apart, forward + backward only (``y = dropout(x, p);
y.backward(g)``), dropkit against torch, in CPU time per call: there the cost
is per call (argument checks, the seed, autograd), not per element.

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
directory, never the current directory). How things are timed is in
``dropkit.bench_timing``, what is timed in ``dropkit.bench_rows``; this module
runs the rows and shows them.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

from dropkit.bench_rows import (
    CONTENDERS,
    FUSED_WIDTH,
    PHASES,
    time_bias_dropout_add,
    time_dropout,
    time_keep_mask,
    time_residual_mlp,
    time_small_forward_backward,
)
from dropkit.bench_timing import (
    cpu_name,
    format_size,
    interleave,
    median_ratio,
    parse_size,
    saved_bytes_per_element,
    summary_ms,
)

__all__ = [
    "CONTENDERS", "DEFAULT_DTYPES", "DEFAULT_RESIDUAL_MLP", "DEFAULT_SIZES", "DEFAULT_SMALL_SHAPES",
    "FUSED_WIDTH", "PHASES", "cpu_name", "default_out_dir", "format_size", "interleave", "main",
    "median_ratio", "parse_size", "render", "result_path", "run", "saved_bytes_per_element",
    "summary_ms", "time_bias_dropout_add", "time_dropout", "time_keep_mask", "time_residual_mlp",
    "time_small_forward_backward",
]

DEFAULT_SIZES = (1 << 20, 16 << 20)
DEFAULT_DTYPES = ("float32", "bfloat16")
DEFAULT_SMALL_SHAPES = ((32, 64), (100, 64))

# The residual-MLP training step: samples, tokens per sample, width, blocks, max drop rate.
DEFAULT_RESIDUAL_MLP = {"batch": 64, "tokens": 8, "width": 128, "depth": 12, "max_rate": 0.3}


def default_out_dir() -> Path:
    """Where results go by default: ``$XDG_CACHE_HOME/dropkit/bench``, else ``~/.cache/...``."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "dropkit" / "bench"


def result_path(out: str | os.PathLike | None) -> Path:
    """The JSON file for ``out``: a path ending in ``.json`` is the file itself, anything else
    a directory that gets ``bench.json``; ``None`` is :func:`default_out_dir`."""
    path = default_out_dir() if out is None else Path(out)
    return path if path.suffix == ".json" else path / "bench.json"


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
        quiet: bool = False, residual_mlp: dict | bool | None = True,
        small_shapes: Sequence[Sequence[int]] = DEFAULT_SMALL_SHAPES) -> dict:
    """Measure everything; returns the JSON-ready result.

    ``residual_mlp``: the configuration of the training-step comparison
    (keys of :data:`DEFAULT_RESIDUAL_MLP`), ``True`` for that default, or
    ``None``/``False`` to skip it. ``small_shapes``: the activations of the
    small forward + backward rows (empty to skip them), in each of ``dtypes``.
    """
    if residual_mlp is True:
        residual_mlp = DEFAULT_RESIDUAL_MLP
    import numba

    from dropkit.engine import cpu_kernels

    rows = []
    steps = len(sizes) * len(dtypes) * repeat
    with _progress(steps, quiet) as progress:
        task = progress.add_task("benchmark", total=steps) if progress else None
        for dtype_name in dtypes:
            for n in sizes:
                def on_progress(description: str, done: int, first: int = len(rows) * repeat):
                    progress.update(task, description=description, completed=first + done)

                rows.append(time_dropout(n, dtype_name, p, repeat,
                                         on_progress if progress else None))
    small = [time_small_forward_backward(shape, d, p, repeat)
             for d in dtypes for shape in small_shapes]
    masks = [time_keep_mask(n, p, repeat) for n in sizes]
    fused = [time_bias_dropout_add(n, getattr(torch, d), p, repeat)
             for d in dtypes for n in sizes]
    residual = time_residual_mlp(repeat=repeat, **residual_mlp) if residual_mlp else None
    return {
        "benchmark": "dropout forward/backward, dropkit vs torch vs torch.mul(x, s, out=y); "
                     "forward+backward on small activations; "
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
        "small_forward_backward": small,
        "keep_mask": masks,
        "bias_dropout_add": fused,
        "residual_mlp": residual,
    }


def _table(columns: Sequence[tuple[str, int]]):
    """The header lines of a table and the function that formats its rows.

    ``columns``: ``(title, width)``; a positive width right-aligns the column,
    a negative one left-aligns it (names, not numbers). Cells are strings.
    """
    def cells(values: Sequence[str]) -> str:
        return " ".join(f"{value:{'>' if width > 0 else '<'}{abs(width)}}"
                        for value, (_, width) in zip(values, columns, strict=True))

    header = cells([title for title, _ in columns])
    return [header, "-" * len(header)], cells


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
    header, row = _table([("dtype", -9), ("size", 5), ("phase", -17), ("dropkit ms", 10),
                          ("torch ms", 9), ("mul ms", 7), ("vs torch", 9), ("vs mul", 7)])
    lines += header
    for dropout_row in result["rows"]:
        size = format_size(dropout_row["numel"])
        for phase, ph in dropout_row["phases"].items():
            ms = ph["median_ms"]
            lines.append(row([dropout_row["dtype"], size, phase, f"{ms['dropkit']:.2f}",
                              f"{ms['torch']:.2f}", f"{ms['mul']:.2f}",
                              f"{ph['speedup_over_torch']:.1f}x",
                              f"{ph['dropkit_over_mul']:.2f}x"]))
        saved = dropout_row["saved_bytes_per_element"]
        lines.append(f"{'':9} {'':5} bytes saved for backward per element: dropkit "
                     f"{saved['dropkit']:g}, torch {saved['torch']:g}; dropkit first call "
                     f"{dropout_row['dropkit_first_call_s']:.2f} s")
    for mask in result.get("keep_mask", []):
        ms = mask["median_ms"]
        lines.append(row(["bool mask", format_size(mask["numel"]), "keep_mask",
                          f"{ms['dropkit']:.2f}", f"{ms['torch']:.2f}", "",
                          f"{mask['speedup_over_torch']:.1f}x", ""]).rstrip()
                     + "   (torch: bernoulli_ on a bool tensor)")
    lines.append("'vs torch' = torch time / dropkit time; 'vs mul' = dropkit time / multiply "
                 "time; medians of per-repetition ratios. mul: torch.mul(x, s, out=y), in place "
                 "x.mul_(s); 'forward' allocates its output, 'forward in place' does not.")
    if result.get("small_forward_backward"):
        small = result["small_forward_backward"]
        lines.append("")
        lines.append("forward+backward on small activations: y = dropout(x, p); y.backward(g), "
                     "x requiring grad")
        header, row = _table([("dtype", -9), ("shape", 7), ("dropkit us", 10), ("torch us", 9),
                              ("vs torch", 9)])
        lines += header
        for r in small:
            us = {name: 1e3 * ms for name, ms in r["median_ms"].items()}
            lines.append(row([r["dtype"], "x".join(map(str, r["shape"])), f"{us['dropkit']:.1f}",
                              f"{us['torch']:.1f}", f"{r['speedup_over_torch']:.2f}x"]))
        lines.append(f"CPU time of the process per call, median of {small[0]['repeat']} "
                     f"repetitions of {small[0]['number']} calls; 'vs torch' = torch time / "
                     "dropkit time, median of per-repetition ratios.")
    if result.get("bias_dropout_add"):
        lines.append("")
        lines.append("bias_dropout_add: r + dropout(x + b), x of (n / 1024, 1024)")
        header, row = _table([("dtype", -9), ("size", 5), ("phase", -17), ("fused ms", 10),
                              ("unfused ms", 10), ("torch ms", 9), ("vs unfused", 10),
                              ("vs torch", 9)])
        lines += header
        for fused in result["bias_dropout_add"]:
            for phase, ph in fused["phases"].items():
                ms = ph["median_ms"]
                lines.append(row([fused["dtype"], format_size(fused["numel"]), phase,
                                  f"{ms['fused']:.2f}", f"{ms['unfused']:.2f}",
                                  f"{ms['torch']:.2f}", f"{ph['speedup_over_unfused']:.2f}x",
                                  f"{ph['speedup_over_torch']:.2f}x"]))
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
         residual_mlp: dict | bool | None = True,
         small_shapes: Sequence[Sequence[int]] = DEFAULT_SMALL_SHAPES) -> int:
    """Run, print the measurements and write them as JSON.

    ``out``: a directory (``bench.json`` is written in it) or a ``.json`` path;
    ``None`` for :func:`default_out_dir`, ``""`` to write nothing.
    """
    result = run(sizes=sizes, dtypes=dtypes, p=p, repeat=repeat, quiet=quiet,
                 residual_mlp=residual_mlp, small_shapes=small_shapes)
    print(render(result))
    if out != "":
        path = result_path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")
    return 0
