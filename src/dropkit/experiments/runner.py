"""Running an experiment: resolve the configuration, run what is not done yet,
write results after every run, then the plots, the report and the terminal table.

The command line calls :func:`run_from_args`; Python code and tests call
:func:`run_experiment` with the same options as keyword arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dropkit.experiments import backends, models, registry, results
from dropkit.experiments import options as declared
from dropkit.experiments.options import RUNTIME_OPTIONS
from dropkit.experiments.plan import model_settings


class ConfigError(ValueError):
    """A bad argument: the message says which one and lists the choices."""


# -------------------------------------------------------------- configuration
def resolve_config(experiment: str, given: dict[str, Any]) -> dict[str, Any]:
    """Fill in defaults (the experiment's options dataclass) and validate every value.

    Raises :class:`ConfigError` with a message that names the option and lists the
    valid choices. Nothing is written before this has passed.
    """
    try:
        exp = registry.get(experiment)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    known = {f.name for f in declared.fields(exp.options)}
    unknown = sorted(k for k, v in given.items() if k not in known and v is not None)
    if unknown:
        raise ConfigError(
            f"Option(s) {', '.join('--' + u.replace('_', '-') for u in unknown)} do not apply "
            f"to experiment {experiment!r}."
        )
    try:
        config: dict[str, Any] = {"experiment": experiment, **declared.resolve(exp.options, given)}
        exp.check_dataset(config["dataset"])
        exp.check_models(config["models"])
    except ValueError as e:
        raise ConfigError(str(e)) from None
    config["model_settings"] = {
        m: model_settings(config, m) for m in config["models"] if m in models.names()
    }
    return config


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine.")
    return name


def default_threads() -> int:
    # One thread. The networks here are small (a 100 x 512 matmul): a second
    # thread buys little on an idle machine and costs a lot on a busy one -- on
    # this 2-core machine under load, a 40-epoch wide-MLP run took 5.5 s of CPU
    # with 1 thread and 35 s with 2 (the threads spin waiting for each other).
    # One thread per run also makes the numbers reproducible to the bit.
    return 1


def default_out_dir(experiment: str) -> Path:
    """A new directory ``runs/<date>-<time>-<experiment>[-i]``, created here.

    Created with ``mkdir(exist_ok=False)`` and retried under the next name: two
    ``dropkit run`` processes started in the same second never share one.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{stamp}-{experiment}"
    base.parent.mkdir(parents=True, exist_ok=True)
    out, i = base, 1
    while True:
        try:
            out.mkdir()
            return out
        except FileExistsError:
            i += 1
            out = base.with_name(f"{base.name}-{i}")


def _check_out_dir(out_dir: Path) -> None:
    """Refuse, before any work, an ``--out`` that is a file, lies under one or is read-only."""
    existing = out_dir
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == out_dir else f"lies under the file {existing}"
        raise ConfigError(f"Invalid value for --out: {out_dir} {where}.")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"Invalid value for --out: {existing} is not writable.")


