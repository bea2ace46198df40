"""``dropkit run``: the experiments that show what dropout-family regularizers do.

Layout (one obvious place for each thing)::

    registry.py     Experiment base class, @register, the list of experiment modules
    options.py      the options dataclasses -> command line, --help, validation
    runner.py       options -> config, the run loop, resume, atomic results, report
    plan.py         the one planner: grid() / spec() -> RunSpecs
    backends.py     where runs execute: this process, worker processes, Ray
    train.py        RunSpec, RunContext, train_run (the protocol: validation split,
                    early stopping, test at the best validation epoch)
    fit.py          under-trained / overfitting / under-capacity, from the numbers
    data.py         mnist1d (regenerated offline, cached) and sklearn digits
    models.py       tutorial-mlp, wide-mlp, cnn1d, resmlp (+ per-model defaults)
    regularizers.py none, dropout, dropout-classic, l2, l1, dropout+maxnorm, droppath
    results.py      results.json / results.csv, written atomically
    summary.py      mean +- std over seeds, difference vs seed noise
    wording.py      the readings' grammar (plurals, points, capitals)
    plots.py        curves.png and plotting helpers (matplotlib, Agg backend)
    report.py       report.html (images embedded) and the terminal table
    progress.py     rich progress bars, or a line per finished run when piped
    compare.py, sweep_p.py, ...   the experiments (one declaration each; an
                    experiment never imports another)

How to add an experiment
------------------------
1. Create ``src/dropkit/experiments/<name>.py``::

       from dataclasses import dataclass

       from dropkit.experiments.options import CommonOptions, option
       from dropkit.experiments.plan import grid   # models x regs x p x seeds
       from dropkit.experiments.registry import Experiment, register

       @dataclass(frozen=True)
       class ConvergenceOptions(CommonOptions):     # the one place options live
           p: tuple[float, ...] | None = (0.2, 0.5)  # a common option, new default
           impl: tuple[str, ...] = option(           # an option of its own
               ("torch", "dropkit"), "dropout implementation(s)",
               choices=("torch", "dropkit"), what="dropout implementation")

           def __post_init__(self):                  # relations between options
               super().__post_init__()

       @register
       class Convergence(Experiment):
           name = "convergence"                 # `dropkit run convergence`
           help = "one line for --help"
           options = ConvergenceOptions         # flags, --help, validation: generated
           accepts = None                       # or the models it trains, ("gru",)
           plot_name = "convergence.png"

           def runs(self, config):             # the full, deterministic run list
               return grid(config, extra={"impl": ",".join(config["impl"])})

           def run_one(self, spec, data, ctx): # optional: default is train_run(...).record
               result = train_run(spec, data, ctx, model=..., on_epoch=...)
               result.record["epochs_to_target"] = ...
               return result.record

           def curves(self, records, config):           # optional: how curves.png draws
               return dict(label=lambda r, _runs: r["impl"])

           def figures(self, records, config, out_dir): # optional: its own PNGs
               return [my_plot(records, out_dir / "convergence.png")]

           def reading(self, records, config):          # paragraphs computed from numbers
               return [...]

2. Add one line, ``"dropkit.experiments.<name>"``, to ``EXPERIMENT_MODULES`` in
   ``registry.py``.

That is all: the command line lists it (``dropkit run <name> --help``), its
options appear in their own group, the runner writes results.json/csv after each
run, ``--resume`` works (runs are identified by ``RunSpec.key``, which includes
``extra``), and report.html embeds curves.png and whatever PNGs ``figures`` returns.

Notes for experiment authors:

- ``config`` is a JSON dict: the fields of your options dataclass (the common
  ones of ``options.CommonOptions``: ``dataset``, ``models``, ``regularizers``,
  ``p``, ``epochs``, ``seeds``, ``batch_size``, ``lr``, ...; then yours), already
  checked, tuples as lists. ``runs`` need not check them again.
  ``plan.model_settings(config, model)`` gives a model's epochs, batch size, lr
  and p list after command-line overrides.
- A record must carry the schema fields (``results.SCHEMA_FIELDS``) and ``key``
  (``spec.key``); add any extra per-run fields you like (``epochs_to_target``,
  ``variant``...). CSV takes every scalar field; nested ones stay in the JSON.
- ``RunSpec.extra`` (e.g. ``{"variant": "locked"}``) distinguishes runs that share
  model/regularizer/p/seed, and is copied into the record.
- Custom networks: pass ``model=`` (a module, or a zero-argument factory called
  after seeding, so weights depend on the seed) to ``train.train_run``.
- Build models with ``dropkit`` layers (``import dropkit as dk``); the layers
  never import from here.
- Heavy imports (matplotlib, sklearn, mnist1d, rich) stay inside functions so
  that ``import dropkit`` and ``dropkit --help`` stay light.
"""

from __future__ import annotations

__all__ = ["run_experiment"]


def run_experiment(*args, **kwargs):
    """See :func:`dropkit.experiments.runner.run_experiment`."""
    from dropkit.experiments.runner import run_experiment as run

    return run(*args, **kwargs)
