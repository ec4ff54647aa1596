"""Per-class stacked bars of correct / lost / gained samples (Meyes et al. 2019, Figures 2-7)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lesion.store import Run


def save_figure(figure: Any, path: str | Path, formats: tuple[str, ...] = ("png",)) -> list[Path]:
    """Write ``figure`` as ``path`` with each suffix in ``formats``; returns the files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        figure.savefig(target, dpi=150, bbox_inches="tight")
        written.append(target)
    return written


@dataclass
class ClassOutcomeBars:
    """Per class: samples correct after the lesion (black), lost by it (red), gained by it (green, below 0).

    For the intact network red counts the samples it gets wrong. Counts are arrays of shape (n_classes,).
    """

    lesion: str
    class_names: tuple[str, ...]
    correct: np.ndarray
    lost: np.ndarray
    gained: np.ndarray
    accuracy: float
    ax_: Any = field(default=None, init=False, repr=False)
    figure_: Any = field(default=None, init=False, repr=False)

    @classmethod
    def from_run(cls, run: Run, lesion: str = "intact") -> ClassOutcomeBars:
        labels = run.labels
        n = len(run.class_names)
        after, _ = run.correct(lesion)
        before, _ = run.correct("intact")
        lost = before & ~after if lesion != "intact" else ~after
        gained = ~before & after

        def count(mask: np.ndarray) -> np.ndarray:
            return np.bincount(labels[mask], minlength=n)

        return cls(lesion, run.class_names, count(after), count(lost), count(gained), float(after.mean()))

    def plot(self, ax: Any = None) -> ClassOutcomeBars:
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        x = np.arange(len(self.class_names))
        ax.bar(x, self.correct, color="black", label="correct")
        ax.bar(x, self.lost, bottom=self.correct, color="tab:red", label="wrong" if self.lesion == "intact" else "lost")
        if self.lesion != "intact":
            ax.bar(x, -self.gained, color="tab:green", label="gained")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xticks(x, self.class_names, rotation=45 if max(map(len, self.class_names)) > 2 else 0)
        ax.set_ylabel("samples")
        title = "intact network" if self.lesion == "intact" else f"lesion {self.lesion}"
        ax.set_title(f"{title}: top-1 {100 * self.accuracy:.2f} %")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        self.ax_, self.figure_ = ax, ax.figure
        return self
