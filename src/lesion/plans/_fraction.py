"""The `fraction` selector: lesion a proportion of a layer's units, as groups of similar filters,
random draws, or the units ranked lowest (highest) by an attribute.

A proportion ``p`` of a layer of ``n`` units is ``max(1, round(p·n))`` units, rounding halves up
(25 % of 10 units is 3). Groups that come out identical — two references with the same
nearest neighbours, two random draws alike, two fractions that round to the same size — are one
lesion of the plan (a plan's lesions are distinct); ``plan.info["members"][key]`` lists every
``[layer, fraction, index]`` that produced it, so averages over references or draws can weight
each lesion by ``len(members[key])``.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from lesion._errors import LesionError, check_int, closest
from lesion._lesion import Lesion
from lesion._units import Layer, layers
from lesion.plans._plan import Plan, _check_method

SELECTORS = ("similar", "random", "ranked")


def fraction(
    model: nn.Module,
    layer_names: str | Sequence[str],
    fractions: float | Sequence[float],
    selector: str,
    *,
    seed: int = 0,
    draws: int = 100,
    attribute: Mapping[str, Any] | None = None,
    highest: bool = False,
    method: str = "zero",
    name: str | None = None,
) -> Plan:
    """Lesions of a proportion of each layer's units.

    Parameters
    ----------
    model : nn.Module
    layer_names : str or sequence of str
        Lesionable layers (``fc1``, ``features.*`` globs allowed), planned in model order.
    fractions : float or sequence of float
        Proportions in (0, 1]; each gives ``max(1, round(p·n))`` units of an ``n``-unit layer.
    selector : {"similar", "random", "ranked"}
        ``similar`` (Meyes et al. 2019, §3.2): every unit in turn is the reference; its group is
        the reference plus its nearest units by Euclidean distance between the units' incoming
        weight vectors (a Linear's row of ``weight`` (out, in), a convolution's filter
        ``weight[c]`` (in, kh, kw) flattened), each normalised to unit L2 norm (the bias is left
        out; an all-zero vector stays zero); ties go to the lower unit index. ``n`` groups per
        layer and fraction before de-duplication.
        ``random``: ``draws`` groups per layer and fraction, each drawn without replacement from
        ``numpy.random.default_rng(seed)`` (one stream: layers in model order, then fractions in
        the given order, then draws); the draws are kept in ``info["draws"]``.
        ``ranked``: the units with the lowest (``highest=True``: highest) ``attribute`` values,
        ties to the lower index; one lesion per layer and fraction.
    seed : int, default=0
        For ``random``.
    draws : int, default=100
        For ``random``: groups drawn per layer and fraction.
    attribute : mapping of layer name -> array of shape (n_units,), optional
        For ``ranked``: one value per unit (e.g. L1 norm, Mann-Whitney p-value, selectivity).
    highest : bool, default=False
        For ``ranked``: lesion the highest-valued units instead of the lowest.
    method : {"zero", "mean"}, default="zero"
    name : str, optional
        Default ``"fraction-<selector>"``.

    Returns
    -------
    Plan
        ``info`` holds ``selector`` ("fraction"), ``by`` (the selector), ``layers``,
        ``fractions``, ``sizes`` (units per layer and fraction), ``seed``, ``n_draws``,
        ``method``, ``members`` (lesion key -> list of ``[layer, fraction, index]``, the index
        being the reference unit, the draw number or 0 for ``ranked``) and, per selector,
        ``normalisation`` (similar), ``draws`` (random: ``[layer, fraction, draw, units]`` rows)
        or ``highest`` and ``order`` (ranked: each layer's units in rank order).

    Examples
    --------
    >>> from lesion.models import meyes2019_mlp
    >>> plan = fraction(meyes2019_mlp(), "fc2", 0.2, "random", draws=3, seed=1)
    >>> len(plan), [len(units) for lesion in plan for _, units in lesion.units]
    (3, [2, 2, 2])
    """
    if selector not in SELECTORS:
        raise LesionError(f"selector must be one of {SELECTORS}, got {selector!r}{closest(str(selector), SELECTORS)}")
    _check_method(method)
    chosen = _layers(model, layer_names)
    props = _fractions(fractions)
    if selector == "random":
        check_int("draws", draws, 1)
        check_int("seed", seed, 0)
    info: dict[str, Any] = {
        "selector": "fraction",
        "by": selector,
        "layers": [layer.name for layer in chosen],
        "fractions": props,
        "sizes": {layer.name: [group_size(p, layer.n_units) for p in props] for layer in chosen},
        "seed": seed,
        "n_draws": draws if selector == "random" else None,
        "method": method,
    }
    if selector == "similar":
        groups = _similar_groups(model, chosen, props)
        info["normalisation"] = "unit L2 norm of each unit's flattened incoming weights"
    elif selector == "random":
        groups = _random_groups(chosen, props, seed, draws)
        info["draws"] = [[layer, p, index, list(units)] for layer, p, index, units in groups]
    else:
        orders = _rank_orders(chosen, attribute, highest)
        groups = [(layer.name, p, 0, orders[layer.name][: group_size(p, layer.n_units)].tolist()) for layer in chosen for p in props]
        info["highest"] = highest
        info["order"] = {name: [int(u) for u in order] for name, order in orders.items()}
    lesions, members = _deduplicate(groups, method)
    info["members"] = members
    return Plan(name or f"fraction-{selector}", lesions, info)


def group_size(p: float, n_units: int) -> int:
    """Units in a proportion ``p`` of ``n_units``: ``max(1, round(p·n))``, halves rounded up.

    >>> [group_size(p, 64) for p in (0.01, 0.05, 0.1, 0.25)]
    [1, 3, 6, 16]
    """
    return max(1, math.floor(p * n_units + 0.5))


def unit_weights(model: nn.Module, layer: str) -> torch.Tensor:
    """Each unit's incoming weights, flattened and normalised to unit L2 norm.

    Returns
    -------
    Tensor of shape (n_units, fan_in), float64: row ``u`` is ``weight[u].flatten()`` divided by its
    L2 norm (an all-zero row stays zero). For a Linear ``weight`` is (out, in); for a
    convolution (out_channels, in_channels, *kernel).
    """
    module = dict(model.named_modules()).get(layer)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise LesionError(f"selector 'similar' needs layers with a weight tensor; layer {layer!r} has none")
    flat = weight.detach().to("cpu", torch.float64).reshape(weight.shape[0], -1)
    norms = flat.norm(dim=1, keepdim=True)
    return torch.where(norms > 0, flat / norms.clamp_min(torch.finfo(torch.float64).tiny), flat)


def _layers(model: nn.Module, layer_names: str | Sequence[str]) -> list[Layer]:
    names = [layer_names] if isinstance(layer_names, str) else list(layer_names)
    if not names:
        raise LesionError("layer_names must name at least one layer, got none")
    known = layers(model)
    for pattern in names:
        if not any(fnmatch.fnmatchcase(layer.name, pattern) for layer in known):
            valid = [layer.name for layer in known]
            raise LesionError(f"unknown layer {pattern!r}; lesionable layers are {valid}{closest(pattern, valid)}")
    return [layer for layer in known if any(fnmatch.fnmatchcase(layer.name, p) for p in names)]


def _fractions(fractions: float | Sequence[float]) -> list[float]:
    values = [fractions] if isinstance(fractions, (int, float)) else list(fractions)
    if not values:
        raise LesionError("fractions must hold at least one proportion in (0, 1], got none")
    for p in values:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
            raise LesionError(f"fractions must be proportions in (0, 1] (0.25 for 25 %), got {p!r}")
    return [float(p) for p in values]


Group = tuple[str, float, int, Sequence[int]]


def _similar_groups(model: nn.Module, chosen: list[Layer], props: list[float]) -> list[Group]:
    groups: list[Group] = []
    for layer in chosen:
        w = unit_weights(model, layer.name)
        # Exact pairwise differences (no Gram-matrix shortcut): identical units are at distance
        # exactly 0 and d(a, b) == d(b, a) bit for bit, so ties are real ties.
        distance = torch.cdist(w, w, compute_mode="donot_use_mm_for_euclid_dist").numpy()
        index = np.arange(layer.n_units)
        for ref in range(layer.n_units):
            others = index[index != ref]
            order = others[np.lexsort((others, distance[ref, others]))]
            ranked = np.concatenate(([ref], order))
            groups.extend((layer.name, p, ref, ranked[: group_size(p, layer.n_units)].tolist()) for p in props)
    return groups


def _random_groups(chosen: list[Layer], props: list[float], seed: int, draws: int) -> list[Group]:
    rng = np.random.default_rng(seed)
    return [
        (layer.name, p, d, sorted(int(u) for u in rng.choice(layer.n_units, size=group_size(p, layer.n_units), replace=False)))
        for layer in chosen
        for p in props
        for d in range(draws)
    ]


def _rank_orders(chosen: list[Layer], attribute: Mapping[str, Any] | None, highest: bool) -> dict[str, np.ndarray]:
    if attribute is None:
        raise LesionError("selector 'ranked' needs attribute= (a mapping of layer name -> one value per unit)")
    orders = {}
    for layer in chosen:
        if layer.name not in attribute:
            raise LesionError(f"attribute has no values for layer {layer.name!r}; it has {sorted(attribute)}")
        values = np.asarray(attribute[layer.name], dtype=np.float64)
        if values.shape != (layer.n_units,):
            raise LesionError(
                f"attribute[{layer.name!r}] must have shape ({layer.n_units},), one value per unit; got {values.shape}"
            )
        if np.isnan(values).any():
            raise LesionError(f"attribute[{layer.name!r}] holds NaN for units {np.flatnonzero(np.isnan(values)).tolist()}")
        orders[layer.name] = np.argsort(-values if highest else values, kind="stable")
    return orders


def _deduplicate(groups: list[Group], method: str) -> tuple[tuple[Lesion, ...], dict[str, list[list[Any]]]]:
    """One lesion per distinct group, in first-seen order, and who produced each."""
    lesions: dict[str, Lesion] = {}
    members: dict[str, list[list[Any]]] = {}
    for layer, p, index, units in groups:
        lesion = Lesion(((layer, tuple(int(u) for u in units)),), method)
        lesions.setdefault(lesion.key, lesion)
        members.setdefault(lesion.key, []).append([layer, p, int(index)])
    return tuple(lesions.values()), members
