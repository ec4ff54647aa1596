"""Figures of Meyes et al. (2020): per-layer lesion bars, layer embeddings, neuron populations.

Display objects: build from computed values (``from_*`` / ``by_*``), draw with ``plot``, which
keeps ``ax_`` (or ``axes_``) and ``figure_``. matplotlib is imported only when drawing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: Colours of the layers (tab10), of classes (tab10) and of neurons outside the coloured class.
PALETTE = (
    (0.122, 0.467, 0.706), (1.0, 0.498, 0.055), (0.173, 0.627, 0.173), (0.839, 0.153, 0.157),
    (0.580, 0.404, 0.741), (0.549, 0.337, 0.294), (0.890, 0.467, 0.761), (0.498, 0.498, 0.498),
    (0.737, 0.741, 0.133), (0.090, 0.745, 0.812),
)
GREY = (0.85, 0.85, 0.85)
HURT, HELPED = (0.80, 0.10, 0.10), (0.10, 0.25, 0.80)


@dataclass
class LayerLesionBars:
    """Per class, the mean accuracy change of lesions in each layer, stacked (Figures 2, A.1, A.2).

    Attributes
    ----------
    changes : DataFrame
        Index: class names; one column per layer: mean top-1 change (in [−1, 1]) over the draws.
    fraction : float
        The lesioned proportion of each layer.
    """

    changes: pd.DataFrame
    fraction: float
    title: str = ""
    ax_: Any = field(default=None, init=False, repr=False)
    figure_: Any = field(default=None, init=False, repr=False)

    @classmethod
    def from_effects(cls, effects: pd.DataFrame, fraction: float, title: str = "") -> LayerLesionBars:
        """From the tidy table of :func:`lesion.stats.layer_effects`."""
        from lesion.stats import class_drops

        return cls(class_drops(effects, fraction).drop(columns="total"), fraction, title)

    @property
    def totals(self) -> np.ndarray:
        """(n_classes,) the sum of a class's segments: its whole bar, in accuracy units."""
        return self.changes.sum(axis=1).to_numpy()

    def segments(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per layer, (bottom, height) of its segment in percentage points.

        Negative changes stack downwards from 0 and positive ones upwards, each side in layer order.
        """
        below = np.zeros(len(self.changes))
        above = np.zeros(len(self.changes))
        out = {}
        for layer in self.changes.columns:
            height = 100 * self.changes[layer].to_numpy()
            bottom = np.where(height < 0, below, above)
            below = below + np.minimum(height, 0)
            above = above + np.maximum(height, 0)
            out[layer] = (bottom, height)
        return out

    def plot(self, ax: Any = None) -> LayerLesionBars:
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4))
        x = np.arange(len(self.changes))
        for i, (layer, (bottom, height)) in enumerate(self.segments().items()):
            ax.bar(x, height, bottom=bottom, color=PALETTE[i % len(PALETTE)], label=layer)
        ax.axhline(0, color="black", lw=0.5)
        names = [str(n) for n in self.changes.index]
        ax.set_xticks(x, names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right" if max(map(len, names)) > 2 else "center")
        ax.set_ylabel("mean change of class accuracy (pp)")
        ax.set_title(self.title or f"lesions of {100 * self.fraction:g} % of a layer's units")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), title="layer")
        self.ax_, self.figure_ = ax, ax.figure
        return self


@dataclass
class LayerEmbeddings:
    """The samples embedded per layer, coloured by class, with each panel's NH (Figures 3, 4).

    Attributes
    ----------
    embeddings : mapping of str -> ndarray of shape (n, 2)
        ``input`` (the raw data) first, then the layers in network order.
    labels : ndarray of shape (n,)
    class_names : sequence of str
    scores : mapping of str -> float
        Neighbourhood hit of each panel.
    marked : ndarray of bool, shape (n,), optional
        Samples drawn in black on top (e.g. newly misclassified after a lesion).
    """

    embeddings: Mapping[str, np.ndarray]
    labels: np.ndarray
    class_names: Sequence[str]
    scores: Mapping[str, float]
    marked: np.ndarray | None = None
    title: str = ""
    axes_: Any = field(default=None, init=False, repr=False)
    figure_: Any = field(default=None, init=False, repr=False)

    def plot(self, axes: Any = None) -> LayerEmbeddings:
        """Draw one panel per embedding on ``axes`` (a sequence of at least that many axes)."""
        import matplotlib.pyplot as plt

        names = list(self.embeddings)
        if axes is None:
            cols = 4
            rows = -(-len(names) // cols)
            fig, grid = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
            axes = grid.ravel()
            for ax in axes[len(names) :]:
                ax.set_axis_off()
        colors = np.array([PALETTE[int(c) % len(PALETTE)] for c in self.labels])
        for ax, name in zip(axes, names, strict=False):
            points = self.embeddings[name]
            ax.scatter(points[:, 0], points[:, 1], c=colors, s=2, linewidths=0)
            if self.marked is not None and self.marked.any():
                ax.scatter(points[self.marked, 0], points[self.marked, 1], c="black", s=4, linewidths=0)
            ax.set_title(f"{name}   NH {self.scores[name]:.3f}", fontsize="small")
            ax.set_xticks([])
            ax.set_yticks([])
        fig = axes[0].figure
        handles = [
            plt.Line2D([], [], ls="", marker="o", color=PALETTE[i % len(PALETTE)], label=str(n))
            for i, n in enumerate(self.class_names)
        ]
        if self.marked is not None:
            handles.append(plt.Line2D([], [], ls="", marker="o", color="black", label="newly misclassified"))
        fig.legend(handles=handles, loc="center right", fontsize="small", bbox_to_anchor=(1.08, 0.5))
        if self.title:
            fig.suptitle(self.title)
        self.axes_, self.figure_ = axes, fig
        return self


@dataclass
class NeuronPopulation:
    """The neurons embedded by their responses (vertical reduction), one colour per neuron (Figures 1, 5, 6).

    Attributes
    ----------
    embedding : ndarray of shape (n_neurons, 2)
    colors : ndarray of shape (n_neurons, 3)
        RGB in [0, 1]; neurons are drawn from the palest to the most saturated.
    title : str
    legend : sequence of (label, RGB)
    """

    embedding: np.ndarray
    colors: np.ndarray
    title: str
    legend: Sequence[tuple[str, tuple[float, float, float]]] = ()
    ax_: Any = field(default=None, init=False, repr=False)
    figure_: Any = field(default=None, init=False, repr=False)

    @classmethod
    def by_layer(cls, embedding: np.ndarray, layers: Sequence[str], title: str = "neurons by layer") -> NeuronPopulation:
        """Each neuron in its layer's colour."""
        names, colors = _layer_colors(layers)
        return cls(embedding, colors, title, [(n, PALETTE[i % len(PALETTE)]) for i, n in enumerate(names)])

    @classmethod
    def by_activation(
        cls, embedding: np.ndarray, layers: Sequence[str], activation: np.ndarray, title: str
    ) -> NeuronPopulation:
        """Layer colour saturated by the neuron's activation, min-max normalised within its layer."""
        names, colors = _layer_colors(layers)
        layer_of = np.asarray(layers)
        level = np.zeros(len(layer_of))
        for name in names:
            mask = layer_of == name
            values = np.asarray(activation, dtype=np.float64)[mask]
            span = values.max() - values.min()
            level[mask] = (values - values.min()) / span if span > 0 else 0.0
        return cls(embedding, _tint(colors, level), title, [(n, PALETTE[i % len(PALETTE)]) for i, n in enumerate(names)])

    @classmethod
    def by_selectivity(
        cls, embedding: np.ndarray, layers: Sequence[str], values: np.ndarray, preferred: np.ndarray, class_index: int, title: str
    ) -> NeuronPopulation:
        """Neurons most selective (AS) for ``class_index`` in their layer's colour saturated by AS; others grey."""
        names, colors = _layer_colors(layers)
        chosen = np.asarray(preferred) == class_index
        level = np.where(chosen, np.clip(np.asarray(values, dtype=np.float64), 0, 1), 0.0)
        tinted = np.where(chosen[:, None], _tint(colors, level), GREY)
        return cls(embedding, tinted, title, [(n, PALETTE[i % len(PALETTE)]) for i, n in enumerate(names)])

    @classmethod
    def by_ablation(
        cls, embedding: np.ndarray, scaled: np.ndarray, sign: np.ndarray, affected: np.ndarray, class_index: int, title: str
    ) -> NeuronPopulation:
        """Neurons whose unit's lesion most affects ``class_index``: red (hurt) / blue (helped), saturated by scaled AES."""
        chosen = np.asarray(affected) == class_index
        level = np.where(chosen, np.clip(np.asarray(scaled, dtype=np.float64), 0, 1), 0.0)
        base = np.where((np.asarray(sign) > 0)[:, None], HELPED, HURT)
        tinted = np.where(chosen[:, None], _tint(base, level), GREY)
        return cls(embedding, tinted, title, [("lesion hurts", HURT), ("lesion helps", HELPED)])

    def plot(self, ax: Any = None) -> NeuronPopulation:
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 5))
        order = np.argsort(-self.colors.sum(axis=1), kind="stable")  # palest first, saturated on top
        ax.scatter(self.embedding[order, 0], self.embedding[order, 1], c=self.colors[order], s=1, linewidths=0)
        handles = [plt.Line2D([], [], ls="", marker="o", color=c, label=label) for label, c in self.legend]
        if handles:
            ax.legend(handles=handles, fontsize="x-small", loc="best", markerscale=0.8)
        ax.set_title(self.title, fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
        self.ax_, self.figure_ = ax, ax.figure
        return self


def _layer_colors(layers: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The distinct layer names in order of appearance and each neuron's layer colour (n, 3)."""
    layer_of = np.asarray(layers)
    names = list(dict.fromkeys(layer_of.tolist()))
    index = {name: i for i, name in enumerate(names)}
    return names, np.array([PALETTE[index[name] % len(PALETTE)] for name in layer_of])


def _tint(colors: np.ndarray, level: np.ndarray) -> np.ndarray:
    """``colors`` (n, 3) faded towards white where ``level`` (n,) is 0, full where it is 1."""
    level = np.asarray(level, dtype=np.float64)[:, None]
    return 1.0 - level * (1.0 - np.asarray(colors, dtype=np.float64))
