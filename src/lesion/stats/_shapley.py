"""Shapley values and pair interaction indices of lesion games, exact and from sampled permutations.

The game: ``m(L)`` is a metric (accuracy, loss, ...) of the network with the set ``L`` of players
(units or groups of units) lesioned. A player's Shapley value is its average marginal effect over
all orders in which players are lesioned,

    phi_i = E_pi[ m(L_pi,i) - m(L_pi,i ∪ {i}) ],

``L_pi,i`` the players lesioned before ``i`` in the uniformly random order ``pi``: how much the metric
goes *down* when ``i`` is lesioned (positive for a unit that helps accuracy, negative for one that
keeps the loss low). This equals the Shapley value of the "intact coalition" game of Keinan et al.
(2004), ``v(S) = m(N minus S)``. The values add up to ``m(nothing lesioned) - m(everything lesioned)``.

The pair interaction index (Grabisch & Roubens 1999) in the same convention,

    I_ij = E_Q[ m(Q) - m(Q ∪ i) - m(Q ∪ j) + m(Q ∪ {i, j}) ],

Q the players other than i, j lesioned before i in a uniformly random order: positive when the pair
acts in synergy (each is needed only with the other), negative when the two are redundant (either
suffices). Pure numpy; nothing here runs a model.
"""

from __future__ import annotations

from math import factorial

import numpy as np
from numpy.typing import NDArray

from lesion._errors import LesionError

#: Largest number of players whose 2**n coalitions :func:`exact_shapley` enumerates.
MAX_EXACT_PLAYERS = 16


#: How orders are drawn: independently, in pairs of an order and its reverse, or one order per sample.
SAMPLINGS = ("plain", "antithetic", "per-sample")


def group_size(sampling: str) -> int:
    """Orders per independent draw: 1 (plain, per-sample) or 2 (antithetic)."""
    if sampling not in SAMPLINGS:
        raise LesionError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    return 2 if sampling == "antithetic" else 1


def sample_orders(n_players: int, n_samples: int, draws: list[int], seed: int) -> NDArray[np.int64]:
    """One lesion order per sample for each draw in ``draws``, shape (len(draws), n_samples, n_players).

    Draw ``g`` permutes 0..n-1 independently for every sample with ``numpy.random.default_rng([seed, g])``
    (reproducible draw by draw, so a resumed run continues the sequence). A metric that is a mean over
    samples has Shapley values that are the means of the samples' own: one order per sample estimates
    them without bias, and its draws vary far less than one order shared by every sample.
    """
    base = np.tile(np.arange(n_players), (n_samples, 1))
    return np.stack([np.random.default_rng([seed, g]).permuted(base, axis=1) for g in draws]).astype(np.int64)


