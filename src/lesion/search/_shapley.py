"""`shapley`: Shapley values of units (or groups of units) from chains of cumulative lesions, kept in a run.

One sampled order of the players is one chain of lesions — the first player, the first two, ... all
of them. When the players are units of one layer, the chains of a chunk of orders are evaluated
together after that layer (:mod:`lesion.search._coalitions`); otherwise they go to the engine in one
call, a set reached by several chains (whatever the order) evaluated once, keyed by its lesion key.
The run directory holds, per sample, the intact network, every player alone, all players and the
chosen pairs (through :func:`lesion.sweep`), and per coalition of the chains its top-1 correct counts
per class (and loss) — with ``sampling="per-sample"`` (one order per sample) each draw's values —
committed once per chunk with nothing else: a rerun with the same seed reuses them and continues the
sequence of orders until the budget or the target standard error is reached. The estimator is in
:mod:`lesion.stats._shapley`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lesion._errors import LesionError, check_int, closest
from lesion._lesion import INTACT, METHODS, Lesion, lesioned, unit_means
from lesion._progress import progress_bar
from lesion._sweep import sweep
from lesion._units import SelectionLike, layers, select
from lesion.data import Split
from lesion.engine import EngineOptions, check_model_device, eval_mode, evaluate, model_device
from lesion.engine._options import engine_options
from lesion.plans import Plan
from lesion.search._coalitions import LayerCoalitions
from lesion.stats._shapley import (
    MAX_EXACT_PLAYERS,
    chain_contributions,
    exact_interaction,
    exact_shapley,
    group_size,
    interaction_sets,
    mean_and_se,
    permutation_orders,
    sample_orders,
)
from lesion.store import RunDB

GROUPINGS = ("unit", "layer")
#: Permutations evaluated per engine call (and committed together) between two checks of the standard errors.
CHUNK = 20
#: Bytes of one chunk's per-sample orders (and positions) at most: fewer draws per chunk on large splits or layers.
DRAW_BYTES = 256 * 2**20


@dataclass(frozen=True)
class ShapleyResult:
    """Shapley values of a run (see :func:`shapley`).

    Attributes
    ----------
    players : list of str
        Each player's lesion key (``fc1:3``, or ``fc1:0-19`` for a whole layer).
    values : DataFrame
        One row per player × metric: player, class (-1: overall), class_name, metric (``top1`` or
        ``loss``), value (Shapley value: the metric's average decrease when the player is lesioned),
        se (its standard error; 0 when exact), single (leave-one-out: intact minus the player alone
        lesioned).
    interactions : DataFrame
        One row per chosen pair × metric: player_a, player_b, class, class_name, metric, value (Shapley
        interaction index; positive: synergy, negative: redundancy), se, pair (the pair's own synergy,
        ``m(∅) - m(a) - m(b) + m(ab)``: the index's first term).
    permutations : int
        Orders sampled (0 when exact).
    exact : bool
        Every coalition enumerated.
    run : Path
    """

    players: list[str]
    values: pd.DataFrame
    interactions: pd.DataFrame
    permutations: int
    exact: bool
    run: Path

    def table(self, metric: str = "top1", class_: int = -1) -> pd.DataFrame:
        """One row per player for one metric and class, largest value first."""
        rows = self.values[(self.values["metric"] == metric) & (self.values["class"] == class_)]
        return rows.sort_values("value", ascending=False).reset_index(drop=True)


def players_of(model: nn.Module, selection: SelectionLike, group: str = "unit", method: str = "zero") -> list[Lesion]:
    """The players: every selected unit (``group="unit"``) or every selected layer as one (``"layer"``).

    >>> from lesion.testing import toy_network
    >>> [p.key for p in players_of(toy_network(), "hidden:1-2;out", group="layer")]
    ['hidden:1-2', 'out:0-3']
    """
    if group not in GROUPINGS:
        raise LesionError(f"group must be one of {GROUPINGS}, got {group!r}{closest(group, GROUPINGS)}")
    if method not in METHODS:
        raise LesionError(f"method must be one of {METHODS}, got {method!r}{closest(method, METHODS)}")
    chosen = select(layers(model), selection)
    if group == "layer":
        return [Lesion(((name, units),), method) for name, units in chosen.items()]
    return [Lesion(((name, (u,)),), method) for name, units in chosen.items() for u in units]


def coalition(players: Sequence[Lesion], members: Sequence[int]) -> Lesion:
    """The lesion of the players at ``members`` together (INTACT for none); layers in player order."""
    if len(members) == 0:
        return INTACT
    merged: dict[str, set[int]] = {}
    for index in sorted(members):
        for name, units in players[index].units:
            merged.setdefault(name, set()).update(units)
    return Lesion(tuple((name, tuple(units)) for name, units in merged.items()), players[0].method)


def shapley(
    model: nn.Module,
    split: Split,
    selection: SelectionLike | Sequence[Lesion],
    out: str | Path,
    *,
    group: str = "unit",
    method: str = "zero",
    permutations: int = 100,
    tolerance: float | None = None,
    min_permutations: int = 10,
    seed: int = 0,
    sampling: str = "plain",
    exact: bool = False,
    pairs: Sequence[tuple[str, str]] = (),
    loss: bool = False,
    model_name: str = "custom",
    options: EngineOptions | None = None,
    means: Mapping[str, Tensor] | None = None,
    progress: bool = False,
) -> ShapleyResult:
    """Shapley values of the selected units for overall and per-class top-1 accuracy (and the loss).

    Parameters
    ----------
    model : nn.Module
        Never modified.
    split : Split
        The evaluation split.
    selection : str, mapping or sequence of Lesion
        The players: a unit selection (``"fc1"``, ``"fc1:0-9;fc2"``), grouped by ``group``, or the
        players' lesions themselves (e.g. whole heads).
    out : path
        Run directory (rerun into it to add permutations; the seed, players and method must match).
    group : {"unit", "layer"}, default="unit"
        One player per unit, or one per layer of the selection.
    method : {"zero", "mean"}, default="zero"
    permutations : int, default=100
        Budget: at most this many orders in all (resumed ones included).
    tolerance : float, optional
        Stop as soon as every player's standard error of overall top-1 (and of the loss, when
        computed) is below this, after at least ``min_permutations`` orders.
    min_permutations : int, default=10
        Orders before ``tolerance`` may stop the sampling (at least two draws).
    seed : int, default=0
        Draw ``g`` (one order, or an antithetic pair) comes from ``numpy.random.default_rng([seed, g])``.
    sampling : {"plain", "antithetic", "per-sample"}, default="plain"
        How orders are drawn: independently, or as an order and its reverse (standard errors then from
        the pair means; ``permutations`` is rounded up to an even number), or one order per sample in
        each draw (``permutations`` then counts draws; each costs about one shared order's chain and
        varies far less, since the samples' orders are independent; players must be units of one layer
        the fast path cuts after, and ``pairs`` are not estimated).
    exact : bool, default=False
        Enumerate all ``2**n`` coalitions (n <= 16) instead of sampling: exact values, se 0.
    pairs : sequence of (player key, player key)
        Pairs whose Shapley interaction index is estimated (exactly with ``exact``).
    loss : bool, default=False
        Also the mean cross-entropy; the run stores top-k predictions only, so the loss of every
        coalition is computed by a full forward pass (the reference path) and kept in the run.
    options : EngineOptions, optional
        Engine settings (device, batch size, memory, autocast...). When every player is units of one
        layer, the chains' coalitions are evaluated many per pass after that layer
        (:mod:`lesion.search._coalitions`); else, or with ``engine="reference"``, by :func:`lesion.evaluate`.
    model_name, means, progress
        As for :func:`lesion.sweep`.

    Returns
    -------
    ShapleyResult
    """
    players = as_players(model, selection, group, method)
    n = len(players)
    if n < 2:
        raise LesionError(f"selection: a Shapley analysis needs at least 2 players, got {n}")
    if len({p.method for p in players}) != 1:
        raise LesionError("selection: every player must use the same lesion method")
    keys = [p.key for p in players]
    owners: dict[tuple[str, int], str] = {}
    for player in players:
        for name, units in player.units:
            for u in units:
                if (name, u) in owners:
                    raise LesionError(f"selection: players must not share units; {name}:{u} is in {owners[name, u]!r} and {player.key!r}")
                owners[name, u] = player.key
    check_int("permutations", permutations, 1)
    check_int("min_permutations", min_permutations, 2)
    check_int("seed", seed, 0)
    if tolerance is not None and not tolerance > 0:
        raise LesionError(f"tolerance: expected a standard error > 0, got {tolerance!r}")
    if exact and n > MAX_EXACT_PLAYERS:
        raise LesionError(f"exact: enumerates 2**n coalitions, allowed for n <= {MAX_EXACT_PLAYERS} players, got {n}; sample instead")
    pair_index = [_pair(keys, a, b) for a, b in pairs]
    draw = group_size(sampling)
    if sampling == "per-sample" and pair_index and not exact:
        raise LesionError("pairs: not estimated with sampling='per-sample' (each sample has its own orders); use plain or antithetic")
    permutations = -(-permutations // draw) * draw
    min_permutations = max(min_permutations, 2 * draw)
    options = engine_options(options)
    check_model_device(model, options)
    if players[0].method == "mean" and means is None:
        names = sorted({name for p in players for name in p.layers})
        with eval_mode(model):
            means = unit_means(model, names, split.batches(options.batch_size))
    identity = {"players": keys, "exact": exact} if exact else {"players": keys, "seed": seed, "sampling": sampling}
    sweep_options = dict(model_name=model_name, config={"shapley": identity}, k=1, progress=progress, options=options, means=means)
    game = _Game(model, split, players, Path(out), loss, options, means, progress)
    if sampling == "per-sample" and not exact and game.together is None:
        raise LesionError(
            "sampling: 'per-sample' evaluates each sample along its own orders, which needs players that are units of one "
            "layer the fast engine can cut after (not engine='reference'); use plain or antithetic"
        )
    singles = [coalition(players, [i]) for i in range(n)] + [coalition(players, range(n))]
    game.anchor(singles + [coalition(players, ij) for ij in pair_index], sweep_options)

    if exact:
        return _exact(game, keys, pair_index)
    if sampling == "per-sample":
        return _per_sample(game, keys, permutations, tolerance, min_permutations, seed)
    done = 0
    while done < permutations:
        stop = min(done + -(-CHUNK // draw) * draw, permutations)
        orders = permutation_orders(n, done, stop, seed, sampling)
        wanted: list[Sequence[int]] = []
        for i, j in pair_index:
            for q in interaction_sets(orders, i, j):
                wanted += [q, (*q, i), (*q, j), (*q, i, j)]
        game.play([members for members in wanted if members], orders)
        done = stop
        result = _sampled(game, keys, pair_index, done, seed, sampling)
        if tolerance is not None and done >= min_permutations:
            target = result.values[(result.values["class"] == -1)]
            if (target["se"] < tolerance).all():
                break
    game.record(done, tolerance, permutations)
    return result


def as_players(model: nn.Module, selection: SelectionLike | Sequence[Lesion], group: str, method: str) -> list[Lesion]:
    """``selection`` itself when it is a sequence of lesions, else :func:`players_of` it."""
    if isinstance(selection, Sequence) and not isinstance(selection, str):
        lesions = [item for item in selection if isinstance(item, Lesion)]
        if len(lesions) != len(selection):
            raise LesionError(f"selection: expected a unit selection or a sequence of Lesion, got {selection!r:.120}")
        return lesions
    return players_of(model, selection, group, method)


def _pair(keys: list[str], a: str, b: str) -> tuple[int, int]:
    for key in (a, b):
        if key not in keys:
            raise LesionError(f"pairs: {key!r} is not a player; players are {keys[:8]}{'...' if len(keys) > 8 else ''}{closest(key, keys)}")
    if a == b:
        raise LesionError(f"pairs: expected two different players, got {a!r} twice")
    return keys.index(a), keys.index(b)


class _Game:
    """The metrics of coalitions, by lesion key: correct top-1 counts (overall, then per class) and the loss.

    The intact network, the single players, all players and the chosen pairs go through
    :func:`lesion.sweep` (per-sample outcomes kept in the run); the coalitions of the chains many per
    pass through :class:`~lesion.search._coalitions.LayerCoalitions` where the players are units of one
    layer, else through :func:`lesion.evaluate` at top-1; their counts are committed to the run's meta
    once per chunk.
    """

    def __init__(self, model: nn.Module, split: Split, players: list[Lesion], out: Path, loss: bool,
                 options: EngineOptions, means: Mapping[str, Tensor] | None, progress: bool) -> None:
        self.model, self.split, self.players, self.out, self.loss = model, split, players, out, loss
        self.options, self.means, self.progress = options, means, progress
        self.labels = split.labels.numpy()
        self.sizes = np.array([len(self.labels), *np.bincount(self.labels, minlength=split.n_classes)], dtype=np.float64)
        self.counts: dict[str, np.ndarray] = {}
        self.keys: dict[tuple[int, ...], str] = {}
        self.together = LayerCoalitions.plan(model, split, players, options, means)

    def key(self, members: Sequence[int]) -> str:
        """The lesion key of the coalition of the players at ``members`` (remembered)."""
        index = tuple(sorted(int(m) for m in members))
        if index not in self.keys:
            self.keys[index] = coalition(self.players, index).key
        return self.keys[index]

    def anchor(self, lesions: list[Lesion], sweep_options: dict[str, Any]) -> None:
        """Sweep ``lesions`` and the intact network into the run (creating it), then load the stored chains."""
        unique = tuple({les.key: les for les in lesions}.values())
        run = sweep(self.model, self.split, Plan("shapley-singles", unique, {"selector": "shapley"}), self.out, **sweep_options)
        try:
            for les in [INTACT, *unique]:
                self.counts[les.key] = self._vector(les, run.correct(les.key)[0])
        finally:
            run.close()
        self.counts.update(self._chunks("shapley:chunks"))

    def play(self, coalitions: list[Sequence[int]], orders: np.ndarray | None = None) -> None:
        """Evaluate the coalitions (each the indices of its lesioned players) and the proper prefixes of
        the ``orders`` (P, n) not yet known; commit their counts as one chunk."""
        new: dict[str, np.ndarray] = {}
        if orders is not None and self.together is not None:
            new.update(self._chains(orders))
        elif orders is not None:
            coalitions = [tuple(order[:j]) for order in orders for j in range(1, len(order))] + list(coalitions)
        todo: dict[str, tuple[Lesion, Sequence[int]]] = {}
        for members in coalitions:
            key = self.key(members)
            if key not in self.counts and key not in new and key not in todo:
                todo[key] = (coalition(self.players, members), members)
        if todo:
            new.update(self._together(list(todo.values())) if self.together is not None else self._one_by_one([les for les, _ in todo.values()]))
        if not new:
            return
        self._append_chunk("shapley:chunks", "shapley:chunk", new)
        self.counts.update(new)

    def _chains(self, orders: np.ndarray) -> dict[str, np.ndarray]:
        """The metrics of the proper prefixes of the orders that hold one not yet known, by lesion key."""
        keys = [[self.key(order[:j]) for j in range(1, len(order))] for order in orders]
        todo = [row for row, chain in enumerate(keys) if any(key not in self.counts for key in chain)]
        if not todo:
            return {}
        counts, losses = self.together.evaluate_chains(orders[todo], self.loss)  # type: ignore[union-attr]
        new = {}
        for p, row in enumerate(todo):
            for j, key in enumerate(keys[row]):
                if key not in self.counts:
                    new[key] = self._counted(counts[p, j], None if losses is None else losses[p, j])
        return new

    def _counted(self, counts: np.ndarray, loss: float | None) -> np.ndarray:
        """The metric vector from per-class correct counts (and the summed loss)."""
        return np.array([counts.sum(), *counts, *([loss / len(self.labels)] if loss is not None else [])])

    def _together(self, todo: list[tuple[Lesion, Sequence[int]]]) -> dict[str, np.ndarray]:
        members = np.zeros((len(todo), len(self.players)), dtype=bool)
        for row, (_, indices) in enumerate(todo):
            members[row, list(indices)] = True
        counts, losses = self.together.evaluate(members, self.loss)  # type: ignore[union-attr]
        return {lesion.key: self._counted(counts[row], None if losses is None else losses[row]) for row, (lesion, _) in enumerate(todo)}

    def _one_by_one(self, todo: list[Lesion]) -> dict[str, np.ndarray]:
        new = {}
        with progress_bar(len(todo), "coalitions", enabled=self.progress) as advance:
            for outcome in evaluate(self.model, self.split, todo, k=1, options=self.options, means=self.means):
                new[outcome.lesion.key] = self._vector(outcome.lesion, outcome.topk[:, 0] == self.labels)
                advance(1)
        return new

    def _vector(self, lesion: Lesion, correct: np.ndarray) -> np.ndarray:
        per_class = np.bincount(self.labels, weights=correct.astype(np.float64), minlength=self.split.n_classes)
        vector = [float(correct.sum()), *per_class]
        if self.loss:
            vector.append(cross_entropy(self.model, self.split, lesion, self.options.batch_size, self.means))
        return np.array(vector)

    def value(self, members: Sequence[int]) -> np.ndarray:
        """Overall top-1, top-1 per class (and the loss) with the players at ``members`` lesioned."""
        counts = self.counts[self.key(members)]
        n = len(self.sizes)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.concatenate([counts[:n] / self.sizes, counts[n:]])

    def columns(self) -> list[tuple[int, str, str]]:
        """(class, class_name, metric) of each metric column."""
        cols = [(-1, "all", "top1"), *[(c, name, "top1") for c, name in enumerate(self.split.class_names)]]
        return [*cols, (-1, "all", "loss")] if self.loss else cols

    def stored_draws(self) -> dict[int, np.ndarray]:
        """The per-sample draws already in the run: draw index -> values (n, M)."""
        return {int(g): values for g, values in self._chunks("shapley:draw-chunks").items()}

    def store_draws(self, draws: dict[int, np.ndarray]) -> None:
        """Commit per-sample draws (draw index -> values (n, M)) to the run as one chunk."""
        self._append_chunk("shapley:draw-chunks", "shapley:draws", {str(g): v for g, v in draws.items()})

    def _chunks(self, index: str) -> dict[str, np.ndarray]:
        """Every entry of the chunks listed under the meta key ``index``: name -> array."""
        db = RunDB(self.out)
        try:
            found = {}
            for name in db.get_meta(index) or []:
                found.update({key: np.asarray(v, dtype=np.float64) for key, v in db.get_meta(name).items()})
            return found
        finally:
            db.close()

    def _append_chunk(self, index: str, prefix: str, entries: Mapping[str, np.ndarray]) -> None:
        """Commit ``entries`` as the next chunk ``prefix:i`` of the list under the meta key ``index``, in one transaction."""
        db = RunDB(self.out)
        try:
            names = db.get_meta(index) or []
            name = f"{prefix}:{len(names)}"
            with db.transaction() as con:
                db.set_meta(con, name, {key: v.tolist() for key, v in entries.items()})
                db.set_meta(con, index, [*names, name])
        finally:
            db.close()

    def record(self, done: int, tolerance: float | None, budget: int) -> None:
        """Commit how many orders (or draws) are done and the stopping rule of the call that did them."""
        db = RunDB(self.out)
        try:
            with db.transaction() as con:
                db.set_meta(con, "shapley:permutations", done)
                db.set_meta(con, "shapley:stopping", {"tolerance": tolerance, "budget": budget})
        finally:
            db.close()


def cross_entropy(
    model: nn.Module, split: Split, lesion: Lesion, batch_size: int = 256, means: Mapping[str, Tensor] | None = None
) -> float:
    """Mean cross-entropy of ``model`` with ``lesion`` applied over ``split`` (one full forward per batch)."""
    total = 0.0
    device = model_device(model)
    with eval_mode(model), torch.inference_mode(), lesioned(model, lesion, means):
        for x, y in split.batches(batch_size):
            logits = model(x.to(device)).double()
            total += float(F.cross_entropy(logits, y.to(device), reduction="sum"))
    return total / len(split)


def _tidy(game: _Game, keys: list[str], values: np.ndarray, se: np.ndarray, single: np.ndarray) -> pd.DataFrame:
    rows = [
        (keys[i], c, name, metric, values[i, m], se[i, m], single[i, m])
        for i in range(len(keys))
        for m, (c, name, metric) in enumerate(game.columns())
    ]
    return pd.DataFrame(rows, columns=["player", "class", "class_name", "metric", "value", "se", "single"])


def _interactions(game: _Game, keys: list[str], pair_index: list[tuple[int, int]], values: list[np.ndarray], ses: list[np.ndarray]) -> pd.DataFrame:
    rows = []
    for (i, j), value, se in zip(pair_index, values, ses, strict=True):
        pair = game.value([]) - game.value([i]) - game.value([j]) + game.value([i, j])
        for m, (c, name, metric) in enumerate(game.columns()):
            rows.append((keys[i], keys[j], c, name, metric, value[m], se[m], pair[m]))
    return pd.DataFrame(rows, columns=["player_a", "player_b", "class", "class_name", "metric", "value", "se", "pair"])


def _singles(game: _Game, n: int) -> np.ndarray:
    return np.stack([game.value([]) - game.value([i]) for i in range(n)])


def _exact(game: _Game, keys: list[str], pair_index: list[tuple[int, int]]) -> ShapleyResult:
    n = len(keys)
    subsets = [[i for i in range(n) if mask >> i & 1] for mask in range(2**n)]
    game.play([s for s in subsets if s])
    table = np.stack([game.value(s) for s in subsets])
    values = exact_shapley(table)
    inter = [exact_interaction(table, i, j) for i, j in pair_index]
    zeros = np.zeros_like(values)
    return ShapleyResult(
        keys, _tidy(game, keys, values, zeros, _singles(game, n)),
        _interactions(game, keys, pair_index, inter, [np.zeros_like(v) for v in inter]), 0, True, game.out,
    )


def _per_sample(game: _Game, keys: list[str], permutations: int, tolerance: float | None, minimum: int, seed: int) -> ShapleyResult:
    """Sampling with one order per sample in each draw; each draw's values (n, M) are kept in the run."""
    n, labels = len(keys), game.labels
    draws = game.stored_draws()
    chunk = max(1, min(CHUNK, DRAW_BYTES // (8 * len(labels) * (n + 1))))  # the draws' orders and chains in memory
    done = 0
    while done < permutations:
        stop = min(done + chunk, permutations)
        todo = [g for g in range(done, stop) if g not in draws]
        if todo:
            orders = sample_orders(n, len(labels), todo, seed)
            correct, losses = game.together.sample_chains(orders, game.loss)  # type: ignore[union-attr]
            new = {g: _draw_values(game, orders[d], correct[d], None if losses is None else losses[d]) for d, g in enumerate(todo)}
            game.store_draws(new)
            draws.update(new)
        done = stop
        values, se = mean_and_se(np.stack([draws[g] for g in range(done)]))
        if tolerance is not None and done >= minimum and (se[:, [0, *([-1] if game.loss else [])]] < tolerance).all():
            break
    game.record(done, tolerance, permutations)
    return ShapleyResult(keys, _tidy(game, keys, values, se, _singles(game, n)), _interactions(game, keys, [], [], []), done, False, game.out)


def _draw_values(game: _Game, orders: np.ndarray, correct: np.ndarray, losses: np.ndarray | None) -> np.ndarray:
    """One draw's Shapley estimates (n, M), M as :meth:`_Game.columns`, from each sample's chain:
    ``orders`` (N, n), ``correct`` and ``losses`` (N, n+1)."""
    chain = correct.astype(np.float64)[..., None]
    if losses is not None:
        chain = np.concatenate([chain, losses[..., None]], axis=2)
    contributions = chain_contributions(orders, chain)  # (N, n, 1 or 2)
    columns = [contributions[..., 0].mean(0)]
    for c in range(game.split.n_classes):
        mine = contributions[game.labels == c, :, 0]
        columns.append(mine.mean(0) if len(mine) else np.full(orders.shape[1], np.nan))
    if losses is not None:
        columns.append(contributions[..., 1].mean(0))
    return np.stack(columns, axis=1)


def _sampled(game: _Game, keys: list[str], pair_index: list[tuple[int, int]], done: int, seed: int, sampling: str) -> ShapleyResult:
    n = len(keys)
    draw = group_size(sampling)
    orders = permutation_orders(n, 0, done, seed, sampling)
    chain = np.stack([np.stack([game.value(order[:j]) for j in range(n + 1)]) for order in orders])
    values, se = mean_and_se(chain_contributions(orders, chain), draw)
    inter_values, inter_se = [], []
    for i, j in pair_index:
        deltas = [
            game.value(q) - game.value([*q, i]) - game.value([*q, j]) + game.value([*q, i, j])
            for q in interaction_sets(orders, i, j)
        ]
        mean, err = mean_and_se(np.stack(deltas), draw)
        inter_values.append(mean)
        inter_se.append(err)
    return ShapleyResult(
        keys, _tidy(game, keys, values, se, _singles(game, n)),
        _interactions(game, keys, pair_index, inter_values, inter_se), done, False, game.out,
    )


__all__ = ["GROUPINGS", "ShapleyResult", "coalition", "cross_entropy", "players_of", "shapley"]
