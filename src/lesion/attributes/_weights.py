"""Unit attributes from incoming weights: norms, and change from initialisation."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from lesion._errors import LesionError, check_int, closest
from lesion.attributes._arrays import per_unit

INIT_DISTRIBUTIONS = ("kaiming_uniform",)
"""Reference distributions `mann_whitney_vs_init_distribution` can draw from."""

SNAPSHOT = "initial snapshot"
"""The ``reference`` value of rows compared with recorded initial weights."""


def weight_norms(weight: ArrayLike) -> pd.DataFrame:
    """L1 and L2 norms of each unit's incoming weights.

    Parameters
    ----------
    weight : array_like or torch.Tensor, shape (n_units, fan_in) or (C_out, C_in, *kernel)
        A layer's weight; a conv filter's weights are flattened per output channel.

    Returns
    -------
    pandas.DataFrame
        Columns ``unit`` (0 .. n_units-1), ``l1``, ``l2``.
    """
    w = per_unit("weight", weight)
    return pd.DataFrame(
        {
            "unit": np.arange(w.shape[0]),
            "l1": np.abs(w).sum(axis=1),
            "l2": np.sqrt((w**2).sum(axis=1)),
        }
    )


def mann_whitney(initial: ArrayLike, trained: ArrayLike) -> pd.DataFrame:
    """Per unit, the Mann-Whitney U test between its incoming weights at init and after training.

    Meyes et al. (2019), Section 4.1: the more a unit's weight distribution moved away
    from its initial one (small p), the more its lesion tends to cost. The test is
    ``scipy.stats.mannwhitneyu(trained[u], initial[u], alternative="two-sided")``, so it
    detects a shift of location (one distribution tending to lie above the other); a
    distribution that only widens symmetrically around 0 gives a large p.

    Parameters
    ----------
    initial, trained : array_like or torch.Tensor, same shape (n_units, fan_in) or (C_out, C_in, *kernel)
        The layer's weight before and after training.

    Returns
    -------
    pandas.DataFrame
        One row per unit with columns

        - ``unit``: 0 .. n_units-1
        - ``U``: the U statistic of the trained weights, the number of (trained, initial)
          weight pairs with trained > initial, ties counting 1/2
        - ``p``: the two-sided p-value
        - ``cles``: common-language effect size ``U / (n1 * n2)`` = P(trained > initial)
          + P(tie)/2, in [0, 1]; 0.5 is no shift
        - ``rank_biserial``: ``2 * cles - 1`` = P(trained > initial) - P(trained < initial),
          in [-1, 1]; 0 is no shift. (Equal to ``1 - 2 U' / (n1 n2)`` with U' the initial
          weights' statistic.)
        - ``reference``: ``"initial snapshot"``
    """
    before = per_unit("initial", initial)
    after = per_unit("trained", trained)
    if before.shape != after.shape:
        raise LesionError(
            f"initial, trained: expected weights of the same shape, got {before.shape} and {after.shape} "
            "(after flattening each unit's incoming weights)"
        )
    return _compare(before, after, SNAPSHOT)


def mann_whitney_vs_init_distribution(
    trained: ArrayLike,
    init: str = "kaiming_uniform",
    fan_in: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """`mann_whitney` against a fresh draw from PyTorch's default initialisation.

    For networks whose initial weights were not recorded. ``nn.Linear`` and ``nn.Conv*d``
    initialise their weights with ``kaiming_uniform_(a=sqrt(5))``, which is exactly
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)); a sample of the trained weight's shape is drawn
    from it with ``numpy.random.default_rng(seed)`` and each unit is compared with its own
    row of that sample.

    Parameters
    ----------
    trained : array_like or torch.Tensor, shape (n_units, fan_in) or (C_out, C_in, *kernel)
        The trained layer weight.
    init : str, default="kaiming_uniform"
        The reference distribution; one of `INIT_DISTRIBUTIONS`.
    fan_in : int, optional
        Fan-in the layer was initialised with; by default the number of incoming weights
        per unit (``C_in * prod(kernel)``), which is PyTorch's fan-in.
    seed : int, default=0
        Seed of the reference draw.

    Returns
    -------
    pandas.DataFrame
        As `mann_whitney`, with ``reference`` naming the distribution, fan-in and seed,
        e.g. ``"init distribution (uniform ±1/sqrt(784), seed 0)"``.
    """
    if init not in INIT_DISTRIBUTIONS:
        raise LesionError(
            f"init: expected one of {list(INIT_DISTRIBUTIONS)}, got {init!r}{closest(init, INIT_DISTRIBUTIONS)}"
        )
    after = per_unit("trained", trained)
    fan_in = after.shape[1] if fan_in is None else check_int("fan_in", fan_in, 1)
    bound = 1.0 / np.sqrt(fan_in)
    reference = np.random.default_rng(seed).uniform(-bound, bound, size=after.shape)
    label = f"init distribution (uniform ±1/sqrt({fan_in}), seed {seed})"
    return _compare(reference, after, label)


def _compare(
    before: NDArray[np.float64], after: NDArray[np.float64], reference: str
) -> pd.DataFrame:
    result = stats.mannwhitneyu(after, before, alternative="two-sided", axis=1)
    pairs = after.shape[1] * before.shape[1]
    cles = result.statistic / pairs
    return pd.DataFrame(
        {
            "unit": np.arange(after.shape[0]),
            "U": result.statistic,
            "p": result.pvalue,
            "cles": cles,
            "rank_biserial": 2.0 * cles - 1.0,
            "reference": reference,
        }
    )