def permutation_orders(n_players: int, start: int, stop: int, seed: int, sampling: str = "plain") -> NDArray[np.int64]:
    """Lesion orders ``start .. stop-1`` of a reproducible sequence, shape (stop - start, n_players).

    Draw ``g`` (one order, or with ``antithetic`` an order and its reverse) starts from
    ``numpy.random.default_rng([seed, g]).permutation(n_players)``, so any slice of the sequence is the
    same whichever slices were drawn before (a resumed run continues it).

    (Blocks of the n cyclic shifts of an order — every player once at every position — were tried on
    the 2019 MLP: their draws vary so much that the standard error doubled; they are not offered.)
    """
    if n_players < 1:
        raise LesionError(f"n_players must be >= 1, got {n_players}")
    if not 0 <= start <= stop:
        raise LesionError(f"permutation range must satisfy 0 <= start <= stop, got {start}..{stop}")
    size = group_size(sampling)
    rows = []
    for p in range(start, stop):
        base = np.random.default_rng([seed, p // size]).permutation(n_players)
        rows.append(base[::-1] if size == 2 and p % 2 else base)
    return np.asarray(rows, dtype=np.int64).reshape(stop - start, n_players)


def chain_contributions(orders: NDArray[np.integer], chain: NDArray[np.floating]) -> NDArray[np.float64]:
    """Each player's marginal contribution in each order.

    Parameters
    ----------
    orders : int array (P, n)
        Lesion orders (each a permutation of 0..n-1).
    chain : float array (P, n + 1, M)
        ``chain[p, j]``: the M metrics with the first ``j`` players of ``orders[p]`` lesioned
        (``chain[p, 0]`` the intact network, ``chain[p, n]`` all players lesioned).

    Returns
    -------
    float array (P, n, M): ``out[p, i] = chain[p, j] - chain[p, j + 1]`` where ``orders[p, j] == i``.
    """
    orders = np.asarray(orders)
    chain = np.asarray(chain, dtype=np.float64)
    n_perm, n = orders.shape
    if chain.shape[:2] != (n_perm, n + 1):
        raise LesionError(f"chain must have shape ({n_perm}, {n + 1}, M) for orders of shape {orders.shape}, got {chain.shape}")
    steps = chain[:, :-1] - chain[:, 1:]
    out = np.empty_like(steps)
    out[np.arange(n_perm)[:, None], orders] = steps
    return out


def mean_and_se(samples: NDArray[np.floating], group: int = 1) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean over axis 0 and its standard error (std of the draws / sqrt(draws); NaN with fewer than 2 draws).

    Consecutive rows in groups of ``group`` (the two orders of one antithetic draw) are
    first averaged into one sample each: they are dependent, and the draws are the independent samples.
    """
    x = np.asarray(samples, dtype=np.float64)
    if len(x) % group:
        raise LesionError(f"samples come in draws of {group}; got {len(x)}, not a multiple")
    x = x.reshape(len(x) // group, group, *x.shape[1:]).mean(axis=1)
    mean = x.mean(axis=0) if len(x) else np.full(x.shape[1:], np.nan)
    if len(x) < 2:
        return mean, np.full(x.shape[1:], np.nan)
    return mean, x.std(axis=0, ddof=1) / np.sqrt(len(x))


def _popcount(masks: NDArray[np.int64]) -> NDArray[np.int64]:
    counts = np.zeros_like(masks)
    rest = masks.copy()
    while rest.any():
        counts += rest & 1
        rest >>= 1
    return counts


def _check_table(raw: NDArray[np.floating]) -> tuple[NDArray[np.float64], int]:
    table: NDArray[np.float64] = np.asarray(raw, dtype=np.float64)
    n = round(float(np.log2(len(table)))) if len(table) else -1
    if n < 1 or len(table) != 2**n:
        raise LesionError(f"table must have 2**n rows (one per coalition bitmask), got {len(table)}")
    if n > MAX_EXACT_PLAYERS:
        raise LesionError(f"exact enumeration supports at most {MAX_EXACT_PLAYERS} players, got {n}")
    return table.reshape(len(table), -1), n


def exact_shapley(table: NDArray[np.floating]) -> NDArray[np.float64]:
    """Exact Shapley values from the metric of every coalition.

    Parameters
    ----------
    table : float array (2**n, M)
        ``table[mask]``: the metrics with the players whose bits are set in ``mask`` lesioned.

    Returns
    -------
    float array (n, M): ``phi_i = sum over L not holding i of |L|! (n-|L|-1)! / n! (m(L) - m(L ∪ i))``.
    """
    values, n = _check_table(table)
    masks = np.arange(2**n, dtype=np.int64)
    sizes = _popcount(masks)
    weights = np.array([factorial(s) * factorial(n - s - 1) / factorial(n) for s in range(n)])
    out = np.empty((n, values.shape[1]))
    for i in range(n):
        without = masks[(masks >> i) & 1 == 0]
        out[i] = (weights[sizes[without]][:, None] * (values[without] - values[without | (1 << i)])).sum(axis=0)
    return out


def exact_interaction(table: NDArray[np.floating], i: int, j: int) -> NDArray[np.float64]:
    """Exact pair interaction index of players ``i`` and ``j`` (see the module docstring), shape (M,).

    ``table`` as in :func:`exact_shapley`; weights ``|Q|! (n-|Q|-2)! / (n-1)!`` over Q not holding i, j.
    """
    values, n = _check_table(table)
    if i == j or not (0 <= i < n and 0 <= j < n):
        raise LesionError(f"interaction needs two different players in 0..{n - 1}, got {i} and {j}")
    masks = np.arange(2**n, dtype=np.int64)
    q = masks[((masks >> i) & 1 == 0) & ((masks >> j) & 1 == 0)]
    sizes = _popcount(q)
    weights = np.array([factorial(s) * factorial(n - s - 2) / factorial(n - 1) for s in range(max(n - 1, 1))])
    bi, bj = 1 << i, 1 << j
    delta = values[q] - values[q | bi] - values[q | bj] + values[q | bi | bj]
    return (weights[sizes][:, None] * delta).sum(axis=0)


def interaction_sets(orders: NDArray[np.integer], i: int, j: int) -> list[tuple[int, ...]]:
    """For each order, the players lesioned before ``i`` other than ``j`` (the Q of the module docstring), sorted."""
    out = []
    for order in np.asarray(orders):
        before = order[: int(np.flatnonzero(order == i)[0])]
        out.append(tuple(sorted(int(p) for p in before if p != j)))
    return out
