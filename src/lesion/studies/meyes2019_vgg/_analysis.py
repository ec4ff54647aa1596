"""Depth-resolved lesion effects of the VGG study (Meyes et al. 2019, §4.3, Figures 14-17).

A *drop* is the intact accuracy minus the lesioned accuracy, in percentage points: positive
means the lesion hurt. Every filter of a layer is once the reference of a similar-filter group,
so a layer at one fraction has as many groups as filters; identical groups are one lesion of the
plan, weighted by the number of references that produced it (``plan.info["members"]``). The
statistics below are therefore over references, as in the paper.

**Lower / upper standard deviation** (the paper's red and green curves): with drops ``d_i``,
weights ``w_i`` and weighted mean ``m``, the lower std is the root-mean-square deviation of the
drops below the mean, ``sqrt(Σ_{d_i<m} w_i (d_i - m)² / Σ_{d_i<m} w_i)``, and the upper std the
same over the drops above it. A drop equal to the mean counts on neither side; a side without
drops has std 0. The band below the mean reaches ``m - lower``, the one above ``m + upper``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lesion._errors import LesionError
from lesion.store import Run

#: Our metric names (the run's ``top1`` / ``topk``) and how tables call them.
METRICS = {"top1": "top1", "topk": "top5"}


@dataclass(frozen=True)
class Spread:
    """Weighted mean of drops and their lower / upper standard deviations, per column.

    Attributes
    ----------
    mean, lower, upper : ndarray of shape (n_columns,)
    n : float
        Total weight (the number of references).
    """

    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    n: float


def spread(drops: np.ndarray, weights: np.ndarray | None = None) -> Spread:
    """Mean and lower / upper standard deviation of ``drops`` over its rows (see the module docs).

    Parameters
    ----------
    drops : array of shape (n,) or (n, c)
        One row per lesion; columns are independent (e.g. classes).
    weights : array of shape (n,), optional
        Non-negative weight of each row (default 1 each).

    Returns
    -------
    Spread
        Arrays of shape (c,) (shape (1,) for 1-D ``drops``).

    Examples
    --------
    >>> s = spread(np.array([1.0, 2.0, 6.0]))
    >>> float(s.mean[0]), float(s.lower[0]), float(s.upper[0])
    (3.0, 1.5811388300841898, 3.0)
    """
    values = np.asarray(drops, dtype=np.float64)
    values = values[:, None] if values.ndim == 1 else values
    w = np.ones(len(values)) if weights is None else np.asarray(weights, dtype=np.float64)
    if values.ndim != 2 or w.shape != (len(values),) or not len(values):
        raise LesionError(f"spread: expected drops of shape (n, c) and weights of shape (n,), n >= 1; got {values.shape} and {w.shape}")
    if (w < 0).any() or w.sum() <= 0:
        raise LesionError(f"spread: weights must be >= 0 with a positive sum, got {w.tolist()}")
    mean = w @ values / w.sum()
    deviation = values - mean
    return Spread(mean, _side_rms(deviation, w, deviation < 0), _side_rms(deviation, w, deviation > 0), float(w.sum()))


def _side_rms(deviation: np.ndarray, w: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Weighted RMS of ``deviation`` (n, c) where ``side`` (n, c) is True; 0 for an empty column."""
    weight = w[:, None] * side
    total = weight.sum(axis=0)
    squares = (weight * deviation**2).sum(axis=0)
    return np.sqrt(np.divide(squares, total, out=np.zeros_like(squares), where=total > 0))


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
