"""The ``dropkit`` command line: argument parsing only.

Each sub-command parses its arguments here and hands them to the module that
does the work (``dropkit.demo``, ``dropkit.bench``, ``dropkit.experiments``).
"""

from __future__ import annotations

import argparse
import sys


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the classic tutorial check: a 5x5 tensor of ones through dropout",
        description="Pass a 5x5 tensor of ones through dropout in train and eval mode, for "
        "the inverted and the classic formulation, and show why scaling at both train "
        "and test time is wrong.",
    )
    p.add_argument("--p", type=float, default=0.5, help="drop probability (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="torch.manual_seed for the masks")
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from dropkit.demo import main as demo_main

    return demo_main(p=args.p, seed=args.seed)


def _add_bench_parser(sub: argparse._SubParsersAction) -> None:
    # Owned by the mask-engine work: see dropkit/bench.py.
    p = sub.add_parser("bench", help="speed and memory of dropkit's dropout against torch's")
    p.set_defaults(handler=lambda args: _not_ready("bench"))


def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    # Owned by the experiments work: see dropkit/experiments/.
    p = sub.add_parser("run", help="train networks with and without regularizers")
    p.set_defaults(handler=lambda args: _not_ready("run"))


def _not_ready(name: str) -> int:
    print(f"dropkit {name}: not available yet", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dropkit",
        description="The dropout family of regularizers for PyTorch, and the experiments "
        "that show what they do.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_run_parser(sub)
    _add_demo_parser(sub)
    _add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
