"""Figures and summary.md of the Morcos 2018 study."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from lesion.report import figures_and_timings, markdown_table
from lesion.studies._study import StudyDir
from lesion.studies._variants import chance_warning

CAPTIONS = {
    "fig1-curves": "Top-1 accuracy (relative to the intact network) against the fraction of hidden units ablated in random "
    "orders (mean over orders and seeds), one line per label-noise fraction; rows: architecture and split, columns: zero "
    "and mean ablation; plain variant.",
    "fig2-area-vs-gap": "Area under the random-order ablation curve (relative accuracy, training subset) against the "
    "generalisation gap (train − test accuracy) of every network; marker: variant and architecture, colour: label-noise "
    "fraction (dark: 0, yellow: 1).",
    "fig3-orders": "Area under the curve for each ablation order (selectivity and L1 norm, high→low and low→high) against "
    "random, mean over networks, per split and method.",
    "fig4-noise": "Top-1 accuracy (relative to noise-free) on the training subset against the noise scale (× each unit's "
    "activation std), one line per label-noise fraction; plain variant.",
}


def figures(
    study: StudyDir, networks: pd.DataFrame, curves: pd.DataFrame, areas: pd.DataFrame, noise: pd.DataFrame,
    config: Mapping[str, Any],
) -> None:
    """Write the figures of :data:`CAPTIONS`."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("viridis")
    fractions = sorted(networks["label_noise"].unique())
    colour = {f: cmap(i / max(1, len(fractions) - 1)) for i, f in enumerate(fractions)}
    plain = networks[networks["variant"] == networks["variant"].iloc[0]]
    panels = [(arch, split) for arch in config["architectures"] for split in ("train", "test")]
    fig, axes = plt.subplots(len(panels), 2, figsize=(10, 3 * len(panels)), squeeze=False)
    random = curves[curves["order"] == "random"].merge(networks[["network", "architecture", "label_noise"]], on="network")
    random = random.assign(relative=random["value"] / random.groupby(["network", "split", "method", "curve"])["value"].transform("first"))
    for i, (arch, split) in enumerate(panels):
        for j, method in enumerate(("zero", "mean")):
            ax = axes[i, j]
            part = random[(random["architecture"] == arch) & (random["split"] == split) & (random["method"] == method)
                          & random["network"].isin(plain["network"])]
            for fraction, group in part.groupby("label_noise"):
                mean = group.groupby("fraction")["relative"].agg(["mean", "std"]).fillna(0)
                ax.plot(mean.index, mean["mean"], color=colour[fraction], label=f"{fraction:g}")
                ax.fill_between(mean.index, mean["mean"] - mean["std"], mean["mean"] + mean["std"], color=colour[fraction], alpha=0.15)
            ax.set(title=f"{arch}, {split}, {method} ablation", xlabel="fraction of units ablated", ylabel="relative top-1")
    axes[0, 1].legend(title="label noise", fontsize="small")
    study.save_figure("fig1-curves", fig, title="Cumulative ablation", tight=True)

    fig, ax = plt.subplots(figsize=(5.5, 4))
    merged = areas[(areas["curve"] == "random") & (areas["split"] == "train") & (areas["method"] == "zero")].merge(networks, on="network")
    markers = dict(zip(config["variants"], "osD^v", strict=False))
    for (variant, arch), group in merged.groupby(["variant", "architecture"]):
        ax.scatter(group["gap"], group["auc_relative"], marker=markers.get(variant, "o"), c=[colour[f] for f in group["label_noise"]],
                   label=f"{arch} {variant}", edgecolors="k", linewidths=0.4)
    ax.set(xlabel="generalisation gap (train − test top-1)", ylabel="area under ablation curve (relative)")
    ax.legend(fontsize="small")
    study.save_figure("fig2-area-vs-gap", fig, title="Reliance on single directions vs generalisation", tight=True)

    fig, ax = plt.subplots(figsize=(8, 4))
    summary = areas.groupby(["split", "method", "curve"])["auc_relative"].mean().unstack("curve")
    summary.plot.bar(ax=ax, rot=0)
    ax.set(ylabel="area under curve (relative)", xlabel="split, method")
    ax.legend(fontsize="small", ncol=3)
    study.save_figure("fig3-orders", fig, title="Ablation orders against random", tight=True)

    fig, axes = plt.subplots(1, len(config["architectures"]), figsize=(5 * len(config["architectures"]), 3.5), squeeze=False)
    tagged = noise.merge(networks[["network", "architecture", "label_noise"]], on="network")
    tagged = tagged[(tagged["split"] == "train") & tagged["network"].isin(plain["network"])]
    for ax, arch in zip(axes[0], config["architectures"], strict=True):
        for fraction, group in tagged[tagged["architecture"] == arch].groupby("label_noise"):
            mean = group.groupby(["network", "scale"])["accuracy"].mean().unstack("scale")
            relative = (mean.div(mean.iloc[:, 0], axis=0)).mean()
            ax.plot(relative.index, relative.to_numpy(), marker="o", color=colour[fraction], label=f"{fraction:g}")
        ax.set(title=arch, xlabel="noise scale (× unit std)", ylabel="relative top-1 (train)", xscale="symlog")
    axes[0, -1].legend(title="label noise", fontsize="small")
    study.save_figure("fig4-noise", fig, title="Noise perturbation", tight=True)


