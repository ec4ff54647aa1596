"""Unit attributes: weight norms, change from initialisation, class selectivity (AS, AES).

Pure functions on numpy arrays (torch tensors are accepted and detached); nothing here
runs a model.
"""

from lesion.attributes._class_specific import class_selectivity
from lesion.attributes._selectivity import (
    NO_CLASS,
    ClassMeanAccumulator,
    ablation_effect_selectivity,
    class_means,
    most_selective_counts,
    selectivity,
)
from lesion.attributes._weights import (
    INIT_DISTRIBUTIONS,
    SNAPSHOT,
    mann_whitney,
    mann_whitney_vs_init_distribution,
    weight_norms,
)

__all__ = [
    "INIT_DISTRIBUTIONS",
    "NO_CLASS",
    "SNAPSHOT",
    "ClassMeanAccumulator",
    "ablation_effect_selectivity",
    "class_means",
    "class_selectivity",
    "mann_whitney",
    "mann_whitney_vs_init_distribution",
    "most_selective_counts",
    "selectivity",
    "weight_norms",
]
