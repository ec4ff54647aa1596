"""Lesion effects of a sweep: tested per-class effects, pair synergy, unit attributes and their correlations.

Every function reads a finished sweep (`Run`) or a trained network and returns a tidy
DataFrame (Meyes et al. 2019 composes them over a population of MLPs; a study file over any
model). `unit_attributes` is the one function here that runs the network (forward hooks for the
class means of the units' activations).

Conventions: effects are in percentage points (pp). ``change_pp`` is lesioned minus intact
(negative = damage), ``drop_pp = -change_pp`` (positive = damage, the paper's "drop").
``class == -1`` marks overall rows (`lesion.stats.OVERALL`). Units are 0-based.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from lesion._errors import LesionError, closest
from lesion._lesion import Lesion
from lesion.attributes import (
    ClassMeanAccumulator,
    ablation_effect_selectivity,
    mann_whitney,
    mann_whitney_vs_init_distribution,
    selectivity,
    weight_norms,
)
from lesion.data import Split
from lesion.stats._correlation import correlations_by_group
from lesion.stats._draws import class_changes
from lesion.stats._synergy import OVERALL, SAMPLE_CATEGORIES, pair_synergy, sample_categories
from lesion.stats._tests import benjamini_hochberg, mcnemar_exact
from lesion.store import Run

MW_ATTRIBUTES = ("mw_U", "mw_p", "mw_cles", "mw_rank_biserial")
"""Mann-Whitney attributes (their rows carry the comparison's ``reference``)."""

SCALAR_ATTRIBUTES = (*MW_ATTRIBUTES, "l1", "l2", "selectivity", "preferred_class")
"""Attributes with one value per unit (``class == -1``)."""

CLASS_ATTRIBUTE = "mean_activation"
"""The attribute with one value per unit and class (mean post-ReLU activation over the class)."""

ATTRIBUTE_COLUMNS = ("network", "layer", "unit", "attribute", "class", "value", "reference")


def unit_attributes(
    model: nn.Module,
    split: Split,
    *,
    layers: Mapping[str, str],
    initial: Mapping[str, Tensor] | None = None,
    network: int = 0,
    batch_size: int = 1024,
) -> pd.DataFrame:
    """Per unit of each hidden layer: weight change since init, weight norms, class selectivity.

    Parameters
    ----------
    model : nn.Module
        The trained network (not modified; hooks are removed even on error).
    split : Split
        The evaluation set whose activations give the class means, selectivity and preferred class.
    initial : mapping, optional
        The network's initial state dict. Without it each unit is compared with a draw from
        PyTorch's default initialisation (seeded by `network`) and the ``reference`` column says so.
    network : int, default=0
        Identifier written in the ``network`` column (the training seed).
    layers : mapping
        Lesioned layer (whose ``weight`` rows are the units' incoming weights) -> module
        whose output is the units' activation (the MLP's ``{"fc1": "relu1", "fc2": "relu2"}``).
    batch_size : int, default=1024

    Returns
    -------
    pandas.DataFrame
        Tidy, one row per (layer, unit, attribute, class), columns `ATTRIBUTE_COLUMNS`.
        ``attribute`` is one of `SCALAR_ATTRIBUTES` (``class == -1``) or ``mean_activation``
        (one row per class). ``reference`` names what the Mann-Whitney rows compared with
        (``"initial snapshot"`` or the init distribution), ``""`` on other rows.
    """
    modules = dict(model.named_modules())
    for name in [*layers, *layers.values()]:
        if name not in modules:
            raise LesionError(f"layers: expected module names of the model, got {name!r}{closest(name, modules)}")
    means = _class_means(model, split, list(layers.values()), batch_size)
    blocks = []
    for layer, activation in layers.items():
        trained = modules[layer].weight.detach()
        key = f"{layer}.weight"
        if initial is not None and key in initial:
            mw = mann_whitney(initial[key], trained)
        else:
            mw = mann_whitney_vs_init_distribution(trained, seed=network)
        blocks.append(_layer_rows(layer, mw, weight_norms(trained), means[activation]))
    table = pd.concat(blocks, ignore_index=True)
    table.insert(0, "network", network)
    return table[list(ATTRIBUTE_COLUMNS)]


def _class_means(model: nn.Module, split: Split, names: list[str], batch_size: int) -> dict[str, np.ndarray]:
    """(n_classes, n_units) mean activation of each named module's output over `split`.

    A unit of a convolution is a channel: its activation is the channel's mean over positions.
    """
    modules = dict(model.named_modules())
    accumulators: dict[str, ClassMeanAccumulator] = {}
    current: dict[str, Tensor] = {}

    def keep(name: str) -> Callable[[nn.Module, object, Tensor], None]:
        def hook(module: nn.Module, inputs: object, output: Tensor) -> None:
            current[name] = output.flatten(2).mean(2) if output.dim() > 2 else output  # a channel's mean over positions

        return hook

    handles = [modules[name].register_forward_hook(keep(name)) for name in names]
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            for x, y in split.batches(batch_size):
                model(x)
                for name in names:
                    acts = current[name]
                    acc = accumulators.setdefault(name, ClassMeanAccumulator(split.n_classes, acts.shape[1]))
                    acc.update(acts, y)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: acc.means() for name, acc in accumulators.items()}


