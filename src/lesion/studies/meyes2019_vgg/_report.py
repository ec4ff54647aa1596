"""Figures and ``summary.md`` of the VGG study (see :mod:`lesion.studies.meyes2019_vgg`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lesion.plots._vgg import (
    ClassDepthProfile,
    DepthProfile,
    LesionPointComparison,
    SortedClassDrops,
    recovery_figure,
)
from lesion.report import markdown_table, timings_table
from lesion.studies._study import StudyDir
from lesion.studies.meyes2019_vgg import _analysis as analysis
from lesion.studies.meyes2019_vgg._analysis import RECOVERY_FRACTION
from lesion.train import RecoveryResult

if TYPE_CHECKING:
    from lesion.studies.meyes2019_vgg._stages import Meyes2019VggResult

SECTIONS = (
    "## Setup",
    "## Which layers matter most",
    "## Spread across layers",
    "## Class-specific effects",
    "## Recovery after one epoch",
    "## Iterative recovery",
    "## Batch norm: where the lesion is applied",
    "## Figures",
    "## Timings",
)


# --- figures ------------------------------------------------------------------------------


def draw_figures(study: StudyDir, result: Meyes2019VggResult) -> None:
    """Every figure of the study, as PNG and SVG under ``figures/``."""
    import matplotlib

    matplotlib.use("Agg")
    point = result.config["lesion_point"]
    fractions = result.config["fractions"]
    shown = analysis.shown_fractions(fractions)
    for number, metric in (("14", "top1"), ("15", "top5")):
        study.save_figure(f"fig{number}-depth-{metric}", _panels(fractions, lambda p, ax, m=metric: DepthProfile.from_table(result.depth, point, m, p).plot(ax)))
    for metric in ("top5", "top1"):
        draw = lambda p, ax, m=metric: ClassDepthProfile.from_table(result.depth, point, m, p, result.classes).plot(ax)  # noqa: E731
        study.save_figure(f"fig16-classes-{metric}", _panels(shown, draw))
        study.save_figure(f"fig17-class-drops-{metric}", _class_drops_grid(result, metric, shown))
    if result.recovery:
        study.save_figure("fig18-recovery-instances", recovery_figure(result.recovery, "instances"))
        study.save_figure("fig19-recovery-iterative", recovery_figure(result.recovery, "iterative"))
    if {"conv", "block"} <= set(result.points.columns):
        p = result.config["compare_fraction"]
        study.save_figure("lesion-points", LesionPointComparison(result.points, "top1", p).plot().figure_)


def _panels(fractions: Sequence[float], draw: Any) -> Any:
    """One panel per fraction, side by side; ``draw(fraction, ax)`` fills each."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(fractions), figsize=(5 * len(fractions), 3.6), squeeze=False)
    for ax, p in zip(axes[0], fractions, strict=True):
        draw(p, ax)
    fig.tight_layout()
    return fig


def _class_drops_grid(result: Meyes2019VggResult, metric: str, fractions: Sequence[float]) -> Any:
    """Figure 17: the most and the least important layer (rows) at each shown fraction (columns)."""
    import matplotlib.pyplot as plt

    layers = _extreme_layers(result)
    fig, axes = plt.subplots(len(layers), len(fractions), figsize=(5 * len(fractions), 3.3 * len(layers)), squeeze=False)
    for row, layer in zip(axes, layers, strict=True):
        for ax, p in zip(row, fractions, strict=True):
            SortedClassDrops.from_table(result.depth, result.config["lesion_point"], metric, p, layer).plot(ax)
    fig.tight_layout()
    return fig


def _extreme_layers(result: Meyes2019VggResult) -> list[str]:
    """The layers with the largest and the smallest mean top-1 drop at the reference fraction."""
    names = result.ranking["layer"].tolist()
    return list(dict.fromkeys([names[0], names[-1]]))


# --- summary ------------------------------------------------------------------------------