# ------------------------------------------------------------------- running
def run_experiment(
    experiment: str | None = None,
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    quiet: bool = False,
    console: Any = None,
    stop_after: int | None = None,
    **options: Any,
) -> Path:
    """Run ``experiment`` (or finish the one in ``resume``); return the output directory.

    ``stop_after`` stops after that many *new* runs, as an interruption would
    (used by the tests of ``--resume``).
    """
    from dropkit.experiments.train import RunSpec

    if resume is not None:
        out_dir = Path(resume)
        try:
            document = results.read_json(out_dir)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        experiment = document["experiment"]
        config = dict(document["config"])
        for key in RUNTIME_OPTIONS:  # how to run may change; what to run may not
            if options.get(key) is not None:
                config[key] = options[key]
        done = {r["key"]: r for r in document["runs"] if "key" in r}
        results.remove_temporaries(out_dir)
        try:
            exp_cls = registry.get(experiment)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    else:
        experiment = experiment or registry.DEFAULT_EXPERIMENT
        config = resolve_config(experiment, options)
        exp_cls = registry.get(experiment)
        done = {}
        if out is not None:
            _check_out_dir(Path(out))
        out_dir = Path(out) if out is not None else default_out_dir(experiment)
        if (out_dir / results.RESULTS_JSON).exists():
            raise ConfigError(
                f"{out_dir} already holds results; finish it with --resume {out_dir} "
                "or choose another --out."
            )

    exp = exp_cls()
    try:
        specs: list[RunSpec] = exp.runs(config)
    except ValueError as e:
        if resume is None and out is None:
            out_dir.rmdir()  # the empty directory default_out_dir made: nothing half-written
        raise ConfigError(str(e)) from None
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        if resume is None and out is None:
            out_dir.rmdir()
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise ConfigError(
            f"Two planned runs are the same ({twice[0]}): a value is repeated in the "
            "options (--models, --regularizers, --p, ...)."
        )

    device = resolve_device(str(config["device"]))
    threads = int(config["threads"] or default_threads())
    workers = int(config["workers"] or backends.default_workers())
    backend = str(config.get("backend") or "local")
    env = results.environment(device, threads)
    env.update(workers=workers, backend=backend)

    out_dir.mkdir(parents=True, exist_ok=True)
    records = [done[k] for k in keys if k in done]
    order = {k: i for i, k in enumerate(keys)}

    def save(status: str) -> None:
        ordered = sorted(records, key=lambda r: order[r["key"]])
        doc = results.results_document(experiment, config, env, ordered, status, len(specs))
        results.write_json(out_dir, doc)
        results.write_csv(out_dir, ordered)

    save("complete" if len(records) == len(specs) else "running")

    from dropkit.experiments.progress import Progress, run_summary

    todo = [s for s in specs if s.key not in done]
    if stop_after is not None:
        todo = todo[:stop_after]
    if not quiet:
        where = f"{workers} worker{'s' if workers != 1 else ''}" + (
            f" on Ray ({config.get('ray_address') or 'local'})" if backend == "ray" else ""
        )
        print(
            f"dropkit run {experiment}: {len(todo)} of {len(specs)} runs to do "
            f"({where}) -> {out_dir}"
        )
    try:
        with Progress(len(specs), len(records), quiet=quiet, console=console) as bar:

            def on_done(spec: Any, record: dict[str, Any]) -> None:
                records.append(record)
                save("complete" if len(records) == len(specs) else "running")
                bar.run_done(spec.key, run_summary(record))

            # longest runs first (results are written in plan order regardless)
            by_cost = sorted(todo, key=lambda s: -exp.cost(s))
            if backend == "ray":
                backends.run_ray(
                    experiment, config, by_cost, threads=threads, workers=workers,
                    address=config.get("ray_address"), on_done=on_done,
                )
            elif workers > 1 and len(todo) > 1:
                backends.run_processes(
                    experiment, config, by_cost, threads=threads, workers=workers,
                    on_done=on_done,
                )
            else:
                for spec in todo:
                    bar.start_run(spec.key, spec.epochs)
                    on_done(spec, backends.execute(experiment, config, spec, threads, bar.epoch))
    except KeyboardInterrupt:
        save("interrupted")
        print(
            f"\ndropkit run: interrupted with {len(records)} of {len(specs)} runs finished "
            f"(saved in {out_dir}). Continue with: dropkit run --resume {out_dir}",
            file=sys.stderr,
        )
        raise
    if len(records) < len(specs):  # stop_after: an interruption, as the tests make it
        save("interrupted")
        return out_dir

    finish(exp, experiment, config, records, out_dir, keys, quiet=quiet, console=console)
    return out_dir


def finish(
    exp: registry.Experiment,
    experiment: str,
    config: dict[str, Any],
    records: Sequence[dict[str, Any]],
    out_dir: Path,
    keys: Sequence[str],
    *,
    quiet: bool = False,
    console: Any = None,
) -> None:
    """Plots, report.html and the terminal table, from the finished records."""
    from dropkit.experiments import report

    ordered = sorted(records, key=lambda r: keys.index(r["key"]))
    document = results.read_json(out_dir)
    table = exp.table(ordered, config)
    images = exp.plots(ordered, config, out_dir)
    reading = exp.reading(ordered, config) + budget_warning(ordered)
    html = report.render(exp, document, table, images, reading)
    results.write_atomic(out_dir / "report.html", html)
    if not quiet:
        report.print_table(exp, table, reading, out_dir, console=console)
    else:
        print(out_dir / "report.html")


def budget_warning(records: Sequence[dict[str, Any]]) -> list[str]:
    """A paragraph when runs ended at their epoch budget while validation accuracy was
    still improving: whatever the experiment's reading says, their numbers may show
    the budget rather than the method. Empty when every run stopped on its own."""
    from dropkit.experiments.fit import still_improving

    # patience None: a fixed budget by design (the run never stops early)
    cut = [r for r in records if r.get("patience") and still_improving(r)]
    if not cut:
        return []
    from dropkit.experiments.wording import plural

    budgets = " or ".join(str(b) for b in sorted({int(r["epochs"]) for r in cut}))
    patience = " or ".join(str(p) for p in sorted({int(r["patience"]) for r in cut}))
    return [
        f"Budget: {len(cut)} of {plural(len(records), 'run')} ended at the epoch budget "
        f"({budgets}) with validation accuracy still improving (their best epoch among "
        f"the last, and no {patience} epochs without improvement), so they are "
        "under-trained by this protocol's test: their numbers may show the budget rather "
        "than the method. Raise --epochs to see where they level off."
    ]


def run_from_args(args: argparse.Namespace) -> int:
    """The handler of ``dropkit run``: parsed arguments -> :func:`run_experiment`."""
    options = {
        k: v
        for k, v in vars(args).items()
        if k not in ("command", "handler", "experiment", "out", "resume", "quiet")
    }
    try:
        if args.resume is not None and args.experiment is not None:
            raise ConfigError("Give either an experiment or --resume DIR, not both.")
        if args.resume is not None:
            given = sorted(
                k for k, v in options.items() if v is not None and k not in RUNTIME_OPTIONS
            )
            if given:
                raise ConfigError(
                    "--resume continues with the stored configuration; drop "
                    + ", ".join("--" + g.replace("_", "-") for g in given)
                    + "."
                )
        run_experiment(
            args.experiment,
            out=args.out,
            resume=args.resume,
            quiet=args.quiet,
            **options,
        )
    except ConfigError as e:
        print(f"dropkit run: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
