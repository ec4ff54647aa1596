"""The library's one exception type for bad input."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LesionError(ValueError):
    """Bad input to `lesion`: the message names the parameter, what was expected and what was given."""


def closest(word: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a hint naming the closest valid choices, e.g. ``" (closest: 'fc1', 'fc2')"``."""
    choices = list(choices)
    near = difflib.get_close_matches(word, choices, n=n, cutoff=0.4)
    return f" (closest: {', '.join(repr(c) for c in near)})" if near else ""
