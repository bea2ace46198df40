"""Dropout speed and memory: dropkit vs torch vs the memory-bound multiply.

The same measurement as ``dropkit bench`` (see ``dropkit.bench`` for what is
timed and how), runnable from a checkout:

    python benchmarks/bench_dropout.py                 # 1M and 16M, float32 and bfloat16
    python benchmarks/bench_dropout.py --sizes 16M --dtypes float32 --repeat 31

Results go to benchmarks/results/dropout.json (not committed: they belong to
the machine that produced them).
"""

import sys

from dropkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
