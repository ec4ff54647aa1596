"""Turning weights and activations (numpy arrays or torch tensors) into numpy arrays."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lesion._errors import LesionError


def as_numpy(values: ArrayLike, dtype: type | None = np.float64) -> NDArray:
    """`values` as a numpy array (of `dtype`, or its own with None); tensors are detached first."""
    detach = getattr(values, "detach", None)
    if callable(detach):
        values = detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def per_unit(name: str, weight: ArrayLike) -> NDArray[np.float64]:
    """A layer weight as (n_units, fan_in): dim 0 is the unit, the rest is flattened.

    A ``Linear`` weight (out_features, in_features) is already in that form; a ``Conv``
    weight (C_out, C_in, *kernel) becomes (C_out, C_in * prod(kernel)).
    """
    array = as_numpy(weight)
    if array.ndim < 2 or array.shape[0] == 0 or array[0].size == 0:
        raise LesionError(
            f"{name}: expected a weight of shape (n_units, fan_in, ...) with at least one "
            f"unit and one incoming weight, got shape {array.shape}"
        )
    return array.reshape(array.shape[0], -1)