def _layer_rows(layer: str, mw: pd.DataFrame, norms: pd.DataFrame, means: np.ndarray) -> pd.DataFrame:
    sel = selectivity(np.nan_to_num(means))
    scalar = pd.DataFrame(
        {
            "unit": mw["unit"],
            "mw_U": mw["U"],
            "mw_p": mw["p"],
            "mw_cles": mw["cles"],
            "mw_rank_biserial": mw["rank_biserial"],
            "l1": norms["l1"],
            "l2": norms["l2"],
            "selectivity": sel["selectivity"],
            "preferred_class": sel["preferred_class"].astype(float),
        }
    )
    long = scalar.melt(id_vars="unit", var_name="attribute", value_name="value")
    long["class"] = OVERALL
    long["reference"] = np.where(long["attribute"].isin(MW_ATTRIBUTES), mw["reference"].iloc[0], "")
    n_classes, n_units = means.shape
    per_class = pd.DataFrame(
        {
            "unit": np.tile(np.arange(n_units), n_classes),
            "attribute": CLASS_ATTRIBUTE,
            "class": np.repeat(np.arange(n_classes), n_units),
            "value": means.ravel(),
            "reference": "",
        }
    )
    table = pd.concat([long, per_class], ignore_index=True)
    table.insert(0, "layer", layer)
    return table


def attributes_wide(attributes: pd.DataFrame) -> pd.DataFrame:
    """One row per (network, layer, unit) with a column per scalar attribute and ``mw_reference``.

    Parameters
    ----------
    attributes : pandas.DataFrame
        Tidy table of `unit_attributes` (any number of networks).
    """
    scalar = attributes[attributes["attribute"] != CLASS_ATTRIBUTE]
    wide = scalar.pivot_table(index=["network", "layer", "unit"], columns="attribute", values="value", aggfunc="first")
    wide = wide[[a for a in SCALAR_ATTRIBUTES if a in wide.columns]]
    reference = scalar[scalar["attribute"] == "mw_p"].set_index(["network", "layer", "unit"])["reference"]
    wide["mw_reference"] = reference
    wide.columns.name = None
    return wide.reset_index()


EFFECT_COLUMNS = (
    "network", "lesion", "plan", "layer", "size", "class", "class_name", "n", "intact_top1", "top1",
    "change_pp", "drop_pp", "lost", "gained", "mcnemar_p", "bh_q", "bh_reject",
)


