"""Figures of the 2019 MLP study (Meyes et al. 2019, Figures 1-13, A.1-A.4) as display objects.

Each class computes in a ``from_*`` class method and draws in ``plot(ax=None)``, keeping
``ax_`` and ``figure_``; matplotlib is imported only when drawing. Figures with several
panels take a sequence of axes for ``ax`` (one per panel, in the order the docstring names).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from lesion._errors import LesionError
from lesion._lesion import Lesion
from lesion.stats import OVERALL, ClassDropSpread, Correlation, correlate, kde, sample_categories
from lesion.store import Run

SINGLE_CATEGORIES = ("correct", "lost", "gained", "wrong")
"""Per-sample outcome of a single lesion (or any lesion that is not a pair) versus the intact network."""

PAIR_CATEGORIES = ("correct", "lost_single", "lost_pair_only", "gained", "wrong")
"""Per-sample outcome of a pairwise lesion (`lesion.stats.SAMPLE_CATEGORIES`, Figure 12)."""

INTACT_CATEGORIES = ("correct", "wrong")

STYLE = {
    "correct": ("black", "correct"),
    "lost": ("tab:red", "lost"),
    "lost_single": ("tab:red", "lost after a single lesion"),
    "lost_pair_only": ("tab:blue", "lost only after the pair"),
    "gained": ("tab:green", "gained"),
    "wrong": ("0.8", "wrong"),
}
"""Colour and legend label of each outcome category (the paper's black / red / blue / green)."""

DRAW_ORDER = ("wrong", "correct", "lost", "lost_single", "lost_pair_only", "gained")
"""t-SNE layers, bottom to top: the changed samples are drawn over the unchanged ones."""


def _axes(ax: Any, n: int, figsize: tuple[float, float]) -> list[Any]:
    """``n`` axes: new ones in a row when ``ax`` is None, else ``ax`` (one Axes or a sequence of n)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, grid = plt.subplots(1, n, figsize=figsize, squeeze=False)
        return list(grid[0])
    axes = list(np.ravel(ax)) if isinstance(ax, (Sequence, np.ndarray)) else [ax]
    if len(axes) != n:
        raise LesionError(f"ax: expected {n} axes for this figure, got {len(axes)}")
    return axes


def outcome_categories(run: Run, lesion: str) -> NDArray[np.str_]:
    """Per-sample outcome category of a lesion of `run`, shape (N,).

    The intact network: `INTACT_CATEGORIES`. A two-unit lesion whose single lesions are in
    the run: `PAIR_CATEGORIES` (Figure 12). Any other lesion: `SINGLE_CATEGORIES`.
    """
    after = run.correct(lesion)[0]
    if lesion == "intact":
        return np.where(after, "correct", "wrong")
    before = run.correct("intact")[0]
    parts = _pair_parts(run, lesion)
    if parts is not None:
        return sample_categories(after, run.correct(parts[0])[0], run.correct(parts[1])[0], before)
    return np.select([before & after, before, after], ["correct", "lost", "gained"], default="wrong")


def _pair_parts(run: Run, key: str) -> tuple[str, str] | None:
    spec = Lesion.from_key(key)
    if spec.size != 2:
        return None
    a, b = (Lesion(((layer, (u,)),), spec.method).key for layer, units in spec.units for u in units)
    done = set(run.lesions().query("done")["key"])
    if a not in done or b not in done:
        raise LesionError(f"lesion {key!r}: its pair view needs the single lesions {a!r} and {b!r} in the run")
    return a, b


@dataclass
class LesionOutcomeView:
    """Per-class stacked bars of what a lesion did, beside the t-SNE coloured by the same categories.

    Figures 2-7, 12, 13 and A.1-A.4. Bars per class: black = correct after the lesion, above
    it red = lost (for a pair: red = lost after a single lesion too, blue = lost only after
    the pair; for the intact network: red = wrong), below 0 green = gained. A star marks a
    class whose change survives the Benjamini-Hochberg correction (red: loss, green: gain).
    Panels: bars, then the t-SNE (when an embedding is given).

    Attributes
    ----------
    counts : ndarray of int, shape (len(categories), n_classes)
    sample_category : ndarray of str, shape (N,)
    embedding : ndarray of float, shape (N, 2), or None
    significant : ndarray of bool, shape (n_classes,), or None (no tests given)
    class_change_pp : ndarray of float, shape (n_classes,), or None
    """

    lesion: str
    class_names: tuple[str, ...]
    categories: tuple[str, ...]
    counts: np.ndarray
    accuracy: float
    change_pp: float
    sample_category: np.ndarray
    embedding: np.ndarray | None = None
    significant: np.ndarray | None = None
    class_change_pp: np.ndarray | None = None
    ax_: Any = field(default=None, init=False, repr=False)
    figure_: Any = field(default=None, init=False, repr=False)

    @classmethod
    def from_run(
        cls,
        run: Run,
        lesion: str = "intact",
        embedding: ArrayLike | None = None,
        effects: pd.DataFrame | None = None,
    ) -> LesionOutcomeView:
        """Compute the view of `lesion` in `run`.

        Parameters
        ----------
        embedding : array_like, shape (N, 2), optional
            A 2-D embedding of the evaluation samples (e.g. `lesion.embed.tsne`).
        effects : pandas.DataFrame, optional
            Rows of this network's effect table (``lesion``, ``class``, ``change_pp``,
            ``bh_reject``) to star the classes whose change is significant.
        """
        labels = run.labels
        category = outcome_categories(run, lesion)
        kinds = INTACT_CATEGORIES if lesion == "intact" else PAIR_CATEGORIES if _is_pair(lesion) else SINGLE_CATEGORIES
        n = len(run.class_names)
        counts = np.stack([np.bincount(labels[category == kind], minlength=n) for kind in kinds])
        after, before = run.correct(lesion)[0], run.correct("intact")[0]
        points = None if embedding is None else _embedding(embedding, len(labels))
        significant = change = None
        if effects is not None and lesion != "intact":
            rows = effects[(effects["lesion"] == lesion) & (effects["class"] != OVERALL)].sort_values("class")
            if len(rows) != n:
                raise LesionError(f"effects: expected {n} class rows of lesion {lesion!r}, got {len(rows)}")
            significant = rows["bh_reject"].to_numpy(bool)
            change = rows["change_pp"].to_numpy(float)
        return cls(
            lesion, run.class_names, kinds, counts, float(after.mean()), 100.0 * float(after.mean() - before.mean()),
            category, points, significant, change,
        )

    def plot(self, ax: Any = None) -> LesionOutcomeView:
        n_panels = 1 if self.embedding is None else 2
        axes = _axes(ax, n_panels, (6.0 * n_panels, 3.8))
        self._bars(axes[0])
        if self.embedding is not None:
            self._scatter(axes[1])
        self.ax_, self.figure_ = axes if n_panels > 1 else axes[0], axes[0].figure
        return self

    def _count(self, kind: str) -> np.ndarray:
        return self.counts[self.categories.index(kind)] if kind in self.categories else np.zeros(len(self.class_names), int)

    def _bars(self, ax: Any) -> None:
        x = np.arange(len(self.class_names))
        right = self._count("correct") + self._count("gained")
        ax.bar(x, right, color="black", label="correct")
        bottom = right.copy()
        for kind in ("lost", "lost_single", "lost_pair_only", "wrong"):
            if kind not in self.categories or (kind == "wrong" and self.lesion != "intact"):
                continue
            color, label = STYLE[kind]
            ax.bar(x, self._count(kind), bottom=bottom, color="tab:red" if kind == "wrong" else color, label=label)
            bottom = bottom + self._count(kind)
        if self.lesion != "intact":
            ax.bar(x, -self._count("gained"), color="tab:green", label="gained")
        if self.significant is not None and self.class_change_pp is not None and self.significant.any():
            for i in np.flatnonzero(self.significant):
                gain = self.class_change_pp[i] > 0
                y = -self._count("gained")[i] if gain else bottom[i]
                ax.annotate("*", (x[i], y), ha="center", va="top" if gain else "bottom",
                            color="tab:green" if gain else "tab:red", fontsize=12, fontweight="bold")
            ax.plot([], [], ls="", marker="$*$", color="0.3", label="BH-significant change")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xticks(x, self.class_names)
        ax.set_ylabel("samples")
        what = "intact network" if self.lesion == "intact" else f"lesion {self.lesion}"
        change = "" if self.lesion == "intact" else f" ({self.change_pp:+.2f} pp)"
        ax.set_title(f"{what}: top-1 {100 * self.accuracy:.2f} %{change}", fontsize="medium")
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))

    def _scatter(self, ax: Any) -> None:
        points = self.embedding
        if points is None:
            return
        for kind in DRAW_ORDER:
            mask = self.sample_category == kind
            if not mask.any():
                continue
            color, label = STYLE[kind]
            label = "wrong" if kind == "wrong" and self.lesion != "intact" else label
            ax.scatter(points[mask, 0], points[mask, 1], s=1.5, c=color, label=f"{label} ({mask.sum()})",
                       linewidths=0, rasterized=True)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("t-SNE of the evaluation set", fontsize="medium")
        ax.legend(fontsize="x-small", markerscale=5, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _is_pair(key: str) -> bool:
    return key != "intact" and Lesion.from_key(key).size == 2


def _embedding(values: ArrayLike, n: int) -> np.ndarray:
    points = np.asarray(values, dtype=np.float64)
    if points.shape != (n, 2):
        raise LesionError(f"embedding: expected shape ({n}, 2), one point per evaluation sample, got {points.shape}")
    return points


@dataclass
class EmbeddingView:
    """The t-SNE of the evaluation set coloured by class (Figure 1).

    Attributes
    ----------
    embedding : ndarray of float, shape (N, 2)
    labels : ndarray of int, shape (N,)
    """

    embedding: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    ax_: Any = field(default=None, init=False, repr=False)
    figure_: Any = field(default=None, init=False, repr=False)

    @classmethod
    def from_run(cls, run: Run, embedding: ArrayLike) -> EmbeddingView:
        labels = run.labels
        return cls(_embedding(embedding, len(labels)), labels, run.class_names)

    def plot(self, ax: Any = None) -> EmbeddingView:
        import matplotlib.pyplot as plt

        (ax,) = _axes(ax, 1, (5.5, 5.0))
        colors = plt.get_cmap("tab10")
        for c, name in enumerate(self.class_names):
            mask = self.labels == c
            if not mask.any():
                continue
            ax.scatter(*self.embedding[mask].T, s=1.5, color=colors(c % 10), linewidths=0, rasterized=True)
            ax.annotate(name, np.median(self.embedding[mask], axis=0), fontsize=12, fontweight="bold", ha="center")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"t-SNE of the {len(self.labels)} evaluation samples", fontsize="medium")
        self.ax_, self.figure_ = ax, ax.figure
        return self


@dataclass
class WeightMaps:
    """Each unit's incoming weights as an image, before (left block) and after training (right block).

    Figure 8: the trained images are titled with the unit's Mann-Whitney p-value; each image
    is scaled to its own largest magnitude (red positive, blue negative).

    Attributes
    ----------
    initial : ndarray, shape (n_units, *image_shape), or None (no initial snapshot)
    trained : ndarray, shape (n_units, *image_shape)
    pvalues : ndarray, shape (n_units,)
    """

    initial: np.ndarray | None
    trained: np.ndarray
    pvalues: np.ndarray
    layer: str = "fc1"
    per_row: int = 5
    ax_: Any = field(default=None, init=False, repr=False)
    figure_: Any = field(default=None, init=False, repr=False)

    @classmethod
    def from_weights(
        cls,
        trained: ArrayLike,
        pvalues: ArrayLike,
        image_shape: tuple[int, int],
        initial: ArrayLike | None = None,
        layer: str = "fc1",
    ) -> WeightMaps:
        """From a layer's weights of shape (n_units, H*W) and the units' p-values (n_units,)."""
        after = np.asarray(trained, dtype=np.float64)
        p = np.asarray(pvalues, dtype=np.float64)
        size = int(np.prod(image_shape))
        if after.ndim != 2 or after.shape[1] != size or p.shape != (after.shape[0],):
            raise LesionError(
                f"trained, pvalues: expected shapes (n_units, {size}) and (n_units,) for images {image_shape}, "
                f"got {after.shape} and {p.shape}"
            )
        before = None if initial is None else np.asarray(initial, dtype=np.float64).reshape(-1, *image_shape)
        return cls(before, after.reshape(-1, *image_shape), p, layer)

    def plot(self, ax: Any = None) -> WeightMaps:
        """``ax``: an array of axes of shape (rows, 2 * per_row) (or (rows, per_row) without initial weights)."""
        import matplotlib.pyplot as plt

        n = len(self.trained)
        rows = -(-n // self.per_row)
        blocks = [b for b in (self.initial, self.trained) if b is not None]
        cols = self.per_row * len(blocks)
        if ax is None:
            _, ax = plt.subplots(rows, cols, figsize=(1.3 * cols + 0.5, 1.45 * rows + 0.6), squeeze=False)
        grid = np.asarray(ax, dtype=object).reshape(rows, cols)
        for b, images in enumerate(blocks):
            trained = images is self.trained
            for u in range(rows * self.per_row):
                a = grid[u // self.per_row, b * self.per_row + u % self.per_row]
                a.set_axis_off()
                if u >= n:
                    continue
                scale = float(np.abs(images[u]).max()) or 1.0
                a.imshow(images[u], cmap="bwr", vmin=-scale, vmax=scale)
                a.set_title(f"{u}: p={self.pvalues[u]:.1e}" if trained else f"{u}", fontsize=6)
        figure = grid[0, 0].figure
        figure.suptitle(
            f"{self.layer} incoming weights: " + ("before (left) and after (right) training" if self.initial is not None else "after training")
            + "; titles: unit: Mann-Whitney p", fontsize="small",
        )
        self.ax_, self.figure_ = grid, figure
        return self


@dataclass
class AttributeDropScatter:
    """An attribute against the lesion's drop, for one network and pooled over the population (Figure 9).

    Attributes
    ----------
    x_ref, y_ref : ndarray, shape (n_units,)
        The reference network's units.
    x_all, y_all : ndarray, shape (n_units * n_networks,)
    ref, pooled : Correlation
        Pearson and Spearman of each panel.
    """

    attribute: str
    reference_network: int
    x_ref: np.ndarray
    y_ref: np.ndarray
    x_all: np.ndarray
    y_all: np.ndarray
    ref: Correlation
    pooled: Correlation
    n_networks: int
    ax_: Any = field(default=None, init=False, repr=False)
    figure_: Any = field(default=None, init=False, repr=False)

    @classmethod
    def from_table(
        cls, table: pd.DataFrame, attribute: str = "mw_p", reference_network: int | None = None
    ) -> AttributeDropScatter:
        """From the overall rows (``class == -1``) of a table with ``network``, `attribute` and ``drop`` columns.

        ``reference_network``: default the first network of the table.
        """
        for column in ("network", "class", "drop", attribute):
            if column not in table.columns:
                raise LesionError(f"table: expected a column {column!r}, got {list(table.columns)}")
        rows = table[table["class"] == OVERALL]
        if rows.empty:
            raise LesionError("table: expected overall rows (class -1), got none")
        ref_id = int(rows["network"].iloc[0]) if reference_network is None else reference_network
        ref = rows[rows["network"] == ref_id]
        if ref.empty:
            raise LesionError(f"reference_network: {ref_id!r} is not in the table; networks: {sorted(rows['network'].unique())}")
        return cls(
            attribute, ref_id, ref[attribute].to_numpy(float), ref["drop"].to_numpy(float),
            rows[attribute].to_numpy(float), rows["drop"].to_numpy(float),
            correlate(ref[attribute], ref["drop"]), correlate(rows[attribute], rows["drop"]),
            int(rows["network"].nunique()),
        )

    def plot(self, ax: Any = None) -> AttributeDropScatter:
        """Panels: the reference network, then the pooled population."""
        axes = _axes(ax, 2, (10.0, 4.0))
        panels = (
            (self.x_ref, self.y_ref, self.ref, f"network {self.reference_network} ({len(self.x_ref)} units)"),
            (self.x_all, self.y_all, self.pooled, f"{self.n_networks} networks pooled ({len(self.x_all)} units)"),
        )
        for a, (x, y, c, title) in zip(axes, panels, strict=True):
            a.scatter(x, y, s=12 if len(x) < 100 else 5, color="black", alpha=0.8 if len(x) < 100 else 0.4, linewidths=0)
            a.set_xlabel(f"{self.attribute}")
            a.set_ylabel("overall accuracy drop (pp)")
            a.set_title(f"{title}\nPearson r={c.pearson_r:.2f} (p={c.pearson_p:.1e}), "
                        f"Spearman ρ={c.spearman_r:.2f} (p={c.spearman_p:.1e})", fontsize="small")
        self.ax_, self.figure_ = axes, axes[0].figure
        return self


@dataclass
class CoefficientDensity:
    """Kernel density of the per-network Pearson and Spearman coefficients (Figure 10).

    Attributes
    ----------
    pearson, spearman : ndarray, shape (n_networks,)
    grid : ndarray, shape (g,)
    pearson_density, spearman_density : ndarray, shape (g,)
        NaN where the sample has fewer than 2 distinct values.
    """

    attribute: str
    pearson: np.ndarray
    spearman: np.ndarray
    grid: np.ndarray
    pearson_density: np.ndarray
    spearman_density: np.ndarray
    ax_: Any = field(default=None, init=False, repr=False)
    figure_: Any = field(default=None, init=False, repr=False)

    @classmethod
    def from_table(cls, correlations: pd.DataFrame, attribute: str = "mw_p") -> CoefficientDensity:
        """From the per-network rows (``pooled`` False) of a `correlations_by_group`-style table."""
        for column in ("pooled", "pearson_r", "spearman_r"):
            if column not in correlations.columns:
                raise LesionError(f"correlations: expected a column {column!r}, got {list(correlations.columns)}")
        rows = correlations[~correlations["pooled"].astype(bool)]
        pearson, spearman = rows["pearson_r"].to_numpy(float), rows["spearman_r"].to_numpy(float)
        grid = np.linspace(-1.0, 1.0, 201)
        return cls(attribute, pearson, spearman, grid, kde(pearson, grid)[1], kde(spearman, grid)[1])

    def plot(self, ax: Any = None) -> CoefficientDensity:
        (ax,) = _axes(ax, 1, (6.0, 3.8))
        for values, density, name, color in (
            (self.pearson, self.pearson_density, "Pearson", "tab:blue"),
            (self.spearman, self.spearman_density, "Spearman", "tab:orange"),
        ):
            negative = int(np.sum(values < 0))
            label = f"{name} ({negative} of {np.isfinite(values).sum()} < 0)"
            if np.isfinite(density).any():
                ax.plot(self.grid, density, color=color, label=label)
            else:
                ax.plot([], [], color=color, label=label)
            ax.plot(values, np.zeros_like(values), "|", color=color, markersize=12)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlim(-1, 1)
        ax.set_xlabel(f"per-network correlation of {self.attribute} with the overall drop")
        ax.set_ylabel("density")
        ax.legend(fontsize="small")
        self.ax_, self.figure_ = ax, ax.figure
        return self


@dataclass
class ClassSpreadLines:
    """Per class, the standard deviation over units of the class-specific drop (Figure 11).

    Black: the mean over the population; coloured: example networks.

    Attributes
    ----------
    population : ndarray, shape (n_classes,)
    examples : dict network -> ndarray, shape (n_classes,)
    """

    class_names: tuple[str, ...]
    population: np.ndarray
    examples: dict[int, np.ndarray]
    ax_: Any = field(default=None, init=False, repr=False)
    figure_: Any = field(default=None, init=False, repr=False)

    @classmethod
    def from_spread(cls, spread: ClassDropSpread, class_names: Sequence[str], n_examples: int = 4) -> ClassSpreadLines:
        """From `lesion.stats.class_drop_spread` of the class rows (class >= 0); the first `n_examples` networks are shown."""
        n = len(class_names)
        population = _per_class(spread.population.set_index("class")["mean_std"], n)
        per_network = spread.per_network[spread.per_network["class"] >= 0]
        networks = sorted(per_network["network"].unique())[:n_examples]
        examples = {
            int(net): _per_class(per_network[per_network["network"] == net].set_index("class")["std"], n)
            for net in networks
        }
        return cls(tuple(class_names), population, examples)

    def plot(self, ax: Any = None) -> ClassSpreadLines:
        (ax,) = _axes(ax, 1, (6.0, 3.8))
        x = np.arange(len(self.class_names))
        for net, values in self.examples.items():
            ax.plot(x, values, lw=1, alpha=0.7, marker=".", label=f"network {net}")
        ax.plot(x, self.population, color="black", lw=2.5, marker="o", label="population mean")
        ax.set_xticks(x, self.class_names)
        ax.set_xlabel("class")
        ax.set_ylabel("std over units of the class drop (pp)")
        ax.legend(fontsize="x-small")
        self.ax_, self.figure_ = ax, ax.figure
        return self


def _per_class(values: Mapping[int, float] | pd.Series, n: int) -> np.ndarray:
    return np.array([float(values.get(c, np.nan)) for c in range(n)])


__all__ = [
    "PAIR_CATEGORIES",
    "SINGLE_CATEGORIES",
    "AttributeDropScatter",
    "ClassSpreadLines",
    "CoefficientDensity",
    "EmbeddingView",
    "LesionOutcomeView",
    "WeightMaps",
    "outcome_categories",
]
