"""Depth-resolved lesion effects of the VGG study (Meyes et al. 2019, §4.3, Figures 14-17).

A *drop* is the intact accuracy minus the lesioned accuracy, in percentage points: positive
means the lesion hurt. Every filter of a layer is once the reference of a similar-filter group,
so a layer at one fraction has as many groups as filters; identical groups are one lesion of the
plan, weighted by the number of references that produced it (``plan.info["members"]``). The
statistics below are therefore over references, as in the paper.

The lower / upper standard deviations of the paper's red and green curves are
:func:`lesion.stats.spread`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lesion._errors import LesionError
from lesion.stats import spread
from lesion.store import Run

#: Our metric names (the run's ``top1`` / ``topk``) and how tables call them.
METRICS = {"top1": "top1", "topk": "top5"}
#: The paper's recovery protocols lesion 25 % groups (5 instances x 5 epochs; iterative with a stopping rule).
RECOVERY_FRACTION = 0.25


def references(run: Run, plan: str) -> pd.DataFrame:
    """One row per (layer, fraction, lesion) of a fraction plan: ``weight`` = its number of references.

    Returns
    -------
    DataFrame
        Columns ``layer``, ``fraction``, ``lesion`` (key), ``weight``; layers in plan order.
    """
    info = run.meta(f"plan:{plan}")
    if info is None:
        raise LesionError(f"run {str(run.path)!r} holds no plan {plan!r}")
    rows = [(layer, float(p), key) for key, members in info["members"].items() for layer, p, _ in members]
    frame = pd.DataFrame(rows, columns=["layer", "fraction", "lesion"])
    counted = frame.groupby(["layer", "fraction", "lesion"], sort=False).size().rename("weight").reset_index()
    counted["position"] = counted["layer"].map({name: i for i, name in enumerate(info["layers"])})
    counted = counted.sort_values(["position", "fraction"], kind="stable")
    return counted.drop(columns="position").reset_index(drop=True)


def drop_table(run: Run, metric: str) -> pd.DataFrame:
    """Drops in percentage points of every lesion: index lesion key, columns the class names and ``all``."""
    table = run.table(metric)
    return (table.loc["intact"] - table.drop(index="intact")) * 100


def layer_drops(run: Run, plans: Mapping[str, str], point_layers: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Depth-resolved drops: mean and lower / upper std over each layer's references, per class.

    Parameters
    ----------
    run : Run
        Holding the fraction plans.
    plans : mapping of lesion point -> plan name
        E.g. ``{"conv": "similar-conv", "block": "similar-block"}``.
    point_layers : mapping of lesion point -> layer names, optional
        The name each lesioned module is reported under, in the order of the plan's layers (the
        block point lesions ``features.N+2`` but reports the conv ``features.N``); default: as lesioned.

    Returns
    -------
    DataFrame
        One row per (point, metric, fraction, layer, class): ``point``, ``metric`` (top1 / top5),
        ``fraction``, ``layer``, ``depth`` (0, 1, … in network order), ``class`` (a class name
        or ``all``), ``mean``, ``lower_std``, ``upper_std`` (pp), ``n_references``, ``n_lesions``.
    """
    frames = []
    for metric, label in METRICS.items():
        drops = drop_table(run, metric)
        for point, plan in plans.items():
            groups = references(run, plan)
            lesioned_layers = list(dict.fromkeys(groups["layer"]))
            names = dict(zip(lesioned_layers, (point_layers or {}).get(point, lesioned_layers), strict=True))
            for (layer, p), group in groups.groupby(["layer", "fraction"], sort=False):
                s = spread(drops.loc[group["lesion"]].to_numpy(), group["weight"].to_numpy())
                frames.append(
                    pd.DataFrame(
                        {
                            "point": point, "metric": label, "fraction": p, "layer": names[layer],
                            "depth": lesioned_layers.index(layer), "class": drops.columns,
                            "mean": s.mean, "lower_std": s.lower, "upper_std": s.upper,
                            "n_references": int(s.n), "n_lesions": len(group),
                        }
                    )
                )
    return pd.concat(frames, ignore_index=True)


def overall(depth: pd.DataFrame) -> pd.DataFrame:
    """The ``all`` rows of :func:`layer_drops` (the whole evaluation set), without the class column."""
    return depth[depth["class"] == "all"].drop(columns="class").reset_index(drop=True)


def ranked_layers(depth: pd.DataFrame, point: str, fraction: float, metric: str = "top1") -> pd.DataFrame:
    """Layers by mean overall drop at one point and fraction, largest first (ties in network order)."""
    rows = overall(depth)
    rows = rows[(rows["point"] == point) & (rows["metric"] == metric) & np.isclose(rows["fraction"], fraction)]
    if rows.empty:
        raise LesionError(f"no depth-resolved drops for point {point!r}, fraction {fraction}, metric {metric!r}")
    return rows.sort_values(["mean", "depth"], ascending=[False, True], kind="stable").reset_index(drop=True)


def class_drops(depth: pd.DataFrame, point: str, metric: str, fraction: float, layer: str) -> pd.Series:
    """Mean drop of each class (not ``all``) after lesions of ``layer``, largest first (Figure 17)."""
    rows = depth[
        (depth["point"] == point) & (depth["metric"] == metric) & np.isclose(depth["fraction"], fraction)
        & (depth["layer"] == layer) & (depth["class"] != "all")
    ]
    return rows.set_index("class")["mean"].sort_values(ascending=False, kind="stable")


def point_comparison(depth: pd.DataFrame, fraction: float, metric: str = "top1") -> pd.DataFrame:
    """Per layer, the mean overall drop under each lesion point at ``fraction`` (and their difference).

    Returns
    -------
    DataFrame
        ``layer``, ``depth``, one column per point (``conv``, ``block``) and ``block_minus_conv``
        when both were measured.
    """
    rows = overall(depth)
    rows = rows[(rows["metric"] == metric) & np.isclose(rows["fraction"], fraction)]
    wide = rows.pivot_table(index=["depth", "layer"], columns="point", values="mean").reset_index()
    wide.columns.name = None
    if {"conv", "block"} <= set(wide.columns):
        wide["block_minus_conv"] = wide["block"] - wide["conv"]
    return wide


def reference_fraction(fractions: Sequence[float]) -> float:
    """The fraction the paper ranks layers by (0.10), or the planned one closest to it."""
    return min(fractions, key=lambda p: (abs(p - 0.10), p))


def shown_fractions(fractions: Sequence[float]) -> list[float]:
    """The paper's two panels, 10 % and 25 %, where planned; else every planned fraction."""
    chosen = [p for p in (0.10, 0.25) if any(np.isclose(p, f) for f in fractions)]
    return chosen or sorted(fractions)
