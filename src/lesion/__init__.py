"""lesion: lesion (ablation) studies of PyTorch networks — exact, fast, reproducible, resumable.

The public API lives here; everything else is private.

>>> import lesion
>>> from lesion.testing import toy_network, toy_data
>>> model, data = toy_network(), toy_data()
>>> [(layer.name, layer.n_units) for layer in lesion.layers(model)]
[('hidden', 5), ('out', 4)]
"""

from lesion._errors import LesionError
from lesion._lesion import INTACT, Lesion, lesioned, unit_means
from lesion._sweep import sweep
from lesion._units import Layer, layers, select
from lesion._version import __version__ as __version__
from lesion.data import Dataset, Split, load_dataset
from lesion.engine import Outcome, capture_activations, estimate, evaluate
from lesion.models import build_model, load_model
from lesion.plans import Plan, cumulative, fraction, pairs, single
from lesion.search import improve, shapley
from lesion.store import Run
from lesion.studies.custom import run_study

__all__ = [
    "INTACT",
    "Dataset",
    "Layer",
    "Lesion",
    "LesionError",
    "Outcome",
    "Plan",
    "Run",
    "Split",
    "build_model",
    "capture_activations",
    "cumulative",
    "estimate",
    "evaluate",
    "fraction",
    "improve",
    "layers",
    "lesioned",
    "load_dataset",
    "load_model",
    "pairs",
    "run_study",
    "select",
    "shapley",
    "single",
    "sweep",
    "unit_means",
]
