"""Pairwise lesions versus the single lesions of the same units: synergy and redundancy."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from lesion._errors import LesionError

OVERALL = -1
"""The ``class`` value of the rows about overall accuracy in `pair_synergy`."""

SAMPLE_CATEGORIES = ("correct", "lost_single", "lost_pair_only", "gained", "wrong")
"""The categories `sample_categories` assigns, in the order of Meyes et al. (2019), Figure 12."""


def pair_synergy(
    single: Mapping[Hashable, ArrayLike],
    pair: Mapping[tuple[Hashable, Hashable], ArrayLike],
    *,
    single_overall: Mapping[Hashable, float] | None = None,
    pair_overall: Mapping[tuple[Hashable, Hashable], float] | None = None,
) -> pd.DataFrame:
    """Compare each pairwise lesion with the sum of the two single lesions.

    Meyes et al. (2019), Section 4.2: the effect of lesioning units u and v together versus
    the summed effects of lesioning each alone. ``synergy = pair - (single_u + single_v)``;
    with accuracy changes (negative = damage) a negative synergy means the pair hurts more
    than its parts add up to (the units represent something redundantly), a positive one
    means it hurts less (or helps more).

    Parameters
    ----------
    single : mapping unit -> array_like of float, shape (n_classes,)
        Per-class change in accuracy after lesioning the unit alone.
    pair : mapping (unit_a, unit_b) -> array_like of float, shape (n_classes,)
        Per-class change in accuracy after lesioning both units. Both units must be keys
        of `single`.
    single_overall, pair_overall : mapping, optional
        Change in overall accuracy for the same keys as `single` and `pair`. Give both or
        neither; when given, each pair gets an extra row with ``class == -1``. (Overall
        accuracy is not the mean of the class accuracies unless the classes are equally
        large, so it is taken as given, not derived.)

    Returns
    -------
    pandas.DataFrame
        One row per pair and class (class -1 first when overall values are given), in the
        order of `pair`, with columns ``unit_a``, ``unit_b``, ``class``, ``pair``,
        ``single_a``, ``single_b``, ``sum_singles``, ``synergy``.
    """
    if (single_overall is None) != (pair_overall is None):
        raise LesionError(
            "single_overall, pair_overall: expected both or neither, "
            f"got single_overall={'given' if single_overall is not None else None}, "
            f"pair_overall={'given' if pair_overall is not None else None}"
        )
    singles = {unit: _effects(f"single[{unit!r}]", values) for unit, values in single.items()}
    n_classes = _common_length(singles)
    with_overall = single_overall is not None
    classes = np.arange(OVERALL if with_overall else 0, n_classes)
    keys, blocks = [], []
    for key, changes in pair.items():
        a, b = _pair_key(key, singles)
        effect = _effects(f"pair[{key!r}]", changes)
        if effect.size != n_classes:
            raise LesionError(
                f"pair[{key!r}]: expected {n_classes} class values like single, got {effect.size}"
            )
        block = np.stack([effect, singles[a], singles[b]])
        if with_overall:
            overall = [
                _lookup("pair_overall", pair_overall, key),
                _lookup("single_overall", single_overall, a),
                _lookup("single_overall", single_overall, b),
            ]
            block = np.column_stack([overall, block])
        keys.append((a, b))
        blocks.append(block)
    columns = np.concatenate(blocks, axis=1) if blocks else np.empty((3, 0))
    table = pd.DataFrame(
        {
            "unit_a": [a for a, _ in keys for _ in classes],
            "unit_b": [b for _, b in keys for _ in classes],
            "class": np.tile(classes, len(keys)),
            "pair": columns[0],
            "single_a": columns[1],
            "single_b": columns[2],
        }
    )
    table["sum_singles"] = table["single_a"] + table["single_b"]
    table["synergy"] = table["pair"] - table["sum_singles"]
    return table


def _effects(name: str, values: ArrayLike) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise LesionError(
            f"{name}: expected a 1-D array of per-class changes, got shape {array.shape}"
        )
    return array


def _common_length(singles: Mapping[Hashable, NDArray[np.float64]]) -> int:
    lengths = {unit: values.size for unit, values in singles.items()}
    if len(set(lengths.values())) > 1:
        raise LesionError(
            f"single: expected the same number of classes for every unit, got {lengths}"
        )
    return next(iter(lengths.values()), 0)


def _pair_key(key: object, singles: Mapping[Hashable, object]) -> tuple[Hashable, Hashable]:
    if not isinstance(key, tuple) or len(key) != 2 or key[0] == key[1]:
        raise LesionError(
            f"pair: expected keys (unit_a, unit_b) of two different units, got {key!r}"
        )
    for unit in key:
        if unit not in singles:
            raise LesionError(
                f"pair[{key!r}]: expected both units to have a single lesion in single, "
                f"got {unit!r} which has none"
            )
    return key[0], key[1]


def _lookup(name: str, mapping: Mapping[Any, float] | None, key: Hashable) -> float:
    if mapping is None or key not in mapping:
        raise LesionError(f"{name}: expected a value for {key!r}, got none")
    return float(mapping[key])


def sample_categories(
    correct_pair: ArrayLike,
    correct_u: ArrayLike,
    correct_v: ArrayLike,
    correct_intact: ArrayLike,
) -> NDArray[np.str_]:
    """Sort each sample by what the pairwise lesion of units u and v did to it.

    The categories of Meyes et al. (2019), Figure 12, made a partition (every sample gets
    exactly one), decided first by the intact network and the pair, then by the singles:

    ================  ======  =====  =================================
    category          intact  pair   singles
    ================  ======  =====  =================================
    "correct"         right   right  any
    "gained"          wrong   right  any
    "wrong"           wrong   wrong  any
    "lost_single"     right   wrong  wrong after u or after v (or both)
    "lost_pair_only"  right   wrong  right after u and right after v
    ================  ======  =====  =================================

    So "correct" holds only samples the intact network also got right: the samples right
    after the pair are "correct" plus "gained". "lost_pair_only" are the samples the two
    units represent redundantly: either unit alone suffices, only losing both hurts.

    Parameters
    ----------
    correct_pair, correct_u, correct_v, correct_intact : array_like of bool, shape (N,)
        Per sample, whether it is classified correctly after the pairwise lesion, after
        lesioning u alone, after lesioning v alone, and by the intact network.

    Returns
    -------
    ndarray of str, shape (N,)
        One of `SAMPLE_CATEGORIES` per sample.
    """
    pair, u, v, intact = (
        _flags(name, values)
        for name, values in (
            ("correct_pair", correct_pair),
            ("correct_u", correct_u),
            ("correct_v", correct_v),
            ("correct_intact", correct_intact),
        )
    )
    shapes = {pair.shape, u.shape, v.shape, intact.shape}
    if len(shapes) > 1:
        raise LesionError(
            "correct_pair, correct_u, correct_v, correct_intact: expected arrays of the same "
            f"shape (N,), got shapes {pair.shape}, {u.shape}, {v.shape}, {intact.shape}"
        )
    return np.select(
        [intact & pair, ~intact & pair, ~intact & ~pair, ~(u & v)],
        ["correct", "gained", "wrong", "lost_single"],
        default="lost_pair_only",
    )


def _flags(name: str, values: ArrayLike) -> NDArray[np.bool_]:
    array = np.asarray(values)
    if array.dtype != bool or array.ndim != 1:
        raise LesionError(
            f"{name}: expected a 1-D boolean array (N,), got dtype {array.dtype} shape {array.shape}"
        )
    return array
