"""Keyed vs unkeyed dropout on the CPU, side by side: the cost of ``dk.mask_keys``.

    python benchmarks/bench_keyed.py                # 16M float32, three row lengths
    python benchmarks/bench_keyed.py --repeat 41

Times the forward kernel call (allocation included) of the unkeyed engine
(``engine.dropout``) and of the keyed one (``engine.keyed``) on the same
tensor, interleaved so that a loaded machine slows both alike, and prints
medians and their ratio. A row of 16 elements is the worst case (two Philox
counters per sample); the target is a ratio of at most 1.2.
"""

import argparse
import statistics
import time

import torch

from dropkit import engine
from dropkit.bench import cpu_name
from dropkit.engine import keyed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--numel", type=int, default=16 * 2**20)
    args = parser.parse_args()
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'shape':>16} {'unkeyed ms':>11} {'keyed ms':>9} {'ratio':>6}")
    x = torch.randn(args.numel)
    for rows in (64, args.numel // 256, args.numel // 16):
        xs = x.view(rows, -1)
        keys = keyed.Keys(1234, 5, 2, torch.arange(rows))
        plain, keyed_times = [], []
        for _ in range(3):  # warm up (Numba compiles or loads its cache)
            engine.dropout(xs, 0.1, 1 / 0.9, 123)
            keyed._keyed_dropout_values(xs, 0.1, 1 / 0.9, keys, 0)
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            engine.dropout(xs, 0.1, 1 / 0.9, 123)
            t1 = time.perf_counter()
            keyed._keyed_dropout_values(xs, 0.1, 1 / 0.9, keys, 0)
            t2 = time.perf_counter()
            plain.append(t1 - t0)
            keyed_times.append(t2 - t1)
        a, b = statistics.median(plain), statistics.median(keyed_times)
        print(f"{str(tuple(xs.shape)):>16} {a * 1e3:11.1f} {b * 1e3:9.1f} {b / a:6.2f}")


if __name__ == "__main__":
    main()
