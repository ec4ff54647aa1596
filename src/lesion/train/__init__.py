"""Training: networks from scratch with initial-weight snapshots, populations of seeds, recovery training."""

from __future__ import annotations

from lesion.train._recover import (
    PROTOCOLS,
    Iteration,
    IterativeRecovery,
    Recovery,
    RecoveryCurve,
    RecoveryResult,
    history_tables,
    recover,
    recover_instances,
    recover_iterative,
    run_recovery,
    seeded_subset,
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
    "PROTOCOLS",
    "EpochStats",
    "Iteration",
    "IterativeRecovery",
    "Recovery",
    "RecoveryCurve",
    "RecoveryResult",
    "corrupt_labels",
    "history_tables",
    "recover",
    "recover_instances",
    "recover_iterative",
    "run_recovery",
    "seeded_subset",
    "should_stop",
    "train_model",
    "train_population",
    "variant",
]
