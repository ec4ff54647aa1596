"""Figures and ``summary.md`` of the Meyes et al. (2020) study (see :mod:`lesion.studies.meyes2020_cnn`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lesion.data import Split
from lesion.engine._capture import Activations
from lesion.plots._cnn import LayerEmbeddings, LayerLesionBars, NeuronPopulation
from lesion.report import markdown_table, timings_table
from lesion.stats import class_drops
from lesion.studies._study import StudyDir
from lesion.studies.meyes2020_cnn._analysis import main_fraction

if TYPE_CHECKING:
    from lesion.studies.meyes2020_cnn._stages import Meyes2020Result



@dataclass(frozen=True)
class PaperNumbers:
    """What Meyes et al. (2020) report for one network."""

    net: str
    accuracy: float
    error_vs_drop: tuple[float, float]  # Spearman r, p
    as_vs_nh: tuple[float, float]  # Pearson r, p
    aes_vs_nh: tuple[float, float]  # Pearson r, p
    classes: tuple[int, int]  # the two classes of the neuron-population figure


PAPER = {
    "mnist": PaperNumbers("M-Net", 0.990, (0.26, 0.47), (0.28, 0.44), (-0.31, 0.38), (1, 6)),
    "kmnist": PaperNumbers("K-Net", 0.953, (0.6, 0.07), (0.30, 0.40), (0.50, 0.14), (1, 2)),
    "fashion-mnist": PaperNumbers("F-Net", 0.912, (0.48, 0.16), (0.61, 0.06), (0.68, 0.03), (1, 2)),
}


def draw_figures(
    study: StudyDir,
    result: Meyes2020Result,
    intact_maps: dict[str, np.ndarray],
    lesioned_maps: dict[str, np.ndarray],
    neuron_map: np.ndarray,
    activations: Activations,
    split: Split,
) -> None:
    """Every figure of the study, as PNG and SVG under ``figures/``."""
    import matplotlib

    matplotlib.use("Agg")
    for fraction in result.config["fractions"]:
        bars = LayerLesionBars.from_effects(result.layer_effects, fraction, title=_bars_title(result, fraction))
        study.save_figure(f"layer-lesions-{round(100 * fraction)}pct", bars.plot().figure_)
    labels = split.labels.numpy()[result.embed_samples]
    scores = result.layer_nh.set_index("layer")
    intact = LayerEmbeddings(
        intact_maps, labels, split.class_names, scores["intact"].to_dict(), title=f"{_net(result)}: activation spaces"
    )
    study.save_figure("activation-space-intact", intact.plot().figure_)
    lost = _newly_misclassified(result)
    damaged = LayerEmbeddings(
        lesioned_maps, labels, split.class_names, scores["lesioned"].to_dict(), marked=lost,
        title=f"{_net(result)} with lesion {result.shown_lesion}: activation spaces",
    )
    study.save_figure("activation-space-lesioned-conv1", damaged.plot().figure_)
    layers = result.neurons["layer"].to_numpy()
    by_layer = NeuronPopulation.by_layer(neuron_map, layers, title=f"{_net(result)}: neuron population by layer")
    study.save_figure("neurons-by-layer", by_layer.plot().figure_)
    study.save_figure("neurons-by-class", _population_grid(result, neuron_map, activations, split))


def _net(result: Meyes2020Result) -> str:
    return f"{PAPER[result.dataset].net} ({result.dataset})"


def _bars_title(result: Meyes2020Result, fraction: float) -> str:
    return f"{_net(result)}: {100 * fraction:g} % of a layer lesioned, mean of {result.config['draws']} draws"


def _newly_misclassified(result: Meyes2020Result) -> np.ndarray:
    """(n_embedded,) bool: right by the intact network, wrong after the shown lesion."""
    before, _ = result.run.correct("intact")
    after, _ = result.run.correct(result.shown_lesion)
    return (before & ~after)[result.embed_samples]


def _population_grid(result: Meyes2020Result, neuron_map: np.ndarray, activations: Activations, split: Split) -> Any:
    """Figures 5 / 6 / A.7 / A.8: per class (columns), neurons by activation, AS and AES (rows)."""
    import matplotlib.pyplot as plt


    neurons = result.neurons
    layers = neurons["layer"].to_numpy()
    columns = neurons["column"].to_numpy()
    labels = split.labels.numpy()
    chosen = PAPER[result.dataset].classes
    fig, axes = plt.subplots(3, len(chosen), figsize=(5 * len(chosen), 15), squeeze=False)
    for col, c in enumerate(chosen):
        name = split.class_names[c]
        sample = int(np.flatnonzero(labels == c)[0])
        panels = (
            NeuronPopulation.by_activation(
                neuron_map, layers, np.asarray(activations.values[sample, columns]),
                f"activation to test image {sample} (class {c}: {name})",
            ),
            NeuronPopulation.by_selectivity(
                neuron_map, layers, neurons["AS"].to_numpy(), neurons["preferred_class"].to_numpy(), c,
                f"AS: most selective for class {c} ({int((neurons['preferred_class'] == c).sum())} neurons)",
            ),
            NeuronPopulation.by_ablation(
                neuron_map, neurons["aes_scaled"].to_numpy(), neurons["aes_sign"].to_numpy(), neurons["aes_class"].to_numpy(), c,
                f"AES: lesion most affects class {c} ({int((neurons['aes_class'] == c).sum())} neurons)",
            ),
        )
        for row, panel in enumerate(panels):
            panel.plot(axes[row, col])
    fig.suptitle(f"{_net(result)}: neuron populations")
    return fig


# --- summary.md ---------------------------------------------------------------------------


def write_summary(study: StudyDir, result: Meyes2020Result) -> None:
    """``summary.md``: the paper's numbers beside ours, the per-class and per-layer tables, what ran and how long."""
    paper = PAPER[result.dataset]
    classes = result.classes
    c1, c2 = paper.classes
    n = len(result.run.labels)
    fraction = main_fraction(result.config["fractions"])
    lines = [
        f"# Meyes et al. (2020) on {result.dataset}: {paper.net}",
        "",
        _setup(result, n, fraction),
        "",
        "## The paper's numbers and ours",
        "",
        f"| quantity | paper ({paper.net}) | ours |",
        "| --- | --- | --- |",
        f"| test accuracy (top-1) | {100 * paper.accuracy:.1f} % (9,984 images) | {100 * result.accuracy:.2f} % ({n:,} images) |",
        f"| Spearman: class error vs accuracy drop under {100 * fraction:g} % layer lesions | "
        f"r = {paper.error_vs_drop[0]:.2f}, p = {paper.error_vs_drop[1]:.2f} | {_rp(result.error_vs_drop, 'spearman')} |",
        f"| Pearson: most-selective neurons per class (AS) vs class NH | "
        f"r = {paper.as_vs_nh[0]:.2f}, p = {paper.as_vs_nh[1]:.2f} | {_rp(result.as_vs_nh, 'pearson')} |",
        f"| Pearson: most-selective neurons per class (AES) vs class NH | "
        f"r = {paper.aes_vs_nh[0]:.2f}, p = {paper.aes_vs_nh[1]:.2f} | {_rp(result.aes_vs_nh, 'pearson')} |",
        f"| AS-selective neurons, class {c1} / class {c2} | {'more than 2x (F-Net)' if result.dataset == 'fashion-mnist' else 'not reported'} | "
        f"{_ratio(classes, 'n_as', c1, c2)} |",
        f"| AES-selective neurons, class {c1} / class {c2} | {'almost 3x (F-Net)' if result.dataset == 'fashion-mnist' else 'not reported'} | "
        f"{_ratio(classes, 'n_aes', c1, c2)} |",
        f"| lesion of 50 % of conv1: largest / smallest class drop | 30.9 pp class 1 / 0.4 pp class 2 (K-Net, one draw) | "
        f"{_extremes(result)} |",
        f"| NH rises along the layers (intact) | yes (K-Net, Figure 3) | {_rises(result)} |",
        "",
        "## Per class",
        "",
        classes.assign(
            accuracy=lambda d: (100 * d["accuracy"]).round(2),
            error=lambda d: (100 * d["error"]).round(2),
            drop=lambda d: (100 * d["drop"]).round(2) + 0.0,
            nh=lambda d: d["nh"].round(3),
        ).rename(columns={"accuracy": "accuracy %", "error": "error %", "drop": "drop pp (sum over layers)"}).pipe(markdown_table),
        "",
        f"## Mean class accuracy change per layer ({100 * fraction:g} % lesioned, pp)",
        "",
        _layer_table(result, fraction),
        "",
        f"## Neighbourhood hit (k = 6) per layer, {len(result.embed_samples):,} embedded test images",
        "",
        markdown_table(result.layer_nh.round(3)),
        "",
        "## Stage wall times",
        "",
        timings_table(study.timings),
        "",
        "## Figures",
        "",
        *_figure_list(study),
        "",
    ]
    study.write_summary("\n".join(lines))


