"""Pure tables of the Zhou 2018 study: per-unit attributes and drops, predictors, variants, rotation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from lesion.attributes import class_selectivity, selectivity, weight_norms
from lesion.stats import correlation_table

#: A unit's lesion "damages a class" when that class's top-1 accuracy drops by more than this (pp).
DAMAGE_PP = 10.0
ATTRIBUTES = ("csi", "as2020", "l1")


def unit_table(
    drops: pd.DataFrame,
    means: Mapping[str, tuple[np.ndarray, np.ndarray]],
    weights: Mapping[str, np.ndarray] | None,
    class_names: Sequence[str],
) -> pd.DataFrame:
    """One row per unit: attributes and lesion effects.

    Parameters
    ----------
    drops : DataFrame
        From `lesion.studies._variants.class_drops` (layer, unit, one column per class, overall; pp).
    means : mapping of layer -> (unit class means (C, U), neuron class means (C, U, P))
    weights : mapping of layer -> weight tensor/array (U, ...), or None (rotated directions: no L1)
    class_names : the class columns of ``drops``

    Returns
    -------
    DataFrame with ``layer``, ``unit``, ``csi`` (selectivity index of the unit's spatially averaged
    activation, Morcos/Zhou), ``as2020`` (Meyes et al. 2020's AS of each neuron, averaged over the
    unit's positions), ``l1`` (incoming weights), ``preferred_class``, ``overall`` (drop, pp),
    ``max_class_drop``, ``max_drop_class``, ``preferred_class_drop`` and ``damaged_classes``
    (classes dropping by more than :data:`DAMAGE_PP`).
    """
    parts = []
    for layer, (unit_means, neuron_means) in means.items():
        sel = selectivity(unit_means)
        n_classes, n_units, n_positions = neuron_means.shape
        as2020 = selectivity(neuron_means.reshape(n_classes, -1))["selectivity"].to_numpy().reshape(n_units, n_positions).mean(1)
        l1 = weight_norms(weights[layer])["l1"].to_numpy() if weights is not None else np.full(n_units, np.nan)
        parts.append(pd.DataFrame({
            "layer": layer, "unit": np.arange(n_units), "csi": sel["selectivity"].to_numpy(), "as2020": as2020, "l1": l1,
            "preferred_class": sel["preferred_class"].to_numpy(),
        }))
    units = pd.concat(parts, ignore_index=True).merge(drops, on=["layer", "unit"], validate="one_to_one")
    per_class = units[list(class_names)].to_numpy(float)
    units["max_class_drop"] = per_class.max(1)
    units["max_drop_class"] = per_class.argmax(1)
    preferred = units["preferred_class"].to_numpy()
    units["preferred_class_drop"] = np.where(preferred >= 0, per_class[np.arange(len(units)), np.maximum(preferred, 0)], np.nan)
    units["damaged_classes"] = (per_class > DAMAGE_PP).sum(1)
    return units.drop(columns=list(class_names)).assign(**{f"drop_{c}": per_class[:, i] for i, c in enumerate(class_names)})


def pair_table(units: pd.DataFrame, means: Mapping[str, tuple[np.ndarray, np.ndarray]], class_names: Sequence[str]) -> pd.DataFrame:
    """One row per (unit, class): the unit's class-specific selectivity and that class's drop (pp)."""
    rows = []
    for layer, (unit_means, _) in means.items():
        sel = class_selectivity(unit_means)  # (C, U)
        layer_units = units[units["layer"] == layer].sort_values("unit")
        for c, name in enumerate(class_names):
            rows.append(pd.DataFrame({
                "layer": layer, "unit": layer_units["unit"].to_numpy(), "class": c,
                "class_selectivity": sel[c, layer_units["unit"].to_numpy()], "l1": layer_units["l1"].to_numpy(),
                "class_drop": layer_units[f"drop_{name}"].to_numpy(),
            }))
    return pd.concat(rows, ignore_index=True)


def predictors(units: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Correlations (with 95 % CIs) of each attribute with overall and class-specific drops.

    Per architecture, variant and layer (units of all seeds pooled) and per architecture and
    variant over all layers (``layer`` = ``all``). Targets: ``overall``, ``preferred_class_drop`` (the unit's most selective class),
    ``max_class_drop``, and over (unit, class) pairs ``class_drop`` against ``class_selectivity``
    (and ``l1``).
    """
    tables = []
    for frame in (units, units.assign(layer="all")):
        for attribute in ATTRIBUTES:
            for target in ("overall", "preferred_class_drop", "max_class_drop"):
                tables.append(correlation_table(frame, attribute, target, ["architecture", "variant", "basis", "layer"]))
    for frame in (pairs, pairs.assign(layer="all")):
        for attribute in ("class_selectivity", "l1"):
            tables.append(correlation_table(frame, attribute, "class_drop", ["architecture", "variant", "basis", "layer"]))
    return pd.concat(tables, ignore_index=True)


def network_summary(units: pd.DataFrame) -> pd.DataFrame:
    """Per network and basis: units, mean overall drop, mean/max of the largest class drop, units damaging a class."""
    grouped = units.groupby(["network", "architecture", "variant", "seed", "basis"], sort=True)
    return grouped.agg(
        units=("unit", "size"),
        mean_overall_drop=("overall", "mean"),
        max_overall_drop=("overall", "max"),
        mean_max_class_drop=("max_class_drop", "mean"),
        max_class_drop=("max_class_drop", "max"),
        damaging_units=("damaged_classes", lambda d: int((d > 0).sum())),
    ).reset_index().assign(damaging_share=lambda f: f["damaging_units"] / f["units"])


def variant_tests(networks: pd.DataFrame, reference: str = "plain") -> pd.DataFrame:
    """Each variant against ``reference`` across seeds, per architecture: two-sided Mann–Whitney U per network metric.

    Rows: architecture, variant, metric, reference mean, variant mean, U, p (NaN with fewer than
    2 networks a side; no rows for an architecture without ``reference`` networks).
    """
    metrics = ("mean_overall_drop", "mean_max_class_drop", "damaging_share")
    unit_basis = networks[networks["basis"] == "unit"]
    rows = []
    for architecture, networks_here in unit_basis.groupby("architecture", sort=True):
        base = networks_here[networks_here["variant"] == reference]
        if base.empty:
            continue
        for variant, group in networks_here.groupby("variant", sort=True):
            if variant == reference:
                continue
            for metric in metrics:
                a, b = base[metric].to_numpy(float), group[metric].to_numpy(float)
                u, p = (stats.mannwhitneyu(b, a, alternative="two-sided") if min(len(a), len(b)) >= 2 else (np.nan, np.nan))
                rows.append({"architecture": architecture, "variant": variant, "metric": metric, "reference": reference,
                             "reference_mean": a.mean(), "variant_mean": b.mean(), "n_reference": len(a), "n_variant": len(b),
                             "U": float(u), "p": float(p)})
    return pd.DataFrame(rows)


def rotation_tests(units: pd.DataFrame, rotated_layers: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Unit basis against rotated basis, per architecture, rotated layer (``rotated_layers[architecture]``) and variant.

    Per-network means are compared with a paired Wilcoxon signed-rank test (networks paired), and
    units pooled with a two-sided Mann–Whitney U, for the largest class drop, the damaging share
    and the selectivity index.
    """
    rows = []
    for architecture, layer in ((a, layer) for a, layers in rotated_layers.items() for layer in layers):
        here = units[(units["architecture"] == architecture) & (units["layer"] == layer)]
        for variant, group in here.groupby("variant", sort=True):
            for metric in ("max_class_drop", "csi", "damaged"):
                values = group.assign(damaged=(group["damaged_classes"] > 0).astype(float))
                per_net = values.groupby(["network", "basis"])[metric].mean().unstack("basis")
                unit, rot = values[values["basis"] == "unit"][metric], values[values["basis"] == "rotated"][metric]
                paired = per_net.dropna()
                wilcoxon_p = float(stats.wilcoxon(paired["unit"], paired["rotated"]).pvalue) if len(paired) >= 2 and (paired["unit"] != paired["rotated"]).any() else np.nan
                rows.append({
                    "architecture": architecture, "layer": layer, "variant": variant, "metric": metric, "unit_mean": unit.mean(), "rotated_mean": rot.mean(),
                    "networks": len(paired), "wilcoxon_p": wilcoxon_p,
                    "mannwhitney_p": float(stats.mannwhitneyu(unit, rot, alternative="two-sided").pvalue),
                })
    return pd.DataFrame(rows)
