"""Figures of the papers' kinds as display objects: compute in ``from_run(...)``, draw in ``plot(ax=None)``.

matplotlib is imported only when drawing.
"""

from lesion.plots._bars import ClassOutcomeBars, save_figure

__all__ = ["ClassOutcomeBars", "save_figure"]