def _setup(result: Meyes2020Result, n: int, fraction: float) -> str:
    config = result.config
    trained = (
        f"trained here for {config['epochs']} epoch{'s' * (config['epochs'] != 1)} (SGD lr 0.001, momentum 0.9, batch 64, seed {config['seed']})"
        if config["checkpoint_sha256"] is None
        else f"loaded from a checkpoint (sha256 {config['checkpoint_sha256'][:12]}...)"
    )
    return (
        f"The CNN (width {config['width']}) was {trained}. Evaluated on {n:,} test images (the paper: 9,984 of "
        f"10,000, test batch 32 with the last batch dropped). Layer lesions: {config['draws']} random draws "
        f"without replacement (seed {config['seed']}) of {', '.join(f'{100 * p:g} %' for p in config['fractions'])} "
        "of each of conv1, conv2, conv3, fc1, fc2, out; the correlation uses the sum over layers of a class's "
        f"mean change at {100 * fraction:g} % (the stacked bar's height). Single-unit lesions of the "
        f"{len(result.units):,} units of conv1-fc2 give the AES ({len(result.neurons):,} neurons; a kernel's AES "
        f"is shared by its spatial neurons). UMAP embeddings (horizontal and vertical) use "
        f"{len(result.embed_samples):,} test images (a seeded random subset); class NH for the correlations is "
        "measured in the embedding of the test images themselves (the `input` panel). Figure 4's lesion: "
        f"`{result.shown_lesion}` (the first random draw of conv1)."
    )


