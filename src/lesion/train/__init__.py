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
from lesion.train._train import (
    OPTIMIZERS,
    PRESETS,
    EpochStats,
    corrupt_labels,
    train_model,
    train_population,
    variant,
)

__all__ = [
    "OPTIMIZERS",
    "PRESETS",
    "EpochStats",
    "Iteration",
    "IterativeRecovery",
    "Recovery",
    "RecoveryCurve",
    "corrupt_labels",
    "recover",
    "recover_instances",
    "recover_iterative",
    "should_stop",
    "train_model",
    "train_population",
    "variant",
]