def summary(
    config: Mapping[str, Any], networks: pd.DataFrame, areas: pd.DataFrame, relation: pd.DataFrame, orders: pd.DataFrame,
    timings: Mapping[str, float], n_classes: int,
) -> str:
    """summary.md: what was trained, the headline relation, orders vs random, noise, figures."""
    random_train = areas[(areas["curve"] == "random") & (areas["split"] == "train")].pivot(
        index="network", columns="method", values="auc_relative").add_prefix("auc_train_")
    table = networks.merge(random_train, left_on="network", right_index=True)
    zero_vs_mean = areas[areas["curve"] == "random"].groupby(["split", "method"])["auc_relative"].mean().unstack("method")
    lines = [
        "# Morcos et al. (2018): reliance on single directions and generalisation",
        "",
        f"Networks: {', '.join(f'{a} on {d}' for a, d in config['datasets'].items())} (MLP hidden {config['mlp_hidden']}×2; CNN "
        f"width {config['cnn_width']}, fc {config['cnn_hidden']}), trained {config['epochs']} epochs with Adam (lr "
        f"{config['recipe']['lr']}) on a seeded subset of {config['train_samples']} training images with label-noise fractions "
        f"{config['fractions']} (exactly round(f·N) labels redrawn uniformly from all classes), variants {config['variants']}, "
        f"seeds {config['seeds']}; evaluation on a subset of {config['eval_samples']} test images; size `{config['size']}`.",
        "Units ablated: fc1 and fc2 pooled (at the batch norm's output in BN variants), in steps of 1/"
        f"{config['steps']} of them, in {len(config['orders'])} random orders and by selectivity and L1 norm.",
        "",
        "## Networks",
        "",
        *chance_warning(networks[networks["label_noise"] == 0], n_classes),
        markdown_table(table, digits=3),
        "",
        "## Headline: networks that memorise rely more on single directions",
        "",
        "Measured: across networks, the correlation (95 % CI) of the generalisation gap with the area under the random-order "
        "ablation curve (`auc`: raw top-1; `auc_relative`: relative to the intact network) and, as method `noise`, with the "
        "area under the noise curve. The paper's claim predicts negative correlations.",
        "",
        markdown_table(relation[["architecture", "split", "method", "measure", "n", "pearson_r", "pearson_lo", "pearson_hi",
                                 "spearman_r", "spearman_p"]], digits=3),
        "",
        "## Zero against mean ablation",
        "",
        "Mean area under the random-order curves (relative); the paper found mean ablation more damaging (a smaller area).",
        "",
        markdown_table(zero_vs_mean.reset_index(), digits=3),
        "",
        "## Is ablating by selectivity more damaging than random? (the paper: no)",
        "",
        "Each order's area against random, paired over networks (Wilcoxon signed-rank):",
        "",
        markdown_table(orders, digits=3),
        "",
        *figures_and_timings(CAPTIONS, timings),
    ]
    return "\n".join(lines)


