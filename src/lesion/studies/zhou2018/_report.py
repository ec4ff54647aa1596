"""Figures and summary.md of the Zhou 2018 study."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from lesion.report import figures_and_timings, markdown_table
from lesion.studies._study import StudyDir
from lesion.studies._variants import chance_warning
from lesion.studies.zhou2018._analysis import DAMAGE_PP

CAPTIONS = {
    "fig1-selectivity-vs-drop": "Each unit's class selectivity index (x) against the drop of overall top-1 (left) and of "
    "its most selective class (right) when it alone is lesioned, pp; unit basis, all layers, colour by variant.",
    "fig2-variants": f"Per variant, the largest class-specific drop of each unit (box: quartiles, whiskers 1.5 IQR), by layer; "
    f"dashed line: {DAMAGE_PP:g} pp.",
    "fig3-rotation": "Largest class-specific drop per unit (left) and selectivity index (right) in the unit basis and in a "
    "random rotation of the same layer's representation (same networks, same function).",
    "fig4-predictors": "Spearman r (95 % CI) per layer: selectivity vs overall drop, selectivity vs the most selective "
    "class's drop, and class-specific selectivity vs class drop over all (unit, class) pairs; unit basis.",
}


def figures(study: StudyDir, units: pd.DataFrame, predictors: pd.DataFrame, config: Mapping[str, Any]) -> None:
    """Write the four figures of :data:`CAPTIONS`."""
    import matplotlib.pyplot as plt

    unit_basis = units[units["basis"] == "unit"]
    variants = config["variants"]
    colours = {variant: plt.get_cmap("tab10")(i % 10) for i, variant in enumerate(variants)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for variant in variants:
        part = unit_basis[unit_basis["variant"] == variant]
        axes[0].scatter(part["csi"], part["overall"], s=6, alpha=0.5, color=colours[variant], label=variant)
        axes[1].scatter(part["csi"], part["preferred_class_drop"], s=6, alpha=0.5, color=colours[variant], label=variant)
    axes[0].set(xlabel="class selectivity index", ylabel="overall top-1 drop (pp)")
    axes[1].set(xlabel="class selectivity index", ylabel="drop of the most selective class (pp)")
    axes[1].legend(fontsize="small", markerscale=2)
    study.save_figure("fig1-selectivity-vs-drop", fig, title="Selectivity as a predictor of importance")

    layers = config["layers"]
    fig, axes = plt.subplots(1, len(layers), figsize=(3 * len(layers), 3.5), sharey=True)
    for ax, layer in zip(axes, layers, strict=True):
        part = unit_basis[unit_basis["layer"] == layer]
        ax.boxplot([part[part["variant"] == v]["max_class_drop"] for v in variants], showfliers=False)
        ax.set_xticks(range(1, len(variants) + 1), variants, rotation=45, fontsize="small")
        ax.axhline(DAMAGE_PP, ls="--", color="grey", lw=0.8)
        ax.set_title(layer)
    axes[0].set_ylabel("largest class drop per unit (pp)")
    study.save_figure("fig2-variants", fig, title="Class-specific damage by training variant", tight=True)

    rotated_layers = config["rotate"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, metric in enumerate(("max_class_drop", "csi")):
        data, labels = [], []
        for layer in rotated_layers:
            for basis in ("unit", "rotated"):
                data.append(units[(units["layer"] == layer) & (units["basis"] == basis)][metric])
                labels.append(f"{layer}\n{basis}")
        axes[i].boxplot(data, showfliers=False)
        axes[i].set_xticks(range(1, len(labels) + 1), labels, fontsize="small")
        axes[i].set_ylabel({"max_class_drop": "largest class drop per unit (pp)", "csi": "selectivity index"}[metric])
    study.save_figure("fig3-rotation", fig, title="Units against randomly rotated directions", tight=True)

    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    chosen = (("csi", "overall"), ("csi", "preferred_class_drop"), ("class_selectivity", "class_drop"))
    unit_rows = predictors[(predictors["basis"] == "unit") & (predictors["layer"] != "all")]
    for ax, (x, y) in zip(axes, chosen, strict=True):
        part = unit_rows[(unit_rows["x"] == x) & (unit_rows["y"] == y)]
        for j, variant in enumerate(variants):
            rows = part[part["variant"] == variant].set_index("layer").reindex(layers)
            pos = [i + 0.15 * (j - len(variants) / 2) for i in range(len(layers))]
            ax.errorbar(pos, rows["spearman_r"], yerr=[rows["spearman_r"] - rows["spearman_lo"], rows["spearman_hi"] - rows["spearman_r"]],
                        fmt="o", ms=3, color=colours[variant], label=variant)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(layers)), layers)
        ax.set_title(f"{x} vs {y}", fontsize="small")
    axes[0].set_ylabel("Spearman r (95 % CI)")
    axes[-1].legend(fontsize="small")
    study.save_figure("fig4-predictors", fig, title="How well attributes predict overall and class-specific importance", tight=True)


def summary(
    config: Mapping[str, Any], networks: pd.DataFrame, predictors: pd.DataFrame, variant_tests: pd.DataFrame,
    rotation_tests: pd.DataFrame, rotation_error: float, timings: Mapping[str, float], n_classes: int,
) -> str:
    """summary.md: the claims tested, what was measured, the tables, the figures with captions."""
    pooled = predictors[(predictors["basis"] == "unit") & (predictors["layer"] == "all")]
    claims = pooled[pooled.apply(lambda r: (r["x"], r["y"]) in {("csi", "overall"), ("csi", "preferred_class_drop"),
                                                                 ("class_selectivity", "class_drop"), ("l1", "overall"),
                                                                 ("l1", "class_drop"), ("as2020", "overall")}, axis=1)]
    unit_nets = networks[networks["basis"] == "unit"]
    lines = [
        "# Zhou et al. (2018): class-specific importance of single units",
        "",
        f"Networks: the 2020 CNN (conv width {config['width']}, fc width {config['hidden']}) on {config['dataset']} "
        f"(training subset {config['train_samples']}, evaluation subset {config['eval_samples']} test images, seeded), "
        f"{config['epochs']} epochs of {config['recipe']['optimizer']} (lr {config['recipe']['lr']}); "
        f"variants {', '.join(config['variants'])}; seeds {config['seeds']}; size `{config['size']}`.",
        "",
        "Only the abstract of the paper is available here, so each claim below is stated as tested, with what was measured.",
        "",
        *chance_warning(unit_nets, n_classes),
        "## Claim 1: ablating any single unit barely hurts overall accuracy, but can damage specific classes",
        "",
        "Measured: per network, the largest overall drop of any single-unit lesion, the largest class-specific drop, "
        f"and the share of units whose lesion drops some class by more than {DAMAGE_PP:g} pp.",
        "",
        markdown_table(unit_nets[["network", "test_acc", "max_overall_drop", "max_class_drop", "mean_max_class_drop",
                                  "damaging_units", "damaging_share"]], digits=3),
        "",
        "## Claim 2: class selectivity predicts class-specific importance, not overall importance",
        "",
        "Measured: Pearson and Spearman correlations (95 % CIs, Fisher z) of the class selectivity index (csi), the 2020 AS "
        "(as2020) and the incoming weights' L1 norm with the overall drop, with the drop of the unit's most selective class "
        "(`preferred_class_drop`), and over all (unit, class) pairs of class-specific selectivity with the class's drop; "
        "units of all layers and seeds pooled per variant (per layer: `tables/predictors.csv`, figure 4).",
        "",
        markdown_table(claims[["variant", "x", "y", "n", "pearson_r", "pearson_lo", "pearson_hi", "spearman_r", "spearman_lo",
                               "spearman_hi", "spearman_p"]], digits=3),
        "",
        "## Claim 3: batch norm and dropout change how class-specific the units' importance is",
        "",
        "Measured: each variant against plain across seeds (two-sided Mann–Whitney U on per-network values; with few seeds "
        "the smallest possible p is large, so read the means).",
        "",
        markdown_table(variant_tests, digits=3) if len(variant_tests) else "(only one variant was trained)",
        "",
        "## Claim 4: is class-specific importance aligned with the units? (random rotation)",
        "",
        f"Each rotated network's logits equal the original's up to {rotation_error:.2g} on the evaluation split (float32 "
        "rounding); its rotated directions were lesioned as units. Unit basis vs rotated basis (paired Wilcoxon over networks, "
        "Mann–Whitney over units; `damaged` is the share of units dropping some class by more than "
        f"{DAMAGE_PP:g} pp; `csi` of a rotated direction is that of its magnitude |z|, since it takes both signs):",
        "",
        markdown_table(rotation_tests, digits=3),
        "",
        *figures_and_timings(CAPTIONS, timings),
    ]
    return "\n".join(lines)
