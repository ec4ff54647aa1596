"""The library's one exception type for bad input."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import numpy as np


class LesionError(ValueError):
    """Bad input to `lesion`: the message names the parameter, what was expected and what was given."""


def closest(word: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a hint naming the closest valid choices, e.g. ``" (closest: 'fc1', 'fc2')"``."""
    choices = list(choices)
    near = difflib.get_close_matches(word, choices, n=n, cutoff=0.4)
    return f" (closest: {', '.join(repr(c) for c in near)})" if near else ""


def check_int(name: str, value: object, low: int, high: int | None = None, why: str = "") -> int:
    """`value` as an int if it is an integer in low..high (high None: no upper bound)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        number = int(value)
        if number >= low and (high is None or number <= high):
            return number
    expected = f"an integer in {low}..{high}" if high is not None else f"an integer >= {low}"
    hint = ""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        hint = f" (closest valid: {low if value < low else high})"
    raise LesionError(f"{name}: expected {expected}{why}, got {value!r}{hint}")
