"""Dropout speed and memory: dropkit vs torch vs the memory-bound multiply.

The same measurement as ``dropkit bench`` (see ``dropkit.bench`` for what is
timed and how), runnable from a checkout:

    python benchmarks/bench_dropout.py                 # 1M and 16M, float32 and bfloat16
    python benchmarks/bench_dropout.py --sizes 16M --dtypes float32 --repeat 31
    python benchmarks/bench_dropout.py --threads 1     # one core each: torch and dropkit

Besides dropout it times the fused ``bias_dropout_add`` against its unfused
spelling and a residual-MLP training step with ``ResidualDropPath`` against
``DropPath``. Results go to ``~/.cache/dropkit/bench/bench.json``
(``$XDG_CACHE_HOME`` respected) unless ``--out DIR`` (or ``--out FILE.json``)
says otherwise: they belong to the machine that produced them, not to the
checkout.

``--threads N`` sets ``torch.set_num_threads(N)`` first; dropkit's kernels use
torch's setting, so both sides get N threads. On a machine shared with other
work, one thread each compares the per-core cost of the kernels; with more,
how fast a worker thread gets a core matters as much as the kernels do.
"""

import sys

import torch

from dropkit.bench import default_out_dir
from dropkit.cli import main


def _pop_threads(args: list[str]) -> int | None:
    """Remove ``--threads N`` (or ``--threads=N``) from ``args``; N, or None."""
    for i, arg in enumerate(args):
        if arg == "--threads" and i + 1 < len(args):
            value = args[i + 1]
            del args[i:i + 2]
            return int(value)
        if arg.startswith("--threads="):
            del args[i]
            return int(arg.split("=", 1)[1])
    return None


if __name__ == "__main__":
    args = sys.argv[1:]
    threads = _pop_threads(args)
    if threads is not None:
        if threads < 1:
            sys.exit(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    if not any(a == "--out" or a.startswith("--out=") for a in args):
        args += ["--out", str(default_out_dir())]
    sys.exit(main(["bench", *args]))
