"""Summaries over a population of networks."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lesion._errors import LesionError

DROP_COLUMNS = ("network", "unit", "class", "drop")


@dataclass(frozen=True)
class ClassDropSpread:
    """How unevenly each class's accuracy drop is spread over the units of a network.

    Attributes
    ----------
    per_network : pandas.DataFrame
        Columns ``network``, ``class``, ``std`` (population standard deviation, ddof=0,
        over the units of that network of the class-specific drop), ``n_units``.
    population : pandas.DataFrame
        Columns ``class``, ``mean_std`` (mean of ``std`` over the networks), ``n_networks``.
    """

    per_network: pd.DataFrame
    population: pd.DataFrame


def class_drop_spread(df: pd.DataFrame) -> ClassDropSpread:
    """Per network and class, the spread over units of the class-specific accuracy drop.

    Meyes et al. (2019), Figure 11: for each network the standard deviation, over its
    single-unit lesions, of each class's accuracy drop, and the mean of these deviations
    over the population of networks. A high value means some units matter much more to
    that class than others (a localised representation).

    The standard deviation is the population one (ddof=0): the units of a layer are the
    whole population being described, not a sample from a larger one.

    Parameters
    ----------
    df : pandas.DataFrame
        Tidy table with columns ``network``, ``unit``, ``class``, ``drop``, one row per
        (network, unit, class). NaN drops are ignored.

    Returns
    -------
    ClassDropSpread
    """
    missing = [c for c in DROP_COLUMNS if c not in df.columns]
    if missing:
        raise LesionError(
            f"df: expected columns {list(DROP_COLUMNS)}, got {list(df.columns)} (missing {missing})"
        )
    duplicated = df.duplicated(["network", "unit", "class"])
    if duplicated.any():
        first = df.loc[duplicated, ["network", "unit", "class"]].iloc[0].tolist()
        raise LesionError(
            f"df: expected one row per (network, unit, class), got duplicates, e.g. {first}"
        )
    grouped = df.dropna(subset=["drop"]).groupby(["network", "class"], sort=True)["drop"]
    per_network = grouped.agg(std=lambda d: d.std(ddof=0), n_units="size").reset_index()
    population = (
        per_network.groupby("class", sort=True)["std"]
        .agg(mean_std="mean", n_networks="size")
        .reset_index()
    )
    return ClassDropSpread(per_network=per_network, population=population)
