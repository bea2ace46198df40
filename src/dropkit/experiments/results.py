"""Writing and reading an experiment's results: results.json, results.csv.

Every file is written atomically (a temporary file in the same directory, then
``os.replace``), so an interrupted experiment never leaves a half-written file
and ``--resume`` can always trust what it reads.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"

#: the per-run fields every record carries, in order (test metrics at ``best_epoch``)
SCHEMA_FIELDS = (
    "dataset",
    "model",
    "regularizer",
    "p",
    "seed",
    "train_acc",
    "test_acc",
    "train_loss",
    "test_loss",
    "val_acc",
    "best_epoch",
    "stopped_epoch",
    "seconds",
    "history",
)
HISTORY_FIELDS = ("epoch", "train_acc", "val_acc", "train_loss", "val_loss")


_TMP_SUFFIX = ".tmp"


def remove_temporaries(out_dir: Path) -> None:
    """Remove what ``write_atomic`` leaves in ``out_dir`` when its process is killed (kill -9)."""
    for stale in Path(out_dir).glob(f".*{_TMP_SUFFIX}"):
        stale.unlink(missing_ok=True)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is for secrets, not results
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def environment(device: str, threads: int) -> dict[str, Any]:
    """Versions, CPU, threads and device: enough to tell two results files apart
    (the CPU matters: BLAS kernels, and with them the last bits, differ between CPUs)."""
    import numpy
    import torch

    import dropkit
    from dropkit.bench import cpu_name

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "dropkit": dropkit.__version__,
        "threads": threads,
        "device": device,
    }
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
    for name in ("mnist1d", "sklearn", "matplotlib"):
        try:
            from importlib.metadata import version

            env[name] = version("scikit-learn" if name == "sklearn" else name)
        except Exception:
            env[name] = None
    return env


def results_document(
    experiment: str,
    config: dict[str, Any],
    env: dict[str, Any],
    runs: Sequence[dict[str, Any]],
    status: str,
    planned: int,
) -> dict[str, Any]:
    return {
        "experiment": experiment,
        "config": config,
        "environment": env,
        "runs": list(runs),
        # beyond the schema: how far the experiment got
        "status": status,
        "planned_runs": planned,
    }


def write_json(out_dir: Path, document: dict[str, Any]) -> Path:
    path = Path(out_dir) / RESULTS_JSON
    write_atomic(path, json.dumps(document, indent=1, allow_nan=False) + "\n")
    return path


def read_json(out_dir: Path) -> dict[str, Any]:
    path = Path(out_dir) / RESULTS_JSON
    if not path.is_file():
        raise ValueError(f"Cannot resume: {path} does not exist.")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"Cannot resume: {path} is not valid JSON ({e}).") from None
    if not isinstance(document, dict):
        raise ValueError(f"Cannot resume: {path} does not hold a results object.")
    for key in ("experiment", "config", "runs"):
        if key not in document:
            raise ValueError(f"Cannot resume: {path} has no {key!r} field.")
    shapes = (("experiment", str, "a string"), ("config", dict, "an object"),
              ("runs", list, "a list"))
    for key, kind, words in shapes:
        if not isinstance(document[key], kind):
            raise ValueError(f"Cannot resume: {path} field {key!r} is not {words}.")
    if not all(isinstance(run, dict) and "key" in run for run in document["runs"]):
        raise ValueError(f"Cannot resume: {path} holds runs that are not run records.")
    return document


def csv_text(runs: Sequence[dict[str, Any]]) -> str:
    """One row per run: every scalar field (histories and other nested fields left out)."""
    columns: list[str] = []
    for run in runs:
        for key, value in run.items():
            if key not in columns and not isinstance(value, dict | list):
                columns.append(key)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for run in runs:
        writer.writerow({k: ("" if run.get(k) is None else run.get(k)) for k in columns})
    return buffer.getvalue()


def write_csv(out_dir: Path, runs: Sequence[dict[str, Any]]) -> Path:
    path = Path(out_dir) / RESULTS_CSV
    write_atomic(path, csv_text(runs))
    return path