def write_summary(study: StudyDir, result: Meyes2019VggResult) -> None:
    """``summary.md``: the study's findings, one section per question, numbers from the tables."""
    parts = [
        f"# Meyes et al. (2019), VGG study: reproduction on {_source(result)}\n",
        _setup(result),
        _layers_section(result),
        _spread_section(result),
        _class_section(result),
        _recovery_section(result, "instances"),
        _recovery_section(result, "iterative"),
        _point_section(result),
        "## Figures\n\n" + "\n".join(f"- `{paths[0].relative_to(study.out)}`" for paths in study.figures.values()) + "\n",
        "## Timings\n\n" + timings_table(study.timings) + "\n",
    ]
    study.write_summary("\n".join(parts))


def _source(result: Meyes2019VggResult) -> str:
    c = result.config
    if c["small"]:
        return f"a small {c['model']} (width / {c['width_divisor']}, 28 px) trained on {c['data']}"
    return f"{c['model']} with the given weights on an image folder"


def _pct(p: float) -> str:
    return f"{100 * p:g} %"


def _setup(result: Meyes2019VggResult) -> str:
    c = result.config
    n = len(result.run.labels)
    point = "conv output (the paper's method)" if c["lesion_point"] == "conv" else "block output after BN + ReLU"
    lines = [
        "## Setup\n",
        f"- Network: {_source(result)}; intact top-1 {100 * result.accuracy['top1']:.2f} %, "
        f"top-5 {100 * result.accuracy['top5']:.2f} % on {n} evaluation images (seeded subset).",
        f"- Lesions: groups of similar filters (every filter once the reference; nearest filters by Euclidean "
        f"distance of the L2-normalised weights) of {', '.join(_pct(p) for p in c['fractions'])} of every conv layer, "
        f"lesioned at the {point}.",
        "- Drops are intact minus lesioned accuracy in percentage points (pp; positive = damage), averaged over the "
        "references of a layer. Lower / upper std: root-mean-square deviation of the drops below / above the mean.",
    ]
    if c["recovery"]:
        lines.append(
            f"- Recovery: {_pct(RECOVERY_FRACTION)} of a layer's filters, conv output lesioned, earlier layers frozen "
            f"(BN statistics included); {c['instances']} instances x {c['recovery_epochs']} epochs, and up to "
            f"{c['max_iterations']} iterations (>= {c['recovery_epochs']} epochs each, stop when top-5 improved < 0.05 pp "
            f"over 2 epochs, <= {c['max_epochs']}); trained on {c['recovery_samples'] or 'all'} training images, "
            "measured on the evaluation images."
        )
    return "\n".join(lines) + "\n"


def _layers_section(result: Meyes2019VggResult) -> str:
    p = analysis.reference_fraction(result.config["fractions"])
    rank = result.ranking
    top5 = analysis.ranked_layers(result.depth, result.config["lesion_point"], p, "top5").set_index("layer")["mean"]
    shown = rank[["layer", "mean", "lower_std", "upper_std"]].assign(top5_mean=rank["layer"].map(top5))
    shown.columns = ["layer", "top-1 drop (pp)", "lower std", "upper std", "top-5 drop (pp)"]
    first, second = rank["layer"].iloc[0], rank["layer"].iloc[min(1, len(rank) - 1)]
    return (
        "## Which layers matter most\n\n"
        f"At {_pct(p)} of each layer's filters the largest mean top-1 drops are in **{first}** and **{second}** "
        f"(the paper, on ImageNet's VGG-19-BN: features.33 and features.46). Layers by mean top-1 drop:\n\n"
        + markdown_table(shown, 2) + "\n"
    )


