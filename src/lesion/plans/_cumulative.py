"""The `cumulative` selector: ablation curves, lesioning the first 0, s, 2s, ... units of an order.

Morcos et al. 2018 ablate a growing number of units (random orders, or ordered by class
selectivity) and read accuracy against the number ablated. Here every step of every curve is one
lesion of the plan, so a sweep evaluates whole curves in one batched pass. The units of a layer
set (a unit selection such as ``"fc1;fc2"``) are pooled in model order (layer by layer, units
ascending) and ordered:

* ``random:<seed>``: ``numpy.random.default_rng(seed).permutation`` of the pooled units;
* ``<attribute>:high`` / ``<attribute>:low``: by one value per unit, highest (lowest) first,
  ties in pooled order (a stable sort).

Step ``k`` lesions the first ``k`` units of the order (``k = 0, s, 2s, ...``, and the whole set
as the last step when it is not a multiple of ``s``). Step 0 is the intact network (``"intact"``,
which every run holds). Steps of different curves that lesion the same units (always the last
one) are one lesion of the plan; ``plan.info["curves"]`` maps each curve to the lesion key of
every step, so curves are read back by key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from torch import nn

from lesion._errors import LesionError, check_int
from lesion._lesion import Lesion
from lesion._units import SelectionLike, layers, select
from lesion.plans._plan import Plan, _check_method


def cumulative(
    model: nn.Module,
    selection: SelectionLike,
    *,
    step: int = 1,
    seeds: Sequence[int] = (0, 1, 2),
    attributes: Mapping[str, Mapping[str, Any]] | None = None,
    max_units: int | None = None,
    method: str = "zero",
    name: str = "cumulative",
    include: Sequence[str] = (),
) -> Plan:
    """Cumulative ablation curves over the units of ``selection``.

    Parameters
    ----------
    model : nn.Module
    selection : str or mapping
        The layer set, e.g. ``"fc1;fc2"`` or ``{"conv3": "*"}``; its units are pooled in model order.
    step : int, default=1
        Units added per step (``s``).
    seeds : sequence of int, default=(0, 1, 2)
        One random order per seed (curves ``random:<seed>``); empty for none.
    attributes : mapping of attribute name -> (mapping of layer name -> array of shape (n_units,))
        Orders by value, e.g. ``{"selectivity": {"fc1": ..., "fc2": ...}}`` gives curves
        ``selectivity:high`` and ``selectivity:low``. Values are of the layer's full unit range;
        those of the selected units are used. No NaN.
    max_units : int, optional
        Stop the curves at this many units (default: the whole set).
    method : {"zero", "mean"}, default="zero"
    name : str, default="cumulative"
    include : sequence of str, default=()
        Extra modules that count as layers (:func:`lesion.layers`), e.g. the batch norms after
        Linear layers, to lesion at their outputs.

    Returns
    -------
    Plan
        ``info`` holds ``selector`` ("cumulative"), ``units`` (the pooled ``[layer, unit]`` list),
        ``steps`` (the ``k`` of every step, 0 first), ``orders`` (curve -> indices into ``units``),
        ``curves`` (curve -> lesion key per step, ``"intact"`` at ``k=0``), ``seeds``, ``step``,
        ``method``.

    Examples
    --------
    >>> from lesion.models import meyes2019_mlp
    >>> plan = cumulative(meyes2019_mlp(), "fc2", step=4, seeds=[0])
    >>> plan.info["steps"], len(plan)
    ([0, 4, 8, 10], 3)
    """
    _check_method(method)
    check_int("step", step, 1)
    chosen = select(layers(model, include), selection)
    pooled = [(layer, u) for layer, units in chosen.items() for u in units]
    total = len(pooled) if max_units is None else check_int("max_units", max_units, 1, len(pooled))
    seeds = [check_int("seeds", s, 0) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise LesionError(f"seeds must be distinct, got {seeds}")
    orders: dict[str, list[int]] = {
        f"random:{s}": [int(i) for i in np.random.default_rng(s).permutation(len(pooled))] for s in seeds
    }
    for attribute, values in (attributes or {}).items():
        pooled_values = _pooled_values(attribute, values, chosen)
        orders[f"{attribute}:high"] = [int(i) for i in np.argsort(-pooled_values, kind="stable")]
        orders[f"{attribute}:low"] = [int(i) for i in np.argsort(pooled_values, kind="stable")]
    if not orders:
        raise LesionError("cumulative: give at least one random seed (seeds=) or one attribute (attributes=)")
    steps = [*range(0, total, step), total]
    lesions: dict[str, Lesion] = {}
    curves: dict[str, list[str]] = {}
    for curve, order in orders.items():
        keys = ["intact"]
        for k in steps[1:]:
            picked: dict[str, list[int]] = {}
            for index in order[:k]:
                layer, unit = pooled[index]
                picked.setdefault(layer, []).append(unit)
            lesion = Lesion(tuple((layer, tuple(picked[layer])) for layer in chosen if layer in picked), method)
            lesions.setdefault(lesion.key, lesion)
            keys.append(lesion.key)
        curves[curve] = keys
    info = {
        "selector": "cumulative",
        "units": [[layer, int(u)] for layer, u in pooled],
        "steps": steps,
        "orders": orders,
        "curves": curves,
        "seeds": seeds,
        "step": int(step),
        "method": method,
    }
    return Plan(name, tuple(lesions.values()), info)


def _pooled_values(attribute: str, values: Mapping[str, Any], chosen: Mapping[str, tuple[int, ...]]) -> np.ndarray:
    pooled = []
    for layer, units in chosen.items():
        if layer not in values:
            raise LesionError(f"attributes[{attribute!r}] has no values for layer {layer!r}; it has {sorted(values)}")
        array = np.asarray(values[layer], dtype=np.float64)
        if array.ndim != 1 or len(array) <= max(units):
            raise LesionError(
                f"attributes[{attribute!r}][{layer!r}] must have one value per unit of the layer (shape (n_units,)), "
                f"got shape {array.shape}"
            )
        pooled.append(array[list(units)])
    flat = np.concatenate(pooled)
    if np.isnan(flat).any():
        raise LesionError(f"attributes[{attribute!r}] holds NaN for {int(np.isnan(flat).sum())} selected unit(s)")
    return flat


def curves(plan: Plan, table: Any, column: str = "all") -> Any:
    """The curves of a cumulative ``plan`` read from a run's wide table, one row per (curve, step).

    Parameters
    ----------
    plan : Plan
        Made by :func:`cumulative`.
    table : pandas.DataFrame
        Indexed by lesion key (``run.table("top1")``), holding ``intact`` and every lesion of the plan.
    column : str, default="all"
        The column read (``all``, or a class name).

    Returns
    -------
    pandas.DataFrame
        Columns ``curve``, ``order`` (``random`` or the attribute name), ``direction`` (the seed
        for random orders, else ``high``/``low``), ``k`` (units lesioned), ``fraction`` (k / the
        last step's k), ``lesion`` (key), ``value``.
    """
    import pandas as pd

    info = plan.info
    if info.get("selector") != "cumulative":
        raise LesionError(f"plan {plan.name!r} was not made by cumulative(); its selector is {info.get('selector')!r}")
    missing = sorted({key for keys in info["curves"].values() for key in keys} - set(table.index))
    if missing:
        raise LesionError(f"table lacks {len(missing)} lesion(s) of plan {plan.name!r}, e.g. {missing[:3]}; finish the sweep first")
    rows = []
    last = info["steps"][-1]
    for curve, keys in info["curves"].items():
        order, _, direction = curve.rpartition(":")
        for k, key in zip(info["steps"], keys, strict=True):
            rows.append((curve, order, direction, k, k / last, key, float(table.loc[key, column])))
    return pd.DataFrame(rows, columns=["curve", "order", "direction", "k", "fraction", "lesion", "value"])


def area_under_curve(fraction: ArrayLike, value: ArrayLike) -> float:
    """Trapezoidal area under ``value`` against ``fraction`` of units ablated (0..1).

    With accuracy values in [0, 1] and fractions spanning [0, 1], the area is in [0, 1]: 1 for a
    network unaffected by any number of ablated units (Morcos et al. 2018's measure of reliance
    on single directions: a smaller area, more reliance).

    >>> area_under_curve([0, 0.5, 1], [1.0, 0.5, 0.0])
    0.5
    """
    x, y = np.asarray(fraction, dtype=np.float64), np.asarray(value, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise LesionError(f"fraction and value must be 1-d of the same length >= 2, got shapes {x.shape} and {y.shape}")
    if np.any(np.diff(x) <= 0):
        raise LesionError("fraction must increase strictly")
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))
