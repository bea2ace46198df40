"""The experiment registry: name -> :class:`Experiment` subclass.

An experiment says *what* to run (its run list), *how* to run one run (by default
the shared training loop), and *what to make of it* (summary table, plots, a
plain-language reading). Everything else -- data, models, the training loop,
writing results atomically, resuming, progress bars, the HTML report and the
command line -- is shared and lives in the sibling modules.

Experiment modules register themselves with :func:`register`; the list of
modules to import lives in :data:`EXPERIMENT_MODULES` so that the registry is
filled in one place (see the package docstring for the recipe).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from dropkit.experiments.options import CommonOptions

if TYPE_CHECKING:  # pragma: no cover
    from dropkit.experiments.data import Dataset
    from dropkit.experiments.train import RunContext, RunSpec

# One line per experiment module: importing it registers its experiment(s).
EXPERIMENT_MODULES: tuple[str, ...] = (
    "dropkit.experiments.compare",
    "dropkit.experiments.sweep_p",
    "dropkit.experiments.data_size",
    "dropkit.experiments.mc_averaging",
    "dropkit.experiments.uncertainty",
    "dropkit.experiments.convergence",
    "dropkit.experiments.step_time",
    "dropkit.experiments.batchnorm",
    "dropkit.experiments.droppath_depth",
    "dropkit.experiments.recurrent",
    "dropkit.experiments.uci",
    "dropkit.experiments.schedule_exp",
)

DEFAULT_EXPERIMENT = "compare"

_REGISTRY: dict[str, type[Experiment]] = {}
_LOADED = False


class Experiment:
    """Base class of every ``dropkit run`` experiment.

    Subclasses set the class attributes and override :meth:`runs`; the other
    hooks have sensible defaults. The resolved configuration ``config`` is a
    plain JSON-serialisable dict (it is written to ``results.json`` and read back
    by ``--resume``): the fields of :attr:`options`, checked, in their JSON form
    (tuples as lists), plus ``model_settings``.
    """

    #: the name used on the command line, e.g. ``"sweep-p"``
    name: ClassVar[str] = ""
    #: one line for ``dropkit run --help``
    help: ClassVar[str] = ""
    #: the options: a frozen dataclass subclassing ``options.CommonOptions``, whose
    #: fields generate the command line, ``--help`` and the validation
    options: ClassVar[type] = CommonOptions
    #: the models it trains (None: every model of the registry); the runner refuses
    #: others with the list of these
    accepts: ClassVar[tuple[str, ...] | None] = None
    #: the experiment-specific plot's file name (besides ``curves.png``)
    plot_name: ClassVar[str | None] = None
    #: what the table's cells are, above it in the report and the terminal
    table_caption: ClassVar[str] = "mean ± std over seeds"
    #: how the table's numbers were measured, below it in the report
    table_note: ClassVar[str] = (
        "Every metric is taken at each run's best validation epoch: the weights of that "
        "epoch, in eval mode; the test split is read there, once. Accuracies are fractions "
        "of the split; gap = train acc - test acc; best epoch is the epoch of the best "
        "validation accuracy and stopped the epoch early stopping ended the run (the "
        "last epoch's numbers are in results.json as last_*)."
    )
    #: the measured wall time of the default run, for ``dropkit run NAME --help``
    #: (e.g. "about 1.5 minutes on 2 cores, measured"); empty when not measured
    wall_time: ClassVar[str] = ""

    # ------------------------------------------------------- accepted inputs
    @classmethod
    def check_dataset(cls, name: str) -> None:
        """Raise ValueError (message lists the choices) if ``--dataset name`` does not apply.

        The default accepts the classification data sets of ``data.py``;
        an experiment on other data (regression tables, say) overrides it.
        """
        from dropkit.experiments import data

        data.check(name)

    @classmethod
    def check_models(cls, names: Sequence[str]) -> None:
        """Raise ValueError (message lists the choices) if a model in ``names`` does not apply."""
        from dropkit.experiments import models

        for name in names:
            models.get(name)
            if cls.accepts is not None and name not in cls.accepts:
                raise ValueError(
                    f"Experiment {cls.name!r} does not train model {name!r}. Choose from: "
                    f"{', '.join(cls.accepts)} (e.g. --model {cls.accepts[0]})."
                )

    # --------------------------------------------------------------- the runs
    def runs(self, config: dict[str, Any]) -> list[RunSpec]:
        """The full, ordered list of runs. Must be deterministic in ``config``."""
        raise NotImplementedError

    def cost(self, spec: RunSpec) -> float:
        """A rough relative cost of ``spec``, only to start the longest runs first.

        With N workers the wall time is set by the runs left at the end; starting
        the expensive ones first (longest-processing-time order) keeps the tail
        short. Results do not depend on it: they are written in plan order.
        """
        return 1.0

    def run_one(self, spec: RunSpec, data: Dataset, ctx: RunContext) -> dict[str, Any]:
        """Run one run and return its record (schema fields + extra fields)."""
        from dropkit.experiments.train import train_run

        return train_run(spec, data, ctx).record

    # ----------------------------------------------------------- the results
    def table(self, records: Sequence[dict[str, Any]], config: dict[str, Any]) -> list[dict]:
        """Summary rows (mean +- std over seeds) for the terminal and the report."""
        from dropkit.experiments.summary import summary_table

        return summary_table(records, by=("dataset", "model", "regularizer", "p"))

    def curves(self, records: Sequence[dict[str, Any]], config: dict[str, Any]) -> dict | None:
        """How ``curves.png`` draws the runs' training curves: keyword arguments of
        ``plots.plot_curves`` (``label``, ``panel``, ``title``, ``color_by``, and
        ``records`` to draw a subset); None for no curves.png."""
        return {}

    def figures(
        self, records: Sequence[dict[str, Any]], config: dict[str, Any], out_dir: Path
    ) -> list[Path]:
        """Write the experiment's own PNGs into ``out_dir``; return their paths."""
        return []

    def plots(
        self, records: Sequence[dict[str, Any]], config: dict[str, Any], out_dir: Path
    ) -> list[Path]:
        """Every figure of the report: ``curves.png`` (see :meth:`curves`), then
        :meth:`figures`. The runner calls this; experiments override those two."""
        from dropkit.experiments.plots import plot_curves

        out_dir = Path(out_dir)
        curves = self.curves(records, config)
        images = []
        if curves is not None:
            curves = dict(curves)
            images.append(plot_curves(curves.pop("records", records), out_dir / "curves.png",
                                      **curves))
        return images + self.figures(records, config, out_dir)

    def reading(self, records: Sequence[dict[str, Any]], config: dict[str, Any]) -> list[str]:
        """A plain-language reading of the result, computed from the numbers.

        One string per paragraph. Never hard-code a conclusion: compare the
        measured means and say whether a difference exceeds the seed spread.
        """
        return []


def register(cls: type[Experiment]) -> type[Experiment]:
    """Class decorator: add an :class:`Experiment` subclass to the registry."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} must set a non-empty `name`")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"an experiment named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def _load() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for module in EXPERIMENT_MODULES:
            importlib.import_module(module)


def names() -> list[str]:
    """Registered experiment names, the default first."""
    _load()
    rest = sorted(n for n in _REGISTRY if n != DEFAULT_EXPERIMENT)
    return ([DEFAULT_EXPERIMENT] if DEFAULT_EXPERIMENT in _REGISTRY else []) + rest


def get(name: str) -> type[Experiment]:
    """The experiment class registered under ``name`` (clear error otherwise)."""
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"Unknown experiment {name!r}. Choose one of: {', '.join(names())}."
        ) from None


def all_experiments() -> dict[str, type[Experiment]]:
    _load()
    return {n: _REGISTRY[n] for n in names()}
