"""Markdown of summaries: one table helper (cells escaped, floats at a chosen precision), lists, wall times."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


def markdown_table(frame: pd.DataFrame, digits: int | None = None) -> str:
    """``frame`` as a GitHub pipe table without its index.

    Cells are ``str(value)`` with ``|`` escaped and newlines folded; with ``digits``, floats are
    written with that many decimals.

    >>> print(markdown_table(pd.DataFrame({"a": [1.234], "b": ["x|y"]}), digits=1))
    | a | b |
    |---|---|
    | 1.2 | x\\|y |
    """

    def cell(value: Any) -> str:
        if digits is not None and isinstance(value, (float, np.floating)):
            return f"{value:.{digits}f}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def bullet_list(items: Mapping[str, object]) -> str:
    """``- key: value`` lines."""
    return "\n".join(f"- {key}: {value}" for key, value in items.items())


def timings_table(seconds: Mapping[str, float]) -> str:
    """Wall seconds per stage and their total, as a Markdown table."""
    total = sum(seconds.values())
    rows = [{"stage": name, "wall time": f"{value:,.1f} s"} for name, value in seconds.items()]
    rows.append({"stage": "**total**", "wall time": f"{total:,.1f} s ({total / 60:.1f} min)"})
    return markdown_table(pd.DataFrame(rows, columns=["stage", "wall time"]))


def figures_and_timings(captions: Mapping[str, str], seconds: Mapping[str, float]) -> list[str]:
    """The closing sections of a study's ``summary.md``: each figure with its caption, then the wall times."""
    figures = [f"- `figures/{name}.png`: {caption}" for name, caption in captions.items()]
    return ["## Figures", "", *figures, "", "## Wall time", "", timings_table(seconds), ""]
