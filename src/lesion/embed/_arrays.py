"""Validation of the point sets the embedding functions take."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lesion._errors import LesionError


def points(
    name: str, values: ArrayLike, n: int | None = None, dtype: type = np.float64
) -> NDArray[np.floating]:
    """`values` as a finite matrix (N, d) of `dtype`, N == `n` when given."""
    array: NDArray[np.floating] = np.asarray(values, dtype=dtype)
    expected = f"({n}, d)" if n is not None else "(N, d)"
    if (
        array.ndim != 2
        or array.shape[0] == 0
        or array.shape[1] == 0
        or (n is not None and array.shape[0] != n)
    ):
        raise LesionError(
            f"{name}: expected a non-empty matrix of shape {expected}, got shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise LesionError(f"{name}: expected finite values, got NaN or infinite entries")
    return array