def _spread_section(result: Meyes2019VggResult) -> str:
    rows = analysis.overall(result.depth)
    rows = rows[(rows["point"] == result.config["lesion_point"]) & (rows["metric"] == "top1")]
    lines = ["## Spread across layers\n", "Mean top-1 drop per layer, by fraction (pp):\n"]
    crossing = rows.assign(crossing=rows["mean"] - rows["lower_std"] < 0)
    stats = crossing.groupby("fraction").agg(
        smallest=("mean", "min"), largest=("mean", "max"), spread=("mean", "std"), crossing=("crossing", "sum")
    ).reset_index()
    stats["fraction"] = stats["fraction"].map(_pct)
    stats.columns = ["fraction", "smallest layer mean", "largest layer mean", "std across layers", "layers whose lower band crosses 0"]
    lines.append(markdown_table(stats, 2))
    lines.append(
        "\nA lower band below 0 means that some lesions of that layer *increased* top-1 accuracy (the paper: the red "
        "area crossing the zero line in Figure 14)."
    )
    growth = _growth(rows)
    if growth is not None:
        lines.append(f"\nFrom {growth[0]} to {growth[1]} the mean drop grew most in {growth[2]} and least in {growth[3]}.")
    return "\n".join(lines) + "\n"


def _growth(rows: pd.DataFrame) -> tuple[str, str, str, str] | None:
    """(from, to, layers that grew most, least) between 10 % and 25 % where both were planned."""
    shown = analysis.shown_fractions(rows["fraction"].unique().tolist())
    if len(shown) < 2:
        return None
    wide = rows.pivot_table(index="layer", columns="fraction", values="mean")
    change = (wide[shown[1]] - wide[shown[0]]).sort_values(ascending=False)
    fmt = lambda s: ", ".join(f"{name} (+{v:.2f} pp)" if v >= 0 else f"{name} ({v:.2f} pp)" for name, v in s.items())  # noqa: E731
    return _pct(shown[0]), _pct(shown[1]), fmt(change.head(3)), fmt(change.tail(2))


def _class_section(result: Meyes2019VggResult) -> str:
    point, p = result.config["lesion_point"], analysis.reference_fraction(result.config["fractions"])
    lines = ["## Class-specific effects\n"]
    rows = result.depth[(result.depth["point"] == point) & (result.depth["metric"] == "top1") & np.isclose(result.depth["fraction"], p)]
    wide = rows.pivot_table(index="layer", columns="class", values="mean")
    deviation = wide.drop(columns="all").sub(wide["all"], axis=0)
    layer, cls = deviation.abs().stack().idxmax()
    lines.append(
        f"At {_pct(p)}, the class whose mean top-1 drop departs most from the average is **{cls}** after lesions of "
        f"**{layer}**: {wide.loc[layer, cls]:.2f} pp against {wide.loc[layer, 'all']:.2f} pp on all images."
    )
    for layer in _extreme_layers(result):
        drops = analysis.class_drops(result.depth, point, "top5", p, layer)
        drops1 = analysis.class_drops(result.depth, point, "top1", p, layer)
        lines.append(
            f"\n- {layer}: top-1 drop ranges from {drops1.iloc[-1]:.2f} pp ({drops1.index[-1]}) to {drops1.iloc[0]:.2f} pp "
            f"({drops1.index[0]}); {int((drops1 < 0).sum())} of {len(drops1)} classes gain top-1 on average, "
            f"{int((drops < 0).sum())} gain top-5."
        )
    return "\n".join(lines) + "\n"


def _by_protocol(result: Meyes2019VggResult, protocol: str) -> list[RecoveryResult]:
    return [r for r in result.recovery if r.protocol == protocol]


def _recovery_section(result: Meyes2019VggResult, protocol: str) -> str:
    """The section of one recovery protocol (or that recovery was not run)."""
    title = {"instances": "## Recovery after one epoch\n", "iterative": "## Iterative recovery\n"}[protocol]
    chosen = _by_protocol(result, protocol)
    if not chosen:
        return "\n".join([title, "Recovery was not run (recovery=False).\n"])
    body = _instances_lines if protocol == "instances" else _iterative_lines
    return "\n".join([title, *body(chosen)]) + "\n"


