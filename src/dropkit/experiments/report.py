"""The self-contained report.html (images embedded as base64) and the terminal table."""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dropkit.experiments.regularizers import REGULARIZERS
from dropkit.experiments.summary import METRICS, fmt

_TITLES = dict(METRICS) | {"n": "seeds", "p": "p"}


def _title(key: str) -> str:
    return _TITLES.get(key, key.replace("_", " "))


def _cell(key: str, value: Any) -> str:
    if key == "p" and isinstance(value, float):
        return f"{value:g}"
    if key == "seconds" and isinstance(value, tuple):
        return f"{value[0]:.1f} ± {value[1]:.1f}"
    return fmt(value)


def table_strings(table: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Column titles and formatted cells of a summary table."""
    columns: list[str] = []
    for row in table:
        for key in row:
            if key not in columns:
                columns.append(key)
    return [_title(c) for c in columns], [[_cell(c, row.get(c)) for c in columns] for row in table]


def print_table(
    exp: Any,
    table: Sequence[dict[str, Any]],
    reading: Sequence[str],
    out_dir: Path,
    console: Any = None,
) -> None:
    """The summary table, the reading and the report's path, on ``console``.

    No number is ever cut: a table wider than the console first drops the
    spaces around ``±`` and the seconds (they are in report.html), then lets
    column titles wrap; if the cells still do not fit side by side, each row is
    printed as ``title: value`` lines instead. Rows with different columns
    (convergence's training and timing rows) get a table each.
    """
    from rich.console import Console

    if console is None:
        console = Console()
        if not console.is_terminal:  # a log file: no reason to wrap at 80 columns
            console = Console(width=120)
    # The terminal gets the essentials; report.html has every column.
    hidden = {"val_acc", "stopped_epoch", "test_loss", "n"}
    hidden |= {k for k in ("dataset",) if len({str(r.get(k)) for r in table}) == 1}
    narrow = console.width < 100  # an 80-column terminal: the times are in the report
    if narrow:
        hidden.add("seconds")
    title = f"dropkit run {exp.name}: {exp.table_caption}"
    for block in _blocks([{k: v for k, v in r.items() if k not in hidden} for r in table]):
        titles, rows = table_strings(block)
        compact = [[c.replace(" ± ", "±") for c in row] for row in rows]
        t = None if narrow else _fitted_table(console, title, titles, rows)
        t = t or _fitted_table(console, title, titles, compact)
        if t is not None:
            console.print(t)
        else:
            _print_vertical(console, title, titles, rows)
        title = ""
    for paragraph in reading:
        console.print(paragraph, highlight=False)
        console.print()
    console.print(f"Report: {Path(out_dir) / 'report.html'}", highlight=False)


def _blocks(table: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive rows with the same columns, one list each."""
    blocks: list[list[dict[str, Any]]] = []
    for row in table:
        if blocks and list(blocks[-1][0]) == list(row):
            blocks[-1].append(row)
        else:
            blocks.append([row])
    return blocks


def _fitted_table(
    console: Any, title: str, titles: Sequence[str], rows: Sequence[Sequence[str]]
) -> Any:
    """A rich Table whose every cell shows in full within ``console.width``, or None.

    Each column is exactly as wide as its widest cell (or the longest word of
    its title); only titles wrap. "0.684 ±" over "0.003" would be unreadable.
    """
    from rich import box
    from rich.measure import Measurement
    from rich.table import Table

    t = Table(title=title or None, box=box.SIMPLE_HEAD)
    for i, name in enumerate(titles):
        cells = [row[i] for row in rows]
        width = max([len(c) for c in cells] + [len(w) for w in name.split()] + [1])
        natural = max(width, len(name))
        numeric = bool(cells) and bool(_NUMBER.match(cells[0]))
        t.add_column(
            name,
            justify="right" if numeric else "left",
            # a title that fits stays on one line; a longer one wraps at its spaces
            width=natural if natural <= max(width, 12) else width,
            overflow="fold",
        )
    for row in rows:
        t.add_row(*row)
    # measured without the console's limit (rich clamps a measurement to it)
    unlimited = console.options.update(max_width=100_000)
    if Measurement.get(console, unlimited, t).maximum > console.width:
        return None
    return t


def _print_vertical(
    console: Any, title: str, titles: Sequence[str], rows: Sequence[Sequence[str]]
) -> None:
    """Each row as a heading (its leading names: model, variant...) and one
    ``title: value`` line per other column."""
    if title:
        console.print(title, highlight=False)
    names = 0  # the leading columns that hold names, not numbers
    while names < len(titles) - 1 and not any(_NUMBER.match(row[names]) for row in rows):
        names += 1
    width = max(len(t) for t in titles[names:])
    for row in rows:
        console.print()
        console.print(" / ".join(c for c in row[:names] if c) or "-", highlight=False)
        for name, cell in zip(titles[names:], row[names:], strict=True):
            console.print(f"  {name:<{width}}  {cell}", highlight=False)
    console.print()


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
 padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em} td,th{border:1px solid #ccc;padding:3px 8px}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee} pre{background:#f7f7f7;padding:.8em;overflow:auto;
 font-size:.8em} .reading p{background:#f5f9ff;border-left:4px solid #4a7bd0;padding:.5em .8em}
"""


_NUMBER = re.compile(r"^[-+]?[\d.]+(e[-+]?\d+)?( ?± ?[\d.]+)?$")


def _html_table(titles: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(t)}</th>" for t in titles)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='num'>{html.escape(c)}</td>"
            if _NUMBER.match(c)
            else f"<td>{html.escape(c)}</td>"
            for c in r
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _strength(reg: Any, config: dict[str, Any]) -> str:
    parts = []
    if reg.dropout or reg.droppath:
        parts.append("p per model (table above)")
    if reg.l2:
        parts.append(f"weight_decay = {config.get('weight_decay'):g}")
    if reg.l1:
        parts.append(f"l1 = {config.get('l1'):g}")
    if reg.max_norm:
        parts.append(f"max norm = {config.get('max_norm'):g}")
    return ", ".join(parts) or "-"


#: the options that set one regularizer's strength, and the flag of the regularizers using it
_STRENGTHS = {"weight_decay": "l2", "l1": "l1", "max_norm": "max_norm"}


def unused_strengths(document: dict[str, Any]) -> set[str]:
    """The strength options (``weight_decay``, ``l1``, ``max_norm``) that no run's
    regularizer used: the report does not list them as if they had mattered."""
    names = {r.get("regularizer") for r in document.get("runs", [])}
    names |= set(document.get("config", {}).get("regularizers", []))
    used = [REGULARIZERS[n] for n in names if n in REGULARIZERS]
    return {
        option for option, flag in _STRENGTHS.items() if not any(getattr(reg, flag) for reg in used)
    }


def render(
    exp: Any,
    document: dict[str, Any],
    table: Sequence[dict[str, Any]],
    images: Sequence[Path],
    reading: Sequence[str],
) -> str:
    """One HTML page: reading, table, plots, per-model settings, config, environment."""
    config = document["config"]
    titles, rows = table_strings(table)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>dropkit run {html.escape(exp.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>dropkit run {html.escape(exp.name)}</h1>",
        f"<p>{html.escape(exp.help)}</p>",
        f"<p>{len(document['runs'])} runs ({document.get('status', '')}), dataset "
        f"<b>{html.escape(str(config.get('dataset')))}</b>, seeds {config.get('seeds')}.</p>",
        "<h2>Reading</h2><div class='reading'>",
        *(f"<p>{html.escape(p)}</p>" for p in reading),
        f"</div><h2>Results ({html.escape(exp.table_caption)})</h2>",
        _html_table(titles, rows),
        f"<p>{html.escape(exp.table_note)}</p>",
        "<h2>Plots</h2>",
    ]
    for image in images:
        data = base64.b64encode(Path(image).read_bytes()).decode("ascii")
        parts.append(
            f"<p><b>{html.escape(Path(image).name)}</b><br>"
            f"<img alt='{html.escape(Path(image).name)}' src='data:image/png;base64,{data}'></p>"
        )
    settings = config.get("model_settings") or {}
    if settings:
        parts.append("<h2>Per-model settings</h2>")
        srows = [
            [
                m,
                str(s["epochs"]),
                str(s["batch_size"]),
                f"{s['lr']:g}",
                ", ".join(f"{p:g}" for p in s["p"]),
                s.get("why", ""),
            ]
            for m, s in settings.items()
        ]
        parts.append(_html_table(["model", "epochs", "batch", "lr", "p", "why"], srows))
    used = [r for r in config.get("regularizers", []) if r in REGULARIZERS]
    if used:
        parts.append("<h2>Regularizers</h2>")
        parts.append(
            _html_table(
                ["regularizer", "what it does", "strength"],
                [
                    [r, REGULARIZERS[r].description, _strength(REGULARIZERS[r], config)]
                    for r in used
                ],
            )
        )
    shown = {
        k: v
        for k, v in config.items()
        if k != "model_settings" and k not in unused_strengths(document)
    }
    parts += [
        "<h2>Configuration</h2>",
        f"<pre>{html.escape(json.dumps(shown, indent=1))}</pre>",
        "<h2>Environment</h2>",
        f"<pre>{html.escape(json.dumps(document.get('environment', {}), indent=1))}</pre>",
        "<p>Every run, with its per-epoch history, is in results.json; one row per run in "
        "results.csv.</p></body></html>",
    ]
    return "\n".join(parts)
