"""Weighted mean of drops with the lower and upper standard deviations (Meyes et al. 2019, Figures 14-15).

**Lower / upper standard deviation** (the paper's red and green curves): with drops ``d_i``,
weights ``w_i`` and weighted mean ``m``, the lower std is the root-mean-square deviation of the
drops below the mean, ``sqrt(Σ_{d_i<m} w_i (d_i - m)² / Σ_{d_i<m} w_i)``, and the upper std the
same over the drops above it. A drop equal to the mean counts on neither side; a side without
drops has std 0. The band below the mean reaches ``m - lower``, the one above ``m + upper``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lesion._errors import LesionError


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
