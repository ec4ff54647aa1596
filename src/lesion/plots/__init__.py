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
from lesion.plots._vgg import (
    ClassDepthProfile,
    DepthProfile,
    IterativeRecoveryCurve,
    LesionPointComparison,
    RecoveryCurves,
    SortedClassDrops,
    recovery_figure,
)

__all__ = [
    "AttributeDropScatter",
    "ClassDepthProfile",
    "ClassOutcomeBars",
    "ClassSpreadLines",
    "CoefficientDensity",
    "DepthProfile",
    "EmbeddingView",
    "IterativeRecoveryCurve",
    "LayerEmbeddings",
    "LayerLesionBars",
    "LesionOutcomeView",
    "LesionPointComparison",
    "NeuronPopulation",
    "RecoveryCurves",
    "SortedClassDrops",
    "WeightMaps",
    "recovery_figure",
    "save_figure",
]
