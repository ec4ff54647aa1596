"""Paired and multiple-comparison tests: exact McNemar, Benjamini-Hochberg."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from lesion._errors import LesionError


def _counts(name: str, values: ArrayLike) -> NDArray[np.int64]:
    array = np.asarray(values)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise LesionError(f"{name}: expected non-negative integer counts, got dtype {array.dtype}")
    if np.any(~np.isfinite(array)) or np.any(array < 0) or np.any(array != np.round(array)):
        raise LesionError(f"{name}: expected non-negative integer counts, got {array!r}")
    return array.astype(np.int64)


def mcnemar_exact(b: ArrayLike, c: ArrayLike) -> float | NDArray[np.float64]:
    """Two-sided exact McNemar test from the discordant counts of a paired comparison.

    Under the null hypothesis (the lesion changes no sample's correctness systematically)
    each discordant sample is equally likely to be lost or gained, so ``min(b, c)`` follows
    Binomial(b + c, 1/2). The two-sided p-value is ``min(1, 2 * P(X <= min(b, c)))``, which
    equals ``scipy.stats.binomtest(min(b, c), b + c, 0.5).pvalue``.

    Parameters
    ----------
    b : array_like of int
        Samples right before and wrong after the lesion ("lost").
    c : array_like of int
        Samples wrong before and right after the lesion ("gained"). Broadcast against `b`.

    Returns
    -------
    float or ndarray of float64
        The p-value, in the broadcast shape of `b` and `c` (a float for scalar input).
        It is 1 where ``b + c == 0`` (no discordant sample: no evidence of any effect).
    """
    lost, gained = np.broadcast_arrays(_counts("b", b), _counts("c", c))
    n = lost + gained
    p = np.minimum(1.0, 2.0 * stats.binom.cdf(np.minimum(lost, gained), n, 0.5))
    p = np.where(n == 0, 1.0, p)
    return float(p) if p.ndim == 0 else p


def benjamini_hochberg(
    pvalues: ArrayLike, alpha: float = 0.05
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Benjamini-Hochberg false-discovery-rate control (`scipy.stats.false_discovery_control`).

    The adjusted value of the i-th smallest of m p-values is
    ``q_(i) = min(1, min_{j >= i} m * p_(j) / j)``; a hypothesis is rejected when
    ``q <= alpha``, which is the step-up rule "reject the k smallest, k the largest i with
    ``p_(i) <= i * alpha / m``".

    Parameters
    ----------
    pvalues : array_like of float, any shape
        P-values in [0, 1]. NaN marks a missing test: it stays NaN, is never rejected and
        does not count in m (m is the number of finite p-values).
    alpha : float, default=0.05
        The false discovery rate to control, in (0, 1).

    Returns
    -------
    q : ndarray of float64, same shape as `pvalues`
        The adjusted p-values (q-values).
    reject : ndarray of bool, same shape as `pvalues`
        True where the hypothesis is rejected at level `alpha`.
    """
    if not 0.0 < alpha < 1.0:
        raise LesionError(f"alpha: expected a false discovery rate in (0, 1), got {alpha!r}")
    p = np.asarray(pvalues, dtype=np.float64)
    finite = ~np.isnan(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise LesionError(f"pvalues: expected values in [0, 1] or NaN, got {p[finite]!r}")
    q = np.full(p.shape, np.nan)
    if finite.any():
        q[finite] = stats.false_discovery_control(p[finite], method="bh")
    return q, finite & (q <= alpha)
