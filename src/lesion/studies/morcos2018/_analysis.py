"""Pure tables of the Morcos 2018 study: curve areas, their relation to the generalisation gap, order tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from lesion.plans import area_under_curve
from lesion.stats import correlation_ci


def curve_areas(curves: pd.DataFrame) -> pd.DataFrame:
    """Area under each ablation curve: raw accuracy and accuracy relative to the intact network.

    ``curves`` has one row per (network, split, method, curve, k) with ``fraction`` and ``value``
    (top-1 in [0, 1]). Random orders are averaged per step first (curve ``random``, the mean over
    seeds, with the seeds' sd of the area in ``auc_sd``); attribute orders keep their names.

    Returns one row per (network, split, method, curve): ``auc``, ``auc_relative`` (area under
    value / value at k=0; 1 = no damage at any step), ``auc_sd``.
    """
    rows = []
    keys = ["network", "split", "method"]
    for key, group in curves.groupby(keys, sort=True):
        named = dict(zip(keys, key, strict=True))
        intact = group[group["k"] == 0]["value"].iloc[0]
        random_areas = []
        for curve, part in group.groupby("curve", sort=True):
            part = part.sort_values("k")
            area = area_under_curve(part["fraction"], part["value"])
            relative = area_under_curve(part["fraction"], part["value"] / intact) if intact > 0 else np.nan
            if curve.startswith("random:"):
                random_areas.append((area, relative))
            else:
                rows.append({**named, "curve": curve, "auc": area, "auc_relative": relative, "auc_sd": 0.0})
        if random_areas:
            areas = np.array(random_areas)
            rows.append({**named, "curve": "random", "auc": areas[:, 0].mean(), "auc_relative": areas[:, 1].mean(),
                         "auc_sd": areas[:, 0].std(ddof=1) if len(areas) > 1 else 0.0})
    return pd.DataFrame(rows)


def gap_relation(networks: pd.DataFrame, areas: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Correlation (95 % CIs) across networks of the generalisation gap with the random-order area.

    ``networks`` has ``network``, ``gap`` and the ``by`` columns (e.g. architecture); ``areas`` is
    `curve_areas`' table. One row per (``by``..., split, method, measure) with measure ``auc`` or
    ``auc_relative``. Morcos et al.: networks that generalise worse (larger gap) rely more on
    single directions (smaller area): a negative correlation.
    """
    merged = areas[areas["curve"] == "random"].merge(networks[["network", "gap", *by]], on="network")
    rows = []
    for key, group in merged.groupby([*by, "split", "method"], sort=True):
        for measure in ("auc", "auc_relative"):
            named = dict(zip([*by, "split", "method"], key, strict=True))
            rows.append({**named, "measure": measure, **correlation_ci(group["gap"], group[measure])})
    return pd.DataFrame(rows)


def order_tests(areas: pd.DataFrame) -> pd.DataFrame:
    """Each attribute order against random, paired over networks (Wilcoxon signed-rank, two-sided).

    Rows: split, method, curve, mean area of the order, mean random area, mean difference,
    networks, p. Morcos et al.: ablating by selectivity is *not* more damaging than random.
    """
    rows = []
    for (split, method), group in areas.groupby(["split", "method"], sort=True):
        wide = group.pivot(index="network", columns="curve", values="auc_relative")
        for curve in [c for c in wide.columns if c != "random"]:
            pair = wide[["random", curve]].dropna()
            diff = pair[curve] - pair["random"]
            p = float(stats.wilcoxon(pair[curve], pair["random"]).pvalue) if len(pair) >= 2 and (diff != 0).any() else np.nan
            rows.append({"split": split, "method": method, "curve": curve, "order_auc": pair[curve].mean(),
                         "random_auc": pair["random"].mean(), "difference": diff.mean(), "networks": len(pair), "p": p})
    return pd.DataFrame(rows)


def noise_areas(noise: pd.DataFrame) -> pd.DataFrame:
    """Per network and split: area under accuracy relative to scale 0, over the scale index (0..1).

    The scales are spread evenly over [0, 1] by their rank, so networks with the same scales
    compare directly.
    """
    rows = []
    for (network, split), group in noise.groupby(["network", "split"], sort=True):
        mean = group.groupby("scale")["accuracy"].mean().sort_index()
        x = np.linspace(0, 1, len(mean))
        base = mean.iloc[0]
        rows.append({"network": network, "split": split,
                     "noise_auc": area_under_curve(x, mean.to_numpy() / base) if base > 0 else np.nan})
    return pd.DataFrame(rows)
