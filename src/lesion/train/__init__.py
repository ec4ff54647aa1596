"""Training: networks from scratch with initial-weight snapshots, populations of seeds, recovery training."""

from __future__ import annotations

from lesion.train._recover import (
    Iteration,
    IterativeRecovery,
    Recovery,
    RecoveryCurve,
    recover,
    recover_instances,
    recover_iterative,
    should_stop,
)
from lesion.train._train import PRESETS, EpochStats, train_model, train_population

__all__ = [
    "PRESETS",
    "EpochStats",
    "Iteration",
    "IterativeRecovery",
    "Recovery",
    "RecoveryCurve",
    "recover",
    "recover_instances",
    "recover_iterative",
    "should_stop",
    "train_model",
    "train_population",
]
