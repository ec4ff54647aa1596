"""Shapley values beside leave-one-out effects: the units that single lesions miss."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lesion.plots._bars import save_figure


def plot_shapley(table: pd.DataFrame, path: str | Path, ylabel: str = "top-1 drop when lesioned (pp)") -> Path:
    """Bars of each player's Shapley value (± SE) and leave-one-out effect, in percentage points.

    Parameters
    ----------
    table : DataFrame
        One metric and class of :attr:`ShapleyResult.values` (columns player, value, se, single),
        e.g. ``result.table()``.
    path : path
        The PNG to write (its folder is created); returned.
    ylabel : str
        The metric's name (values are drawn times 100).
    """
    from matplotlib.figure import Figure

    rows = table.sort_values("value", ascending=False).reset_index(drop=True)
    x = range(len(rows))
    fig = Figure(figsize=(max(5.0, 0.35 * len(rows) + 2), 3.5))
    ax = fig.add_subplot()
    ax.bar([i - 0.2 for i in x], 100 * rows["value"], 0.4, yerr=100 * rows["se"].fillna(0), color="black",
           capsize=2, label="Shapley value (± SE)")
    ax.bar([i + 0.2 for i in x], 100 * rows["single"], 0.4, color="tab:red", label="leave-one-out")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xticks(list(x), rows["player"], rotation=90, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)[0]
