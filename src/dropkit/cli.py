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


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help text wrapped at spaces only: names such as tutorial-mlp stay whole."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _comma_list(convert, what: str, check=None):
    """An argparse ``type`` for ``"a,b,c"``: each item converted, then checked
    (``check(value)`` returns an error message or None)."""

    def parse(text: str) -> list:
        try:
            values = [convert(t.strip()) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        for value in values:
            problem = check(value) if check is not None else None
            if problem:
                raise argparse.ArgumentTypeError(problem)
        return values

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

    dtypes = ("float32", "float64", "float16", "bfloat16")

    def positive_int(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
        return value

    p.add_argument("--sizes", default=[1 << 20, 16 << 20],
                   type=_comma_list(parse_size, "element counts such as 1M,16M",
                                   lambda n: None if n >= 1 else f"size must be >= 1, got {n}"),
                   help="comma-separated element counts, K/M suffixes allowed (default 1M,16M)")
    p.add_argument("--dtypes", default=["float32", "bfloat16"],
                   type=_comma_list(str, "dtype names", lambda d: None if d in dtypes else
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
    # The options are generated from the experiments' options dataclasses
    # (Experiment.options): a new experiment needs no edit here.
    from dropkit.experiments import options, registry

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
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "experiment",
        nargs="?",
        choices=list(experiments),
        default=None,
        help=f"which experiment (default: {registry.DEFAULT_EXPERIMENT})",
    )
    # A common option whose default differs between experiments shows "per experiment".
    defaults = [options.defaults(e.options) for e in experiments.values()]
    varies = {
        name: "per experiment"
        for name in options.common_names()
        if len({repr(d[name]) for d in defaults}) > 1
    }
    _run_options(p, experiments, shown=varies)

    def handler(args: argparse.Namespace) -> int:
        from dropkit.experiments.runner import run_from_args

        return run_from_args(args)

    p.set_defaults(handler=handler)


def _run_options(p: argparse.ArgumentParser, experiments: dict,
                 shown: dict | None = None) -> None:
    """The options of ``dropkit run``, generated from the options dataclasses: the
    common ones, then a group per experiment with the options it adds."""
    from dropkit.experiments import options

    options.add_arguments(p, options.CommonOptions, shown=shown)
    p.add_argument("--out", default=None, help="output directory (runs/<time>-<experiment>/)")
    p.add_argument(
        "--resume", default=None, metavar="DIR",
        help="finish the interrupted experiment in DIR (its runs already done are kept)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or table")
    for name, exp in experiments.items():
        # The parser holds each flag once: an option two experiments share (they
        # mean the same thing) is declared by the first; each run checks its own.
        own = [f.name for f in options.own_fields(exp.options)
               if f.flag not in p._option_string_actions]
        if own:
            group = p.add_argument_group(f"options of {name}")
            options.add_arguments(group, exp.options, names=own, shown=shown)


def experiment_help(name: str) -> str:
    """``dropkit run NAME --help``: this experiment's options with its own defaults,
    the size of its default run and, where measured, its wall time."""
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
        formatter_class=_HelpFormatter,
    )
    # Defaults that depend on the model ("per model") are shown per model.
    shown = dict(config)
    settings = config.get("model_settings") or {}
    for key in ("epochs", "batch_size", "lr", "p"):
        if config.get(key) is None and settings:
            shown[key] = "; ".join(
                f"{m}: {','.join(f'{v:g}' for v in s[key]) if key == 'p' else s[key]}"
                for m, s in settings.items()
            )
    _run_options(p, {name: exp}, shown=shown)
    return p.format_help()


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
