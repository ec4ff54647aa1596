"""Correlations with confidence intervals (Fisher's z), for attribute-vs-importance predictors."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from lesion._errors import LesionError
from lesion.stats._correlation import correlate

COLUMNS = ("n", "pearson_r", "pearson_lo", "pearson_hi", "pearson_p", "spearman_r", "spearman_lo", "spearman_hi", "spearman_p")


def correlation_ci(x: ArrayLike, y: ArrayLike, level: float = 0.95) -> dict[str, float]:
    """Pearson and Spearman correlation with two-sided p-values and confidence intervals.

    Pearson's interval is Fisher's: ``tanh(atanh(r) ± z·/√(n−3))`` (scipy's
    ``pearsonr(...).confidence_interval()`` gives the same). Spearman's uses Fisher's z with
    Bonett & Wright's (2000) standard error ``√((1 + r²/2)/(n−3))``. Non-finite pairs are dropped;
    everything is NaN with fewer than 4 pairs or a constant sample (see `lesion.stats.correlate`).

    Returns
    -------
    dict with keys ``n``, ``pearson_r``, ``pearson_lo``, ``pearson_hi``, ``pearson_p`` and the
    same four for ``spearman``.
    """
    if not 0 < level < 1:
        raise LesionError(f"level must be in (0, 1) (0.95 for a 95 % interval), got {level!r}")
    result = correlate(x, y)
    z = stats.norm.ppf(0.5 + level / 2)
    out: dict[str, float] = {"n": result.n}
    for kind, r, p, se in (
        ("pearson", result.pearson_r, result.pearson_p, 1.0),
        ("spearman", result.spearman_r, result.spearman_p, np.sqrt(1 + result.spearman_r**2 / 2)),
    ):
        if result.n < 4 or not np.isfinite(r):
            lo = hi = np.nan
        else:
            centre, half = np.arctanh(np.clip(r, -1 + 1e-15, 1 - 1e-15)), z * se / np.sqrt(result.n - 3)
            lo, hi = float(np.tanh(centre - half)), float(np.tanh(centre + half))
        out |= {f"{kind}_r": r, f"{kind}_lo": lo, f"{kind}_hi": hi, f"{kind}_p": p}
    return out


def correlation_table(df: pd.DataFrame, x: str, y: str, by: list[str], level: float = 0.95) -> pd.DataFrame:
    """`correlation_ci` of columns ``x`` and ``y`` within each group of ``by``; one row per group.

    Columns: the ``by`` columns, ``x``, ``y`` (the names), then :data:`COLUMNS`.
    """
    rows = []
    for key, group in df.groupby(by, sort=True):
        keys = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, keys, strict=True)), "x": x, "y": y, **correlation_ci(group[x], group[y], level)})
    return pd.DataFrame(rows, columns=[*by, "x", "y", *COLUMNS])
