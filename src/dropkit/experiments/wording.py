"""Sentences from numbers: the small grammar the readings share.

A reading is computed from measured numbers, so its grammar must hold for any
of them: "1 epoch" and "2 epochs", "30%" rather than "30% to 30%", "leaves the
gap unchanged" rather than "widens the gap by 0.0 points", and a capital
letter at the start of every sentence even when it starts with a name.
"""

from __future__ import annotations

import math
import re

#: differences smaller than this (a fraction: 0.0005 = 0.05 points) print as 0.0
#: points at one decimal, so they are called "unchanged" instead
UNCHANGED = 0.0005


def plural(count: float, word: str, plural_form: str | None = None, *, digits: int = 0) -> str:
    """``"1 epoch"``, ``"2 epochs"``, ``"1.5 epochs"`` (``count`` shown with ``digits``)."""
    shown = f"{count:.{digits}f}"
    one = float(shown) == 1.0 and digits == 0
    return f"{shown} {word if one else (plural_form or word + 's')}"


def percent(fraction: float | None, digits: int = 1) -> str:
    """``0.612`` -> ``"61.2%"``; ``None`` or NaN -> ``"n/a"``."""
    if fraction is None or math.isnan(fraction):
        return "n/a"
    return f"{100 * fraction:.{digits}f}%"


def number(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals; ``None`` or NaN -> ``"n/a"``."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def points(difference: float, *, signed: bool = False) -> str:
    """A difference of fractions in percentage points: ``"3.4 points"`` / ``"+3.4 points"``."""
    if abs(difference) < UNCHANGED:
        difference = 0.0  # never "-0.0 points"
    return f"{100 * difference:{'+' if signed else ''}.1f} points"


def change(difference: float, what: str, up: str = "raises", down: str = "lowers") -> str:
    """``"raises test accuracy by 3.4 points"``, ``"lowers ..."``, or below
    :data:`UNCHANGED` ``"leaves test accuracy unchanged"``."""
    if abs(difference) < UNCHANGED:
        return f"leaves {what} unchanged"
    return f"{up if difference > 0 else down} {what} by {points(abs(difference))}"


def span(low: str, high: str) -> str:
    """``"30% to 45%"``, or ``"30%"`` when both ends print the same."""
    return low if low == high else f"{low} to {high}"


def capitalise(text: str) -> str:
    """``text`` with its first letter upper-cased and the rest unchanged."""
    for i, ch in enumerate(text):
        if ch.isalpha():
            return text[:i] + ch.upper() + text[i + 1 :]
    return text


def listing(items: list[str]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


def sentences(paragraph: str) -> list[str]:
    """A paragraph split after every ``.``, ``!`` or ``?`` followed by a space."""
    return [s for s in _SENTENCE_END.split(paragraph.strip()) if s]
