"""Analyses that evaluate many chosen lesions: Shapley values of units and lesions that improve a network."""

from lesion.search._improve import ImproveResult, improve, training_part, validation_split
from lesion.search._shapley import (
    GROUPINGS,
    ShapleyResult,
    coalition,
    cross_entropy,
    players_of,
    shapley,
)

__all__ = [
    "GROUPINGS",
    "ImproveResult",
    "ShapleyResult",
    "coalition",
    "cross_entropy",
    "improve",
    "players_of",
    "shapley",
    "training_part",
    "validation_split",
]
