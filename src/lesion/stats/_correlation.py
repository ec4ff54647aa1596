"""Pearson and Spearman correlations, NaN-safe, per group and pooled."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from lesion._errors import LesionError, closest

MIN_PAIRS = 3
"""Fewest finite pairs that give a coefficient: two points always lie on a line."""


@dataclass(frozen=True)
class Correlation:
    """Pearson and Spearman correlation of two samples, with two-sided p-values.

    Attributes
    ----------
    pearson_r, pearson_p : float
        Pearson's r and its two-sided p-value (NaN when undefined, see `correlate`).
    spearman_r, spearman_p : float
        Spearman's rank correlation and its two-sided p-value (NaN when undefined).
    n : int
        Number of pairs used (pairs where both values are finite).
    """

    pearson_r: float
    pearson_p: float
    spearman_r: float
    spearman_p: float
    n: int


def correlate(x: ArrayLike, y: ArrayLike) -> Correlation:
    """Pearson and Spearman correlation of paired samples.

    Pairs where either value is NaN or infinite are dropped. The coefficients and p-values
    are NaN (never a warning or an error) when fewer than 3 pairs remain or when either
    sample is constant over the remaining pairs.

    Parameters
    ----------
    x, y : array_like of float, shape (n,)
        The paired samples, e.g. a unit attribute and the accuracy drop its lesion causes.

    Returns
    -------
    Correlation
    """
    x_arr = np.asarray(x, dtype=np.float64)
    y_arr = np.asarray(y, dtype=np.float64)
    if x_arr.ndim != 1 or x_arr.shape != y_arr.shape:
        raise LesionError(
            f"x, y: expected two 1-D arrays of the same length, got shapes {x_arr.shape} and {y_arr.shape}"
        )
    keep = np.isfinite(x_arr) & np.isfinite(y_arr)
    x_arr, y_arr = x_arr[keep], y_arr[keep]
    n = int(keep.sum())
    if n < MIN_PAIRS or np.ptp(x_arr) == 0 or np.ptp(y_arr) == 0:
        return Correlation(np.nan, np.nan, np.nan, np.nan, n)
    pearson = stats.pearsonr(x_arr, y_arr)
    spearman = stats.spearmanr(x_arr, y_arr)
    return Correlation(
        pearson_r=float(pearson.statistic),
        pearson_p=float(pearson.pvalue),
        spearman_r=float(spearman.statistic),
        spearman_p=float(spearman.pvalue),
        n=n,
    )


def correlations_by_group(df: pd.DataFrame, x: str, y: str, by: str) -> pd.DataFrame:
    """Correlation of two columns within each group, and pooled over all rows.

    Serves population studies such as Meyes et al. (2019), Figures 9 and 10: the
    correlation between a unit attribute and its lesion's accuracy drop per network, and
    over the units of all networks pooled.

    Parameters
    ----------
    df : pandas.DataFrame
        Tidy table, one row per observation (e.g. per unit).
    x, y : str
        Columns to correlate.
    by : str
        Column whose values define the groups (e.g. ``"network"``).

    Returns
    -------
    pandas.DataFrame
        One row per group in sorted group order, then one pooled row, with columns
        `by` (the group value; None on the pooled row), ``pooled`` (bool), ``n``,
        ``pearson_r``, ``pearson_p``, ``spearman_r``, ``spearman_p``. See `correlate`
        for when values are NaN.
    """
    for parameter, column in (("x", x), ("y", y), ("by", by)):
        if column not in df.columns:
            names = [str(c) for c in df.columns]
            raise LesionError(
                f"{parameter}: expected a column of df, got {column!r}{closest(str(column), names)}"
            )
    rows = [
        {by: key, "pooled": False, **_as_row(correlate(group[x], group[y]))}
        for key, group in df.groupby(by, sort=True)
    ]
    rows.append({by: None, "pooled": True, **_as_row(correlate(df[x], df[y]))})
    table = pd.DataFrame(rows)
    table[by] = pd.Series([row[by] for row in rows], dtype=object)
    return table


def _as_row(result: Correlation) -> dict[str, float | int]:
    row = dataclasses.asdict(result)
    return {"n": row.pop("n"), **row}