def lesion_effects(run: Run, *, network: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Every lesion's change in overall and per-class top-1 accuracy, with its exact McNemar test.

    The test compares each sample's correctness before and after the lesion: b = samples lost,
    c = samples gained (`lesion.stats.mcnemar_exact`). The p-values of the whole sweep (every
    lesion, every class and overall) form one Benjamini-Hochberg family (`with_tests`).

    Parameters
    ----------
    run : Run
    network : int, default=0
        Identifier written in the ``network`` column.
    alpha : float, default=0.05
        False discovery rate of the correction.

    Returns
    -------
    pandas.DataFrame
        One row per (lesion, class), intact excluded, class -1 (overall) first; columns
        `EFFECT_COLUMNS`. ``top1``/``intact_top1`` in [0, 1]; ``change_pp``/``drop_pp`` in pp;
        ``lost``/``gained`` sample counts; ``bh_q`` the adjusted p-value; ``bh_reject`` whether
        the change survives the correction.
    """
    metrics = run.metrics()
    wide = metrics.pivot_table(
        index=["lesion", "plan", "layers", "size", "class", "class_name"], columns="metric", values="value", sort=False
    ).reset_index()
    intact = wide[wide["lesion"] == "intact"].set_index("class")["top1"]
    effects = wide[wide["lesion"] != "intact"].rename(columns={"layers": "layer"})
    effects = effects.sort_values(["lesion", "class"], key=_lesion_order(run), kind="stable")
    effects["intact_top1"] = effects["class"].map(intact)
    effects["change_pp"] = 100.0 * (effects["top1"] - effects["intact_top1"])
    effects["drop_pp"] = -effects["change_pp"]
    effects["n"] = effects["n"].astype(np.int64)
    effects["lost"] = effects["lost"].astype(np.int64)
    effects["gained"] = effects["gained"].astype(np.int64)
    effects.insert(0, "network", network)
    return with_tests(effects, alpha=alpha)[list(EFFECT_COLUMNS)].reset_index(drop=True)


def _lesion_order(run: Run) -> Callable[[pd.Series], pd.Series]:
    order = {key: i for i, key in enumerate(run.lesions()["key"])}

    def key(column: pd.Series) -> pd.Series:
        return column.map(order) if column.name == "lesion" else column

    return key


def with_tests(
    effects: pd.DataFrame, *, alpha: float = 0.05, by: Sequence[str] = ("network",)
) -> pd.DataFrame:
    """Add ``mcnemar_p``, ``bh_q`` and ``bh_reject`` to a table with ``lost`` and ``gained`` counts.

    Parameters
    ----------
    effects : pandas.DataFrame
        One row per test, with integer columns ``lost`` (b) and ``gained`` (c).
    alpha : float, default=0.05
    by : sequence of str, default=("network",)
        Columns whose values define the Benjamini-Hochberg families (one family per sweep);
        empty: the whole table is one family.

    Returns
    -------
    pandas.DataFrame
        A copy of `effects` with the three columns added.
    """
    missing = [c for c in ("lost", "gained", *by) if c not in effects.columns]
    if missing:
        raise LesionError(f"effects: expected columns lost, gained and {list(by)}, missing {missing}")
    table = effects.copy()
    table["mcnemar_p"] = np.asarray(mcnemar_exact(table["lost"].to_numpy(), table["gained"].to_numpy()), dtype=float)
    table["bh_q"] = np.nan
    table["bh_reject"] = False
    groups = table.groupby(list(by), sort=False).indices.values() if by else [np.arange(len(table))]
    for rows in groups:
        q, reject = benjamini_hochberg(table["mcnemar_p"].to_numpy()[rows], alpha)
        table.iloc[rows, table.columns.get_loc("bh_q")] = q
        table.iloc[rows, table.columns.get_loc("bh_reject")] = reject
    table["bh_reject"] = table["bh_reject"].astype(bool)
    return table


def single_unit(key: str) -> tuple[str, int] | None:
    """``"fc1:12"`` -> ``("fc1", 12)``; None for a lesion of more than one unit (or a non-zero method)."""
    lesion = Lesion.from_key(key)
    if lesion.size != 1 or lesion.method != "zero":
        return None
    ((layer, (unit,)),) = lesion.units
    return layer, unit


def pair_parts(key: str) -> tuple[str, str]:
    """The single-unit lesion keys of a two-unit lesion: ``"fc1:3,5"`` -> ``("fc1:3", "fc1:5")``."""
    lesion = Lesion.from_key(key)
    if lesion.size != 2:
        raise LesionError(f"key: expected a lesion of two units, got {key!r} ({lesion.size} units)")
    parts = [Lesion(((layer, (u,)),), lesion.method).key for layer, units in lesion.units for u in units]
    return parts[0], parts[1]


def unit_drops(effects: pd.DataFrame, layer: str | None = "fc1") -> pd.DataFrame:
    """The single-unit rows of `lesion_effects` as (network, layer, unit, class, drop).

    Parameters
    ----------
    effects : pandas.DataFrame
        From `lesion_effects` (any number of networks).
    layer : str or None, default="fc1"
        Keep this layer's units only (None: every layer).

    Returns
    -------
    pandas.DataFrame
        Columns ``network``, ``layer``, ``unit``, ``class`` (-1 overall), ``drop`` (pp, positive = damage),
        ``change_pp``, ``bh_reject``.
    """
    units = effects["lesion"].map(single_unit)
    rows = effects[units.notna()].copy()
    rows["layer"] = [u[0] for u in units[units.notna()]]
    rows["unit"] = [u[1] for u in units[units.notna()]]
    if layer is not None:
        rows = rows[rows["layer"] == layer]
    rows = rows.rename(columns={"drop_pp": "drop"})
    return rows[["network", "layer", "unit", "class", "drop", "change_pp", "bh_reject"]].reset_index(drop=True)


def attribute_correlations(
    attributes: pd.DataFrame,
    effects: pd.DataFrame,
    *,
    attribute_names: Sequence[str] = ("mw_p", "mw_rank_biserial", "l1", "l2", "selectivity", CLASS_ATTRIBUTE),
    layers: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Pearson and Spearman correlation of each attribute with each lesion effect, per network and pooled.

    The effect is the drop in overall accuracy (``class == -1``) or in one class's accuracy.
    ``mean_activation`` is matched to the class whose drop it is compared with (and has no
    overall row). Meyes et al. (2019), Figures 9 and 10: ``mw_p`` against the overall drop.

    Parameters
    ----------
    attributes : pandas.DataFrame
        Tidy table of `unit_attributes`.
    effects : pandas.DataFrame
        From `lesion_effects`.
    attribute_names : sequence of str
    layers : sequence of str, optional
        Default: every layer of `attributes`.

    Returns
    -------
    pandas.DataFrame
        Columns ``layer``, ``attribute``, ``class``, ``network`` (None on the pooled row),
        ``pooled``, ``n``, ``pearson_r``, ``pearson_p``, ``spearman_r``, ``spearman_p``.
    """
    blocks = []
    for layer in layers if layers is not None else list(dict.fromkeys(attributes["layer"])):
        table = attribute_effect_table(attributes, effects, layer)
        for name in attribute_names:
            if name not in table.columns:
                raise LesionError(f"attribute_names: unknown attribute {name!r}{closest(name, table.columns)}")
            for cls, group in table.groupby("class", sort=True):
                if name == CLASS_ATTRIBUTE and cls == OVERALL:
                    continue
                block = correlations_by_group(group, name, "drop", by="network")
                block.insert(0, "class", cls)
                block.insert(0, "attribute", name)
                block.insert(0, "layer", layer)
                blocks.append(block)
    return pd.concat(blocks, ignore_index=True)


def attribute_effect_table(attributes: pd.DataFrame, effects: pd.DataFrame, layer: str = "fc1") -> pd.DataFrame:
    """One row per (network, unit, class) of `layer`: its drop and every attribute.

    ``mean_activation`` holds the unit's mean activation over the row's class (NaN on overall rows).
    """
    drops = unit_drops(effects, layer)
    wide = attributes_wide(attributes[attributes["layer"] == layer]).drop(columns="layer")
    table = drops.merge(wide, on=["network", "unit"], how="left")
    per_class = attributes[(attributes["layer"] == layer) & (attributes["attribute"] == CLASS_ATTRIBUTE)]
    per_class = per_class[["network", "unit", "class", "value"]].rename(columns={"value": CLASS_ATTRIBUTE})
    return table.merge(per_class, on=["network", "unit", "class"], how="left")


PAIR_COLUMNS = (
    "network", "lesion", "unit_a", "unit_b", "class", "pair", "single_a", "single_b", "sum_singles", "synergy",
    *(f"n_{c}" for c in SAMPLE_CATEGORIES),
)


def pair_analysis(run: Run, *, network: int = 0, plan: str = "pairs") -> pd.DataFrame:
    """Each two-unit lesion of `plan` against its two single lesions, per class and overall.

    ``synergy = pair - (single_a + single_b)`` on accuracy changes in pp (see
    `lesion.stats.pair_synergy`): negative = the pair hurts more than its parts add up to
    (redundantly represented features, the paper's units 4+16); positive with a positive
    ``pair`` = the pair helps more than its parts (the paper's units 5+10 on class 5).
    The ``n_<category>`` columns count the samples of each Figure 12 category
    (`lesion.stats.sample_categories`) in the row's class (all samples on overall rows).

    Parameters
    ----------
    run : Run
        A sweep holding the pairs and the single lesions of their units.
    network : int, default=0
    plan : str, default="pairs"

    Returns
    -------
    pandas.DataFrame
        Columns `PAIR_COLUMNS`; ``unit_a``/``unit_b`` are single-unit lesion keys (``"fc1:3"``).
    """
    keys = list(run.lesions(plan)["key"])
    if not keys:
        raise LesionError(f"plan: the run holds no lesions of plan {plan!r}; plans: {sorted(set(run.lesions()['plan']))}")
    change = (run.table("top1") - run.table("top1").loc["intact"]) * 100.0
    classes = list(run.class_names)
    parts = {key: pair_parts(key) for key in keys}
    needed = sorted({p for pair in parts.values() for p in pair})
    missing = [p for p in needed if p not in change.index]
    if missing:
        raise LesionError(f"run: the pair analysis needs the single lesions {missing[:5]}, which the run does not hold")
    synergy = pair_synergy(
        {u: change.loc[u, classes].to_numpy() for u in needed},
        {parts[k]: change.loc[k, classes].to_numpy() for k in keys},
        single_overall={u: change.loc[u, "all"] for u in needed},
        pair_overall={parts[k]: change.loc[k, "all"] for k in keys},
    )
    synergy.insert(0, "lesion", np.repeat(keys, len(classes) + 1))
    synergy.insert(0, "network", network)
    counts = _category_counts(run, keys, parts)
    return pd.concat([synergy, counts], axis=1)[list(PAIR_COLUMNS)]


def _category_counts(run: Run, keys: list[str], parts: dict[str, tuple[str, str]]) -> pd.DataFrame:
    """Per pair and class (overall first), the number of samples in each Figure 12 category."""
    labels = run.labels
    n_classes = len(run.class_names)
    right: dict[str, np.ndarray] = {}

    def correct(key: str) -> np.ndarray:
        if key not in right:
            right[key] = run.correct(key)[0]
        return right[key]

    intact = correct("intact")
    rows = []
    for key in keys:
        a, b = parts[key]
        category = sample_categories(correct(key), correct(a), correct(b), intact)
        for cls in range(OVERALL, n_classes):
            mask = slice(None) if cls == OVERALL else labels == cls
            rows.append([int(np.count_nonzero(category[mask] == c)) for c in SAMPLE_CATEGORIES])
    return pd.DataFrame(rows, columns=[f"n_{c}" for c in SAMPLE_CATEGORIES])


def ranked_pairs(pairs: pd.DataFrame, kind: str = "negative", top: int = 10, overall: bool = False) -> pd.DataFrame:
    """The most super-additive pairs of a `pair_analysis` table.

    Parameters
    ----------
    pairs : pandas.DataFrame
        From `pair_analysis` (any number of networks).
    kind : {"negative", "positive"}, default="negative"
        ``negative``: most negative synergy (the pair damages more than both singles together,
        the paper's units 4+16). ``positive``: largest synergy among rows where the pair and
        both singles improve the class (or leave it unchanged) and the pair's gain exceeds the
        summed single gains (the paper's units 5+10 on class 5: +5.16 pp vs +3.14 and +0.45 pp).
    top : int, default=10
    overall : bool, default=False
        Rank the overall rows (class -1) instead of the per-class rows.

    Returns
    -------
    pandas.DataFrame
        The `top` rows, strongest first.
    """
    if kind not in ("negative", "positive"):
        raise LesionError(f"kind: expected 'negative' or 'positive', got {kind!r}")
    rows = pairs[(pairs["class"] == OVERALL) == overall]
    if kind == "negative":
        rows = rows[rows["synergy"] < 0].sort_values("synergy", kind="stable")
    else:
        gains = (rows["pair"] > 0) & (rows["single_a"] >= 0) & (rows["single_b"] >= 0) & (rows["synergy"] > 0)
        rows = rows[gains].sort_values("synergy", ascending=False, kind="stable")
    return rows.head(top).reset_index(drop=True)


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
