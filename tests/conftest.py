"""Shared fixtures: every RNG seeded; real data located (or the test skipped with the reason)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def real_data_dir(name: str, *files: str) -> Path:
    """The directory holding ``name``'s IDX files, or skip the test saying where it looked."""
    roots = [Path(p) for p in [os.environ.get("LESION_DATA_DIR")] if p] + [SHARED_DATA]
    for root in roots:
        if all((root / name / f).is_file() for f in files):
            return root
    pytest.skip(f"real {name} files {list(files)} not found under {[str(r) for r in roots]} (set LESION_DATA_DIR)")
