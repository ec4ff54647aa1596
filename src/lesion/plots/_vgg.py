"""Figures of the VGG study of Meyes et al. (2019): depth-resolved drops and recovery (Figures 14-19).

Display objects: build from the study's tidy tables (``from_table``), draw with ``plot(ax=None)``,
which keeps ``ax_`` and ``figure_``. matplotlib is imported only when drawing. Drops are in
percentage points (positive = the lesion hurt); accuracies in recovery tables are fractions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

MEAN, LOWER, UPPER = "black", "tab:red", "tab:green"
#: One colour per recovered layer (the paper: blue and orange).
LAYER_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown")
POINT_COLORS = {"conv": "tab:gray", "block": "tab:red"}


def _select(depth: pd.DataFrame, point: str, metric: str, fraction: float) -> pd.DataFrame:
    return depth[(depth["point"] == point) & (depth["metric"] == metric) & np.isclose(depth["fraction"], fraction)]


def _layer_axis(ax: Any, layers: Sequence[str]) -> None:
    ax.set_xticks(np.arange(len(layers)), [name.removeprefix("features.") for name in layers])
    ax.set_xlabel("layer (features.N)")
    ax.axhline(0, color="grey", lw=0.5)


@dataclass
class DepthProfile:
    """Mean drop per layer with the lower (red) and upper (green) std bands (Figures 14, 15).

    Attributes
    ----------
    layers : list of str
        Conv layers in network order.
    mean, lower, upper : ndarray of shape (n_layers,)
        Mean drop and lower / upper standard deviations, pp.
    metric : str
        ``top1`` or ``top5``.
    fraction : float
    """

    layers: list[str]
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    metric: str
    fraction: float
    title: str = ""
    ax_: Any = field(default=None, init=False, repr=False)
    figure_: Any = field(default=None, init=False, repr=False)

    @classmethod
    def from_table(cls, depth: pd.DataFrame, point: str, metric: str, fraction: float, class_name: str = "all") -> DepthProfile:
        """From :func:`lesion.studies.meyes2019_vgg._analysis.layer_drops` rows of one point, metric, fraction and class."""
        rows = _select(depth, point, metric, fraction)
        rows = rows[rows["class"] == class_name].sort_values("depth")
        return cls(
            rows["layer"].tolist(), rows["mean"].to_numpy(), rows["lower_std"].to_numpy(), rows["upper_std"].to_numpy(),
            metric, fraction,
        )

    def plot(self, ax: Any = None) -> DepthProfile:
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        x = np.arange(len(self.layers))
        low, high = self.mean - self.lower, self.mean + self.upper
        ax.fill_between(x, low, self.mean, color=LOWER, alpha=0.2, lw=0)
        ax.fill_between(x, self.mean, high, color=UPPER, alpha=0.2, lw=0)
        ax.plot(x, low, color=LOWER, lw=1, label="mean - lower std")
        ax.plot(x, high, color=UPPER, lw=1, label="mean + upper std")
        ax.plot(x, self.mean, color=MEAN, lw=1.5, marker="o", ms=3, label="mean drop")
        _layer_axis(ax, self.layers)
        ax.set_ylabel(f"{self.metric} drop (pp)")
        ax.set_title(self.title or f"{100 * self.fraction:g} % of each layer's filters")
        ax.legend(fontsize="x-small")
        self.ax_, self.figure_ = ax, ax.figure
        return self


@dataclass
class ClassDepthProfile:
    """Mean drop per layer for chosen classes beside the average over all samples (Figure 16).

    Attributes
    ----------
    layers : list of str
    average : ndarray of shape (n_layers,)
        The drop on the whole evaluation set (pp).
    classes : dict of str -> ndarray of shape (n_layers,)
        Each chosen class's mean drop (pp).
    metric : str
    fraction : float
    """

    layers: list[str]
    average: np.ndarray
    classes: dict[str, np.ndarray]
    metric: str
    fraction: float
    title: str = ""
    ax_: Any = field(default=None, init=False, repr=False)
    figure_: Any = field(default=None, init=False, repr=False)

    @classmethod
    def from_table(
        cls, depth: pd.DataFrame, point: str, metric: str, fraction: float, classes: Sequence[str]
    ) -> ClassDepthProfile:
        rows = _select(depth, point, metric, fraction)
        wide = rows.pivot_table(index=["depth", "layer"], columns="class", values="mean").reset_index()
        return cls(
            wide["layer"].tolist(), wide["all"].to_numpy(), {str(c): wide[c].to_numpy() for c in classes}, metric, fraction
        )

    def plot(self, ax: Any = None) -> ClassDepthProfile:
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        x = np.arange(len(self.layers))
        for name, values in self.classes.items():
            ax.plot(x, values, lw=1, marker=".", label=f"class {name}")
        ax.plot(x, self.average, color=MEAN, lw=2, label="all samples")
        _layer_axis(ax, self.layers)
        ax.set_ylabel(f"class {self.metric} drop (pp)")
        ax.set_title(self.title or f"{100 * self.fraction:g} % of each layer's filters")
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        self.ax_, self.figure_ = ax, ax.figure
        return self


@dataclass
class SortedClassDrops:
    """Every class's mean drop after lesions of one layer, sorted, largest first (Figure 17).

    Attributes
    ----------
    drops : Series
        Index: class names; values: mean drop (pp), sorted descending. Negative = the class gained.
    layer : str
    metric : str
    fraction : float
    """

    drops: pd.Series
    layer: str
    metric: str
    fraction: float
    title: str = ""
    ax_: Any = field(default=None, init=False, repr=False)
    figure_: Any = field(default=None, init=False, repr=False)

    @classmethod
    def from_table(cls, depth: pd.DataFrame, point: str, metric: str, fraction: float, layer: str) -> SortedClassDrops:
        rows = _select(depth, point, metric, fraction)
        rows = rows[(rows["layer"] == layer) & (rows["class"] != "all")]
        drops = rows.set_index("class")["mean"].sort_values(ascending=False, kind="stable")
        return cls(drops, layer, metric, fraction)

    def plot(self, ax: Any = None) -> SortedClassDrops:
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        x = np.arange(len(self.drops))
        values = self.drops.to_numpy()
        ax.bar(x, values, width=1.0 if len(x) > 50 else 0.8, color=np.where(values >= 0, LOWER, UPPER))
        ax.axhline(0, color="grey", lw=0.5)
        names = [str(n) for n in self.drops.index]
        if len(names) <= 30:
            ax.set_xticks(x, names, rotation=90 if max(map(len, names)) > 2 else 0)
        ax.set_xlabel("class (sorted by drop)")
        ax.set_ylabel(f"class {self.metric} drop (pp)")
        ax.set_title(self.title or f"{self.layer}: {100 * self.fraction:g} % of its filters")
        self.ax_, self.figure_ = ax, ax.figure
        return self


@dataclass
class RecoveryCurves:
    """Accuracy during recovery training of several instances, one colour per layer (Figure 18).

    Attributes
    ----------
    history : DataFrame
        One row per (layer, run, epoch): ``layer``, ``run`` (instance), ``epoch`` (0 = just
        lesioned) and the accuracy column ``metric`` (a fraction).
    baseline : dict of str -> float
        The intact network's accuracy (the same for every layer; one value per layer allowed).
    metric : {"top1", "top5"}
    """

    history: pd.DataFrame
    baseline: dict[str, float]
    metric: str = "top5"
    title: str = ""
    ax_: Any = field(default=None, init=False, repr=False)
    figure_: Any = field(default=None, init=False, repr=False)

    def plot(self, ax: Any = None) -> RecoveryCurves:
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        for i, (layer, rows) in enumerate(self.history.groupby("layer", sort=False)):
            color = LAYER_COLORS[i % len(LAYER_COLORS)]
            for j, (_, run) in enumerate(rows.groupby("run", sort=True)):
                ax.plot(run["epoch"], 100 * run[self.metric], color=color, lw=1, marker=".", label=layer if j == 0 else None)
            ax.axhline(100 * self.baseline[layer], color=color, ls="--", lw=0.8)
        ax.set_xlabel("recovery epoch (0: just lesioned)")
        ax.set_ylabel(f"{self.metric} accuracy (%)")
        ax.set_title(self.title or "recovery of several instances (dashed: intact)")
        ax.legend(fontsize="x-small", title="lesioned layer")
        self.ax_, self.figure_ = ax, ax.figure
        return self


@dataclass
class IterativeRecoveryCurve:
    """Accuracy over all epochs of iterative lesion + recovery, one colour per layer (Figure 19).

    Attributes
    ----------
    history : DataFrame
        One row per (layer, run, epoch): ``layer``, ``run`` (iteration), ``epoch``, ``step``
        (epochs trained so far in this layer's whole sequence), ``dead_fraction`` and ``metric``.
    baseline : dict of str -> float
    metric : {"top1", "top5"}
    """

    history: pd.DataFrame
    baseline: dict[str, float]
    metric: str = "top5"
    title: str = ""
    ax_: Any = field(default=None, init=False, repr=False)
    figure_: Any = field(default=None, init=False, repr=False)

    def plot(self, ax: Any = None) -> IterativeRecoveryCurve:
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 3.5))
        for i, (layer, rows) in enumerate(self.history.groupby("layer", sort=False)):
            color = LAYER_COLORS[i % len(LAYER_COLORS)]
            ax.plot(rows["step"], 100 * rows[self.metric], color=color, lw=1, marker=".", ms=3, label=layer)
            ax.axhline(100 * self.baseline[layer], color=color, ls="--", lw=0.8)
            for _, start in rows[rows["epoch"] == 0].iterrows():
                ax.annotate(
                    f"{100 * start['dead_fraction']:.0f}%", (start["step"], 100 * start[self.metric]),
                    fontsize="xx-small", color=color, textcoords="offset points", xytext=(2, -8),
                )
        ax.set_xlabel("epoch of the whole sequence (labels: dead filters after each new lesion)")
        ax.set_ylabel(f"{self.metric} accuracy (%)")
        ax.set_title(self.title or "iterative 25 % lesions with replacement + recovery (dashed: intact)")
        ax.legend(fontsize="x-small", title="lesioned layer")
        self.ax_, self.figure_ = ax, ax.figure
        return self


@dataclass
class LesionPointComparison:
    """Mean overall drop per layer when lesioning the conv output vs the block output after BN + ReLU.

    Attributes
    ----------
    table : DataFrame
        ``layer``, ``depth`` and one column of mean drops (pp) per point (``conv``, ``block``).
    metric : str
    fraction : float
    """

    table: pd.DataFrame
    metric: str
    fraction: float
    title: str = ""
    ax_: Any = field(default=None, init=False, repr=False)
    figure_: Any = field(default=None, init=False, repr=False)

    def plot(self, ax: Any = None) -> LesionPointComparison:
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        points = [p for p in ("conv", "block") if p in self.table.columns]
        x = np.arange(len(self.table))
        width = 0.8 / len(points)
        labels = {"conv": "conv output (paper)", "block": "block output (after BN + ReLU)"}
        for i, point in enumerate(points):
            ax.bar(x + (i - (len(points) - 1) / 2) * width, self.table[point], width, color=POINT_COLORS[point], label=labels[point])
        _layer_axis(ax, self.table["layer"].tolist())
        ax.set_ylabel(f"mean {self.metric} drop (pp)")
        ax.set_title(self.title or f"lesion point, {100 * self.fraction:g} % of each layer's filters")
        ax.legend(fontsize="x-small")
        self.ax_, self.figure_ = ax, ax.figure
        return self


def recovery_figure(results: Sequence[Any], protocol: str) -> Any:
    """Figure 18 (instances) or 19 (iterative) of `lesion.train.RecoveryResult` s: top-5 (the paper's) and top-1.

    One colour per layer; ``results`` of other protocols are left out. Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    chosen = [r for r in results if r.protocol == protocol]
    history = pd.concat([r.history for r in chosen])
    width = 6 if protocol == "instances" else 8
    fig, axes = plt.subplots(1, 2, figsize=(2 * width, 3.6))
    for ax, metric in zip(axes, ("top5", "top1"), strict=True):
        baseline = {r.layer: r.baseline[metric] for r in chosen}
        display = RecoveryCurves if protocol == "instances" else IterativeRecoveryCurve
        display(history, baseline, metric).plot(ax)
    fig.tight_layout()
    return fig
