"""Dropout speed and memory: dropkit vs torch vs the memory-bound multiply.

The same measurement as ``dropkit bench`` (see ``dropkit.bench`` for what is
timed and how), runnable from a checkout:

    python benchmarks/bench_dropout.py                 # 1M and 16M, float32 and bfloat16
    python benchmarks/bench_dropout.py --sizes 16M --dtypes float32 --repeat 31

Besides dropout it times the fused ``bias_dropout_add`` against its unfused
spelling and a residual-MLP training step with ``ResidualDropPath`` against
``DropPath``. Results go to ``~/.cache/dropkit/bench/bench.json``
(``$XDG_CACHE_HOME`` respected) unless ``--out DIR`` (or ``--out FILE.json``)
says otherwise: they belong to the machine that produced them, not to the
checkout.
"""

import sys

from dropkit.bench import default_out_dir
from dropkit.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not any(a == "--out" or a.startswith("--out=") for a in args):
        args += ["--out", str(default_out_dir())]
    sys.exit(main(["bench", *args]))
