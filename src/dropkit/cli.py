"""The ``dropkit`` command line: argument parsing only.

Each sub-command parses its arguments here and hands them to the module that
does the work (``dropkit.demo``, ``dropkit.bench``, ``dropkit.experiments``).
"""

from __future__ import annotations

import argparse
import sys
import textwrap


def _probability(*, allow_one: bool):
    """An argparse type: a drop probability in [0, 1], or [0, 1) without ``allow_one``."""
    bound = "<=" if allow_one else "<"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (0.0 <= value <= 1.0 if allow_one else 0.0 <= value < 1.0):
            raise argparse.ArgumentTypeError(f"expected 0 <= p {bound} 1, got {text}")
        return value

    return parse


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the classic tutorial check: a 5x5 tensor of ones through dropout",
        description="Pass a 5x5 tensor of ones through dropout in train and eval mode, for "
        "the inverted and the classic formulation, and show why scaling at both train "
        "and test time is wrong.",
    )
    p.add_argument("--p", type=_probability(allow_one=True), default=0.5,
                   help="drop probability (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="torch.manual_seed for the masks")
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from dropkit.demo import main as demo_main

    return demo_main(p=args.p, seed=args.seed)


def _add_bench_parser(sub: argparse._SubParsersAction) -> None:
    # Owned by the mask-engine work: see dropkit/bench.py.
    p = sub.add_parser(
        "bench",
        help="speed and memory of dropkit's dropout against torch's",
        description="Time forward, backward and forward+backward of dropkit's dropout, "
        "torch.nn.functional.dropout and the memory-bound torch.mul(x, s, out=y), side by "
        "side in one run, and measure the bytes kept for backward per element. Prints a "
        "table and writes JSON.",
    )
    from dropkit.bench import parse_size
    from dropkit.experiments.registry import comma_list

    dtypes = ("float32", "float64", "float16", "bfloat16")

    def positive_int(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
        return value

    p.add_argument("--sizes", default=[1 << 20, 16 << 20],
                   type=comma_list(parse_size, "element counts such as 1M,16M",
                                   lambda n: None if n >= 1 else f"size must be >= 1, got {n}"),
                   help="comma-separated element counts, K/M suffixes allowed (default 1M,16M)")
    p.add_argument("--dtypes", default=["float32", "bfloat16"],
                   type=comma_list(str, "dtype names", lambda d: None if d in dtypes else
                                   f"unknown dtype {d!r}; choose from: {', '.join(dtypes)}"),
                   help=f"comma-separated, from {', '.join(dtypes)} (default float32,bfloat16)")
    p.add_argument("--p", type=_probability(allow_one=False), default=0.5,
                   help="drop probability in [0, 1) (default 0.5)")
    p.add_argument("--repeat", type=positive_int, default=15,
                   help="timed repetitions per measurement; medians are reported (default 15)")
    p.add_argument("--out", default=None,
                   help="directory for bench.json, or a .json path; '' to skip "
                   "(default ~/.cache/dropkit/bench)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    def run_bench(args: argparse.Namespace) -> int:
        from dropkit import bench

        return bench.main(
            sizes=args.sizes,
            dtypes=args.dtypes,
            p=args.p,
            repeat=args.repeat,
            out=args.out,
            quiet=args.quiet,
        )

    p.set_defaults(handler=run_bench)


def _wrap_item(name: str, text: str, width: int = 79) -> str:
    """One ``name  text`` entry of a help list, wrapped under its text."""
    lines = textwrap.wrap(text.rstrip(".") + ".", width - 16)
    return "\n".join(
        f"  {name if i == 0 else '':<14}{line}" for i, line in enumerate(lines)
    )


def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    # Owned by the experiments work: see dropkit/experiments/. The choices come
    # from the registries, and each experiment adds its own options in a group of
    # its own (Experiment.add_arguments), so a new experiment needs no edit here.
    from dropkit.experiments import registry

    experiments = registry.all_experiments()
    p = sub.add_parser(
        "run",
        help="train networks with and without regularizers; write results and a report",
        description=textwrap.fill(
            "Run an experiment: train networks with and without regularizers over several "
            "seeds, then write results.json, results.csv, PNG plots and a self-contained "
            "report.html into --out.",
            79,
        )
        + "\n\nexperiments:\n"
        + "\n".join(_wrap_item(n, e.help) for n, e in experiments.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "experiment",
        nargs="?",
        choices=list(experiments),
        default=None,
        help=f"which experiment (default: {registry.DEFAULT_EXPERIMENT})",
    )
    _run_options(p, experiments)

    def handler(args: argparse.Namespace) -> int:
        from dropkit.experiments.runner import run_from_args

        return run_from_args(args)

    p.set_defaults(handler=handler)


def _run_options(p: argparse.ArgumentParser, experiments: dict) -> None:
    """The options of ``dropkit run``: the common ones, then each experiment's group."""
    from dropkit.experiments import data, models, registry, regularizers

    def names_list(choices: list[str], what: str):
        return registry.comma_list(
            str,
            f"{what} names",
            lambda name: None
            if name in choices
            else f"unknown {what} {name!r}; choose from: {', '.join(choices)}",
        )

    floats_list = registry.comma_list(float, "numbers")

    def seeds(text: str) -> list[int]:
        try:
            values = [int(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected integers, got {text!r}") from None
        if "," in text:
            return values
        if values[0] < 1:
            raise argparse.ArgumentTypeError(f"expected a number of seeds >= 1, got {text!r}")
        return list(range(values[0]))

    p.add_argument(
        "--dataset", default=None,
        help=f"data set: {', '.join(data.names())} (default: per experiment)",
    )
    p.add_argument(
        "--model",
        "--models",
        dest="models",
        type=names_list(models.names(), "model"),
        nargs="+",
        default=None,
        metavar="MODEL",
        help=f"one or more of {', '.join(models.names())} (space or comma separated; "
        "default: per experiment)",
    )
    p.add_argument(
        "--regularizers",
        "--regularizer",
        dest="regularizers",
        type=names_list(regularizers.names(), "regularizer"),
        nargs="+",
        default=None,
        metavar="REG",
        help=f"one or more of {', '.join(regularizers.names())} (default: per experiment)",
    )
    p.add_argument(
        "--p", type=floats_list, nargs="+", default=None, metavar="P",
        help="drop probability/probabilities (default: per model, see the report)",
    )
    p.add_argument(
        "--epochs", type=int, default=None,
        help="the budget: at most this many epochs (default: per model)",
    )
    p.add_argument(
        "--patience", type=int, default=None,
        help="stop after this many epochs without a better validation accuracy (50)",
    )
    p.add_argument(
        "--val-fraction", type=float, default=None,
        help="the part of the training split held out for validation (0.2)",
    )
    p.add_argument(
        "--seeds", type=seeds, default=None, metavar="N|S1,S2,..",
        help="a number of seeds (3 = seeds 0,1,2) or a comma list of seeds (default: per "
        "experiment)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="(default: per model)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: per model)")
    p.add_argument("--weight-decay", type=float, default=None, help="strength of l2 (1e-3)")
    p.add_argument("--l1", type=float, default=None, help="strength of l1 (1e-5)")
    p.add_argument(
        "--max-norm", type=float, default=None, help="max-norm radius for dropout+maxnorm (2.0)"
    )
    p.add_argument(
        "--device", default=None, help="auto (cuda if present, else cpu), cpu or cuda[:N]"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per run (1)")
    p.add_argument(
        "--workers", type=int, default=None,
        help="runs at a time: processes with --backend local, CPUs of a local Ray "
        "(default: this machine's cores)",
    )
    p.add_argument(
        "--backend", choices=["local", "ray"], default=None,
        help="local (this machine) or ray (Ray tasks; needs dropkit[ray]) (default: local)",
    )
    p.add_argument(
        "--ray-address", default=None, metavar="ADDR",
        help="the Ray cluster for --backend ray, e.g. auto or ray://head:10001 "
        "(default: start a local Ray)",
    )
    p.add_argument("--out", default=None, help="output directory (runs/<time>-<experiment>/)")
    p.add_argument(
        "--resume", default=None, metavar="DIR",
        help="finish the interrupted experiment in DIR (its runs already done are kept)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or table")
    for name, exp in experiments.items():
        exp.add_arguments(p.add_argument_group(f"options of {name}"))


def experiment_help(name: str) -> str:
    """``dropkit run NAME --help``: this experiment's options with its own defaults,
    the size of its default run and, where measured, its wall time."""
    import re

    from dropkit.experiments import registry, runner

    exp = registry.get(name)
    config = runner.resolve_config(name, {})
    planned = exp().runs(config)
    text = exp.help.rstrip(".") + "."
    text += f" The default plans {len(planned)} run{'s' if len(planned) != 1 else ''}"
    text += f"; measured wall time: {exp.wall_time}." if exp.wall_time else "."
    p = argparse.ArgumentParser(
        prog=f"dropkit run {name}",
        description=textwrap.fill(text, 79),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _run_options(p, {name: exp})
    settings = config.get("model_settings") or {}
    for action in p._actions:
        if action.dest not in config or action.dest in ("help",):
            continue
        value = config[action.dest]
        if value is None and action.dest in ("epochs", "batch_size", "lr") and settings:
            value = ", ".join(f"{m}: {s[action.dest]}" for m, s in settings.items())
        elif value is None and action.dest == "p" and settings:
            value = ", ".join(
                f"{m}: {','.join(f'{v:g}' for v in s['p'])}" for m, s in settings.items()
            )
        elif value is None and action.dest == "workers":
            value = "this machine's cores"
        elif isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value)
        if value is None:
            continue
        base = re.sub(r"\s*\((default[^)]*|[^()]*)\)\s*$", "", action.help or "")
        action.help = f"{base} (default: {value})".replace("%", "%%")
    return p.format_help()

    def handler(args: argparse.Namespace) -> int:
        from dropkit.experiments.runner import run_from_args

        return run_from_args(args)

    p.set_defaults(handler=handler)


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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"] and ({"-h", "--help"} & set(argv)):
        from dropkit.experiments import registry

        named = [a for a in argv[1:] if a in registry.names()]
        if named:
            print(experiment_help(named[0]), end="")
            return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