def _rp(correlation: Any, kind: str) -> str:
    r, p = getattr(correlation, f"{kind}_r"), getattr(correlation, f"{kind}_p")
    return f"r = {r:.2f}, p = {p:.2f} (n = {correlation.n})"


def _ratio(classes: Any, column: str, c1: int, c2: int) -> str:
    a, b = int(classes.loc[classes["class"] == c1, column].iloc[0]), int(classes.loc[classes["class"] == c2, column].iloc[0])
    return f"{a:,} / {b:,}" + (f" = {a / b:.2f}x" if b else "")


def _extremes(result: Meyes2020Result) -> str:
    drops = -100 * result.shown_changes.drop("all") + 0.0
    worst, least = drops.idxmax(), drops.idxmin()
    return f"{drops[worst]:.1f} pp {worst} / {drops[least]:.1f} pp {least} (draw 0)"


def _rises(result: Meyes2020Result) -> str:
    values = result.layer_nh["intact"].to_numpy()
    first, last = values[0], values[-1]
    return f"{'yes' if last > first else 'no'}: input {first:.3f} -> out {last:.3f}"


def _layer_table(result: Meyes2020Result, fraction: float) -> str:

    drops = class_drops(result.layer_effects, fraction)
    return markdown_table(((100 * drops).round(2) + 0.0).reset_index().rename(columns={"class_name": "class"}))


def _figure_list(study: StudyDir) -> list[str]:
    what = {
        "layer-lesions": "Figures 2 / A.1 / A.2: stacked per-layer mean accuracy change per class",
        "activation-space-intact": "Figure 3 / A.3 / A.5: horizontal reduction per layer with NH",
        "activation-space-lesioned-conv1": "Figure 4 / A.4 / A.6: the same after the conv1 lesion, newly misclassified in black",
        "neurons-by-layer": "Figure 1: vertical reduction, neurons coloured by layer",
        "neurons-by-class": "Figures 5 / 6 / A.7 / A.8: neurons by activation, AS and AES for two classes",
    }
    lines = []
    for name, (png, *_) in study.figures.items():
        label = next(text for prefix, text in what.items() if name.startswith(prefix))
        lines.append(f"- `figures/{png.name}` (+ .svg): {label}")
    return lines
