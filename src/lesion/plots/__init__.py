"""Figures of the papers' kinds as display objects: compute in ``from_run(...)``, draw in ``plot(ax=None)``.

matplotlib is imported only when drawing.
"""

from lesion.plots._bars import ClassOutcomeBars, save_figure
from lesion.plots._cnn import LayerEmbeddings, LayerLesionBars, NeuronPopulation

__all__ = ["ClassOutcomeBars", "LayerEmbeddings", "LayerLesionBars", "NeuronPopulation", "save_figure"]
