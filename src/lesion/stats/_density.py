"""Kernel density estimates of 1-D samples."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from lesion._errors import LesionError


def kde(
    values: ArrayLike, grid: ArrayLike | None = None, n_points: int = 200
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Gaussian kernel density estimate (``scipy.stats.gaussian_kde``, Scott's bandwidth).

    Parameters
    ----------
    values : array_like of float, shape (n,)
        The sample, e.g. one correlation coefficient per network. NaN and infinite
        values are dropped.
    grid : array_like of float, shape (g,), optional
        Where to evaluate the density. By default `n_points` points spanning the sample
        widened by three kernel bandwidths on each side (or ``value ± 1`` when the sample
        has fewer than 2 distinct values, and [0, 1] when it is empty).
    n_points : int, default=200
        Size of the default grid.

    Returns
    -------
    grid : ndarray of float64, shape (g,)
    density : ndarray of float64, shape (g,)
        The estimated density on `grid`; all NaN when the sample has fewer than 2 distinct
        values (no spread to estimate a bandwidth from).
    """
    sample = np.asarray(values, dtype=np.float64).ravel()
    sample = sample[np.isfinite(sample)]
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) or n_points < 2:
        raise LesionError(f"n_points: expected an integer >= 2, got {n_points!r}")
    if np.unique(sample).size < 2:
        points = _grid(grid, _flat_range(sample), n_points)
        return points, np.full(points.shape, np.nan)
    estimate = stats.gaussian_kde(sample)
    bandwidth = float(np.sqrt(estimate.covariance[0, 0]))
    span = (sample.min() - 3 * bandwidth, sample.max() + 3 * bandwidth)
    points = _grid(grid, span, n_points)
    return points, estimate(points)


def _flat_range(sample: NDArray[np.float64]) -> tuple[float, float]:
    if sample.size == 0:
        return 0.0, 1.0
    return float(sample[0]) - 1.0, float(sample[0]) + 1.0


def _grid(grid: ArrayLike | None, span: tuple[float, float], n_points: int) -> NDArray[np.float64]:
    if grid is None:
        return np.linspace(span[0], span[1], n_points)
    points = np.asarray(grid, dtype=np.float64)
    if points.ndim != 1:
        raise LesionError(
            f"grid: expected a 1-D array of evaluation points, got shape {points.shape}"
        )
    return points
