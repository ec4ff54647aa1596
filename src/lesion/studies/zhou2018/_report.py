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
    "its most selective class (right) when it alone is lesioned, pp; unit basis, all layers, colour by variant; one row per "
    "architecture.",
    "fig2-variants": f"Per variant, the largest class-specific drop of each unit (box: quartiles, whiskers 1.5 IQR), by layer; "
    f"dashed line: {DAMAGE_PP:g} pp; one row per architecture.",
    "fig3-rotation": "Largest class-specific drop per unit (left) and selectivity index (right) in the unit basis and in a "
    "random rotation of the same layer's representation (same networks, same function), per architecture and layer.",
    "fig4-predictors": "Spearman r (95 % CI) per layer: selectivity vs overall drop, selectivity vs the most selective "
    "class's drop, and class-specific selectivity vs class drop over all (unit, class) pairs; unit basis; one row per "
    "architecture.",
}


def figures(study: StudyDir, units: pd.DataFrame, predictors: pd.DataFrame, config: Mapping[str, Any]) -> None:
    """Write the four figures of :data:`CAPTIONS`."""
    import matplotlib.pyplot as plt

    unit_basis = units[units["basis"] == "unit"]
    variants = config["variants"]
    architectures = config["architectures"]
    rows = len(architectures)
    colours = {variant: plt.get_cmap("tab10")(i % 10) for i, variant in enumerate(variants)}
    fig, axes = plt.subplots(rows, 2, figsize=(10, 4 * rows), squeeze=False)
    for r, architecture in enumerate(architectures):
        for variant in variants:
            part = unit_basis[(unit_basis["architecture"] == architecture) & (unit_basis["variant"] == variant)]
            axes[r, 0].scatter(part["csi"], part["overall"], s=6, alpha=0.5, color=colours[variant], label=variant)
            axes[r, 1].scatter(part["csi"], part["preferred_class_drop"], s=6, alpha=0.5, color=colours[variant], label=variant)
        axes[r, 0].set(xlabel="class selectivity index", ylabel=f"{architecture}: overall top-1 drop (pp)")
        axes[r, 1].set(xlabel="class selectivity index", ylabel=f"{architecture}: drop of the most selective class (pp)")
    axes[0, 1].legend(fontsize="small", markerscale=2)
    study.save_figure("fig1-selectivity-vs-drop", fig, title="Selectivity as a predictor of importance")

    columns = max(len(settings["layers"]) for settings in architectures.values())
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 3.5 * rows), sharey=True, squeeze=False)
    for r, (architecture, settings) in enumerate(architectures.items()):
        for c, ax in enumerate(axes[r]):
            if c >= len(settings["layers"]):
                ax.set_visible(False)
                continue
            layer = settings["layers"][c]
            part = unit_basis[(unit_basis["architecture"] == architecture) & (unit_basis["layer"] == layer)]
            ax.boxplot([part[part["variant"] == v]["max_class_drop"] for v in variants], showfliers=False)
            ax.set_xticks(range(1, len(variants) + 1), variants, rotation=45, fontsize="small")
            ax.axhline(DAMAGE_PP, ls="--", color="grey", lw=0.8)
            ax.set_title(f"{architecture} {layer}", fontsize="small")
        axes[r, 0].set_ylabel("largest class drop per unit (pp)")
    study.save_figure("fig2-variants", fig, title="Class-specific damage by training variant", tight=True)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for i, metric in enumerate(("max_class_drop", "csi")):
        data, labels = [], []
        for architecture, settings in architectures.items():
            for layer in settings["rotate"]:
                for basis in ("unit", "rotated"):
                    data.append(units[(units["architecture"] == architecture) & (units["layer"] == layer) & (units["basis"] == basis)][metric])
                    labels.append(f"{architecture} {layer}\n{basis}")
        axes[i].boxplot(data, showfliers=False)
        axes[i].set_xticks(range(1, len(labels) + 1), labels, fontsize="x-small")
        axes[i].set_ylabel({"max_class_drop": "largest class drop per unit (pp)", "csi": "selectivity index"}[metric])
    study.save_figure("fig3-rotation", fig, title="Units against randomly rotated directions", tight=True)

    fig, axes = plt.subplots(rows, 3, figsize=(14, 4 * rows), sharey=True, squeeze=False)
    chosen = (("csi", "overall"), ("csi", "preferred_class_drop"), ("class_selectivity", "class_drop"))
    unit_rows = predictors[(predictors["basis"] == "unit") & (predictors["layer"] != "all")]
    for r, (architecture, settings) in enumerate(architectures.items()):
        layers = settings["layers"]
        for ax, (x, y) in zip(axes[r], chosen, strict=True):
            part = unit_rows[(unit_rows["architecture"] == architecture) & (unit_rows["x"] == x) & (unit_rows["y"] == y)]
            for j, variant in enumerate(variants):
                found = part[part["variant"] == variant].set_index("layer").reindex(layers)
                pos = [i + 0.15 * (j - len(variants) / 2) for i in range(len(layers))]
                ax.errorbar(pos, found["spearman_r"],
                            yerr=[found["spearman_r"] - found["spearman_lo"], found["spearman_hi"] - found["spearman_r"]],
                            fmt="o", ms=3, color=colours[variant], label=variant)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xticks(range(len(layers)), layers, fontsize="small")
            ax.set_title(f"{architecture}: {x} vs {y}", fontsize="small")
        axes[r, 0].set_ylabel("Spearman r (95 % CI)")
    axes[0, -1].legend(fontsize="small")
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
        f"Networks on {config['dataset']} (training subset {config['train_samples']}, evaluation subset "
        f"{config['eval_samples']} test images, seeded), {config['recipe']['optimizer']} (lr {config['recipe']['lr']}); "
        f"variants {', '.join(config['variants'])}; size `{config['size']}`:",
        "",
        *(f"- {_describe(architecture, settings)}" for architecture, settings in config["architectures"].items()),
        "",
        "Only the abstract of the paper is available here, so each claim below is stated as tested, with what was measured.",
        "",
        *chance_warning(unit_nets, n_classes),
        "## Claim 1: ablating any single unit barely hurts overall accuracy, but can damage specific classes",
        "",
        "Measured: per network, the largest overall drop of any single-unit lesion, the largest class-specific drop, "
        f"and the share of units whose lesion drops some class by more than {DAMAGE_PP:g} pp.",
        "",
        *_architecture_comparison(unit_nets),
        markdown_table(unit_nets[["network", "architecture", "test_acc", "max_overall_drop", "max_class_drop", "mean_max_class_drop",
                                  "damaging_units", "damaging_share"]], digits=3),
        "",
        "## Claim 2: class selectivity predicts class-specific importance, not overall importance",
        "",
        "Measured: Pearson and Spearman correlations (95 % CIs, Fisher z) of the class selectivity index (csi), the 2020 AS "
        "(as2020) and the incoming weights' L1 norm with the overall drop, with the drop of the unit's most selective class "
        "(`preferred_class_drop`), and over all (unit, class) pairs of class-specific selectivity with the class's drop; "
        "units of all layers and seeds pooled per architecture and variant (per layer: `tables/predictors.csv`, figure 4).",
        "",
        markdown_table(claims[["architecture", "variant", "x", "y", "n", "pearson_r", "pearson_lo", "pearson_hi", "spearman_r", "spearman_lo",
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
        *(["The VGG's rotated conv is conv7, not its last conv8 as in the CNN: the layer that would take Qᵀ after conv8 is "
           "`classifier.0`, outside `features`, where the rotation is not built; conv7's rotation (after its batch norm and "
           "ReLU, before conv8) is exact like every other.", ""] if "vgg" in config["architectures"] else []),
        markdown_table(rotation_tests, digits=3),
        "",
        *figures_and_timings(CAPTIONS, timings),
    ]
    return "\n".join(lines)


def _describe(architecture: str, settings: Mapping[str, Any]) -> str:
    """One line naming an architecture's networks, sizes, epochs, seeds and rotated layers."""
    if architecture == "cnn":
        network = f"the 2020 CNN (conv width {settings['width']}, fc width {settings['hidden']})"
    else:
        network = (f"VGG-11 at 28 px (`vgg11`/`vgg11_bn`, conv widths / {settings['width_divisor']}, classifier width "
                   f"{settings['classifier_width']}; dropout only in the dropout variants)")
    epochs = f"{settings['epochs']} epoch{'' if settings['epochs'] == 1 else 's'}"
    return (f"`{architecture}`: {network}, {epochs}, seeds {settings['seeds']}, layers "
            f"{', '.join(settings['layers'])}, rotated {', '.join(settings['rotate'])}")


def _architecture_comparison(unit_nets: pd.DataFrame) -> list[str]:
    """CNN against VGG: per architecture and variant, the means over seeds of the claim-1 measures (when both ran)."""
    if unit_nets["architecture"].nunique() < 2:
        return []
    table = unit_nets.groupby(["architecture", "variant"], sort=True)[
        ["test_acc", "max_overall_drop", "max_class_drop", "mean_max_class_drop", "damaging_share"]
    ].mean().reset_index()
    return ["Architectures compared (means over seeds):", "", markdown_table(table, digits=3), "", "Per network:", ""]
