"""Figures of the papers' kinds as display objects: compute in ``from_run(...)``, draw in ``plot(ax=None)``.

matplotlib is imported only when drawing.
"""

from lesion.plots._bars import ClassOutcomeBars, save_figure
from lesion.plots._cnn import LayerEmbeddings, LayerLesionBars, NeuronPopulation
from lesion.plots._mlp import (
    AttributeDropScatter,
    ClassSpreadLines,
    CoefficientDensity,
    EmbeddingView,
    LesionOutcomeView,
    WeightMaps,
)

__all__ = [
    "AttributeDropScatter",
    "ClassOutcomeBars",
    "ClassSpreadLines",
    "CoefficientDensity",
    "EmbeddingView",
    "LayerEmbeddings",
    "LayerLesionBars",
    "LesionOutcomeView",
    "NeuronPopulation",
    "WeightMaps",
    "save_figure",
]
