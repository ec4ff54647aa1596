"""Lesion effects over random draws of units, per layer and class (Meyes et al. 2020, Section 4.1).

Read from a finished run whose plan was made by :func:`lesion.plans.fraction` with random draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from lesion._errors import LesionError
from lesion.store import Run


def class_changes(run: Run, keys: Sequence[str]) -> pd.DataFrame:
    """Top-1 accuracy of each lesion minus the intact network's, per class (in [−1, 1]).

    Returns
    -------
    DataFrame of shape (len(keys), n_classes + 1)
        Index: lesion key; columns: the class names, then ``all``.
    """
    table = run.table("top1")
    return table.loc[list(keys)] - table.loc["intact"]


def layer_effects(run: Run, plan: str) -> pd.DataFrame:
    """Mean change in class-specific accuracy per layer and fraction over a random-draw plan.

    Every draw counts once, also when two draws picked the same units (the plan then holds one
    lesion with two members; see :func:`lesion.plans.fraction`).

    Returns
    -------
    DataFrame
        One row per (layer, fraction, class): ``layer``, ``fraction``, ``class`` (−1: all
        samples), ``class_name``, ``mean_change`` and ``std_change`` (top-1 accuracy, lesioned
        minus intact, over the draws), ``n_draws``. Layers in model order.
    """
    info = run.meta(f"plan:{plan}")
    draws = pd.DataFrame(
        [(layer, fraction, draw, key) for key, members in info["members"].items() for layer, fraction, draw in members],
        columns=["layer", "fraction", "draw", "lesion"],
    )
    change = class_changes(run, draws["lesion"].unique())
    names = list(change.columns)
    long = change.rename_axis(index="lesion", columns="class_name").stack().rename("change").reset_index()
    merged = draws.merge(long, on="lesion")
    grouped = merged.groupby(["layer", "fraction", "class_name"], sort=False)["change"]
    effects = grouped.agg(mean_change="mean", std_change="std", n_draws="size").reset_index()
    effects.insert(2, "class", effects["class_name"].map({n: i for i, n in enumerate(names[:-1])} | {"all": -1}))
    order = {name: i for i, name in enumerate(info["layers"])}
    effects = effects.sort_values(
        ["fraction", "layer", "class"], key=lambda col: col.map(order) if col.name == "layer" else col, kind="stable"
    )
    return effects.reset_index(drop=True)


def class_drops(effects: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """Per class, each layer's mean accuracy change and their sum (the stacked bar's height).

    Returns
    -------
    DataFrame
        Index: class names (no ``all``); one column per layer (mean change, in [−1, 1]) and
        ``total``, their sum.
    """
    rows = effects[(effects["fraction"] == fraction) & (effects["class"] >= 0)]
    if rows.empty:
        raise LesionError(f"fraction: no effects for {fraction}; the table has {sorted(effects['fraction'].unique())}")
    wide = rows.pivot(index="class_name", columns="layer", values="mean_change")
    wide = wide.loc[list(dict.fromkeys(rows["class_name"])), list(dict.fromkeys(rows["layer"]))]
    return wide.assign(total=wide.sum(axis=1))