def _instances_lines(chosen: list[RecoveryResult]) -> list[str]:
    lines, rows = [], []
    for r in chosen:
        means = 100 * r.history.groupby("epoch")[["top1", "top5"]].mean()
        last = int(means.index.max())
        for metric in ("top5", "top1"):
            at = means[metric]
            rows.append(
                {
                    "layer": r.layer, "metric": metric, "instances": r.history["run"].nunique(),
                    "intact": 100 * r.baseline[metric], "lesioned": at[0], "after 1 epoch": at[1],
                    f"after {last}": at[last], "gap after 1 (pp)": 100 * r.baseline[metric] - at[1],
                }
            )
    frame = pd.DataFrame(rows)
    lines.append("Mean accuracy (%) over the instances, each a different random 25 % group:\n")
    lines.append(markdown_table(frame, 2))
    gaps = frame.groupby("metric")["gap after 1 (pp)"].max()
    lines.append(
        f"\nAfter one recovery epoch the largest gap to the intact network over the recovered layers is "
        f"{gaps['top5']:.2f} pp of top-5 and {gaps['top1']:.2f} pp of top-1 (negative: above the intact network). "
        "The paper, on ImageNet: < 1 pp of top-5 after one epoch, little gained by later epochs, the original "
        "accuracy never exceeded."
    )
    return lines


def _iterative_lines(chosen: list[RecoveryResult]) -> list[str]:
    lines, rows = [], []
    for r in chosen:
        h = r.history
        ends = h.groupby("run").tail(1)
        final = ends.iloc[-1]
        rows.append(
            {
                "layer": r.layer, "iterations": h["run"].nunique(), "epochs": int(h["step"].max()),
                "dead filters": f"{int(final['n_dead'])} ({100 * final['dead_fraction']:.0f} %)",
                "top-5 intact": 100 * r.baseline["top5"], "top-5 final": 100 * final["top5"],
                "top-1 intact": 100 * r.baseline["top1"], "top-1 final": 100 * final["top1"],
                "worst top-1 just after a lesion": 100 * h.loc[h["epoch"] == 0, "top1"].min(),
            }
        )
    lines.append("25 % of the layer's filters drawn per iteration, with replacement, so the dead set grows slowly:\n")
    lines.append(markdown_table(pd.DataFrame(rows), 2))
    lines.append(
        "\nThe paper: after the last iteration ~80 % of the filters were dead in either layer and the network still "
        "recovered most of its top-5 accuracy, the gap to the original growing slightly with each iteration."
    )
    return lines


def _point_section(result: Meyes2019VggResult) -> str:
    lines = [
        "## Batch norm: where the lesion is applied\n",
        "The paper sets a filter's weights and bias to 0. In a VGG with batch norm the conv is followed by "
        "BN and ReLU, so the filter's block then outputs ReLU(β - γ·μ/√(σ²+ε)), BN's shift of a zero input: a "
        "constant per channel, not 0. Lesioning the **conv output** (`features.N`) is the paper's literal method; "
        "lesioning the **block output** (the ReLU, `features.N+2`) silences the filter.",
    ]
    points = result.points
    if not {"conv", "block"} <= set(points.columns):
        return "\n".join([*lines, "\nOnly one lesion point was measured (compare_fraction=None).\n"])
    p = result.config["compare_fraction"]
    shown = points[["layer", "conv", "block", "block_minus_conv"]].copy()
    shown.columns = ["layer", "conv output (pp)", "block output (pp)", "block - conv (pp)"]
    diff = points["block_minus_conv"]
    lines += [
        f"\nMean top-1 drop per layer at {_pct(p)} under both lesion points:\n",
        markdown_table(shown, 2),
        f"\nAveraged over layers the block lesion costs {diff.mean():+.2f} pp more top-1 than the conv lesion "
        f"(largest difference {diff.abs().max():.2f} pp in {points.loc[diff.abs().idxmax(), 'layer']}).",
    ]
    return "\n".join(lines) + "\n"
