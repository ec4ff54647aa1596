"""The analyses of Meyes et al. (2020) on a finished run and a captured activation matrix.

Pure functions from a :class:`~lesion.store.Run` and :class:`~lesion.engine._capture.Activations`
to tidy DataFrames; nothing here runs the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from lesion._errors import LesionError
from lesion._lesion import Lesion
from lesion.attributes import (
    ClassMeanAccumulator,
    ablation_effect_selectivity,
    most_selective_counts,
    selectivity,
)
from lesion.engine._capture import Activations
from lesion.stats import Correlation, correlate
from lesion.store import Run

#: Rows of the activation matrix read at once when accumulating class means.
CHUNK_ROWS = 1024


def class_changes(run: Run, keys: Sequence[str]) -> pd.DataFrame:
    """Top-1 accuracy of each lesion minus the intact network's, per class (in [−1, 1]).

    Returns
    -------
    DataFrame of shape (len(keys), n_classes + 1)
        Index: lesion key; columns: the class names, then ``all``.
    """
    table = run.table("top1")
    return table.loc[list(keys)] - table.loc["intact"]


def layer_effects(run: Run, plan: str) -> pd.DataFrame:
    """Mean change in class-specific accuracy per layer and fraction over a random-draw plan.

    Every draw counts once, also when two draws picked the same units (the plan then holds one
    lesion with two members; see :func:`lesion.plans.fraction`).

    Returns
    -------
    DataFrame
        One row per (layer, fraction, class): ``layer``, ``fraction``, ``class`` (−1: all
        samples), ``class_name``, ``mean_change`` and ``std_change`` (top-1 accuracy, lesioned
        minus intact, over the draws), ``n_draws``. Layers in model order.
    """
    info = run.meta(f"plan:{plan}")
    draws = pd.DataFrame(
        [(layer, fraction, draw, key) for key, members in info["members"].items() for layer, fraction, draw in members],
        columns=["layer", "fraction", "draw", "lesion"],
    )
    change = class_changes(run, draws["lesion"].unique())
    names = list(change.columns)
    long = change.rename_axis(index="lesion", columns="class_name").stack().rename("change").reset_index()
    merged = draws.merge(long, on="lesion")
    grouped = merged.groupby(["layer", "fraction", "class_name"], sort=False)["change"]
    effects = grouped.agg(mean_change="mean", std_change="std", n_draws="size").reset_index()
    effects.insert(2, "class", effects["class_name"].map({n: i for i, n in enumerate(names[:-1])} | {"all": -1}))
    order = {name: i for i, name in enumerate(info["layers"])}
    effects = effects.sort_values(
        ["fraction", "layer", "class"], key=lambda col: col.map(order) if col.name == "layer" else col, kind="stable"
    )
    return effects.reset_index(drop=True)


def class_drops(effects: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """Per class, each layer's mean accuracy change and their sum (the stacked bar's height).

    Returns
    -------
    DataFrame
        Index: class names (no ``all``); one column per layer (mean change, in [−1, 1]) and
        ``total``, their sum.
    """
    rows = effects[(effects["fraction"] == fraction) & (effects["class"] >= 0)]
    if rows.empty:
        raise LesionError(f"fraction: no effects for {fraction}; the table has {sorted(effects['fraction'].unique())}")
    wide = rows.pivot(index="class_name", columns="layer", values="mean_change")
    wide = wide.loc[list(dict.fromkeys(rows["class_name"])), list(dict.fromkeys(rows["layer"]))]
    return wide.assign(total=wide.sum(axis=1))


def error_vs_drop(class_accuracy: pd.Series, total_change: pd.Series) -> Correlation:
    """Correlation of each class's original error with its accuracy drop under the layer lesions.

    ``class_accuracy``: intact top-1 per class; ``total_change``: the summed per-layer mean
    change (negative = damage). The drop is ``-total_change``, so a positive coefficient says
    that harder classes lose more (Meyes et al. 2020, Section 4.1).
    """
    error = 1 - class_accuracy.loc[total_change.index]
    return correlate(error.to_numpy(), -total_change.to_numpy())


def activation_selectivity(activations: Activations, labels: np.ndarray, n_classes: int, layers: Sequence[str]) -> pd.DataFrame:
    """AS of every neuron of ``layers`` from class means streamed over the captured matrix.

    Returns
    -------
    DataFrame
        One row per neuron (columns of :meth:`Activations.neurons`) plus ``AS`` and
        ``preferred_class`` (−1 where all class means are equal, e.g. a dead neuron).
    """
    neurons = activations.neurons(layers)
    columns = neurons["column"].to_numpy()
    accumulator = ClassMeanAccumulator(n_classes, len(columns))
    for start in range(0, activations.n_samples, CHUNK_ROWS):
        stop = start + CHUNK_ROWS
        accumulator.update(np.asarray(activations.values[start:stop][:, columns], dtype=np.float64), labels[start:stop])
    values = selectivity(accumulator.means())
    return neurons.assign(AS=values["selectivity"].to_numpy(), preferred_class=values["preferred_class"].to_numpy())


def unit_ablation_selectivity(run: Run, plan: str) -> pd.DataFrame:
    """AES of every single-unit lesion of ``plan``, from its class-specific accuracy changes.

    Returns
    -------
    DataFrame
        One row per lesion: ``lesion`` (key), ``layer``, ``unit``, the columns of
        :func:`lesion.attributes.ablation_effect_selectivity` (``aes_class``, ``delta_max``,
        ``delta_rest``, ``aes``, ``sign``, ``aes_scaled``, rescaled over all units of the plan
        together) and ``delta_all`` (the overall accuracy change).
    """
    keys = list(run.lesions(plan)["key"])
    change = class_changes(run, keys)
    aes = ablation_effect_selectivity(change.drop(columns="all").to_numpy())
    layer_unit = [Lesion.from_key(key).units[0] for key in keys]
    return aes.drop(columns="unit").assign(
        lesion=keys,
        layer=[layer for layer, _ in layer_unit],
        unit=[units[0] for _, units in layer_unit],
        delta_all=change["all"].to_numpy(),
    )[["lesion", "layer", "unit", "aes_class", "delta_max", "delta_rest", "aes", "sign", "aes_scaled", "delta_all"]]


def neuron_table(as_table: pd.DataFrame, aes_table: pd.DataFrame) -> pd.DataFrame:
    """AS per neuron joined with its unit's AES: a kernel's AES is shared by all its spatial neurons.

    Returns
    -------
    DataFrame
        ``as_table``'s rows and columns plus ``aes``, ``aes_scaled``, ``aes_class``, ``aes_sign``
        (0 / −1 for a neuron whose unit has no single-unit lesion).
    """
    unit_values = aes_table[["layer", "unit", "aes", "aes_scaled", "aes_class", "sign"]].rename(columns={"sign": "aes_sign"})
    merged = as_table.merge(unit_values, on=["layer", "unit"], how="left", validate="many_to_one")
    return merged.fillna({"aes": 0.0, "aes_scaled": 0.0, "aes_class": -1, "aes_sign": 0}).astype(
        {"aes_class": np.int64, "aes_sign": np.int64}
    )


def selective_counts(neurons: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """Per class, how many neurons are most selective for it by AS and by AES.

    Returns
    -------
    DataFrame
        ``class``, ``class_name``, ``n_as``, ``n_aes``, ``n_aes_negative``, ``n_aes_positive``.
    """
    n_classes = len(class_names)
    by_as = most_selective_counts(neurons["AS"], neurons["preferred_class"], n_classes)
    by_aes = most_selective_counts(neurons["aes"], neurons["aes_class"], n_classes)
    return pd.DataFrame(
        {
            "class": by_as["class"],
            "class_name": list(class_names),
            "n_as": by_as["n_neurons"],
            "n_aes": by_aes["n_neurons"],
            "n_aes_negative": by_aes["n_negative"],
            "n_aes_positive": by_aes["n_positive"],
        }
    )
