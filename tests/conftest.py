"""Shared fixtures: every RNG seeded; real data located (or the test skipped with the reason)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from lesion.data import Dataset, load_dataset

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """Tests run tiny networks: a second OpenMP thread only adds synchronisation (and, on a busy
    2-core machine, makes each step up to 100x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits() -> Dataset:
    """The embedded digits dataset (fixed stratified split)."""
    return load_dataset("digits")


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


@pytest.fixture
def synthetic_idx(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unzipped IDX files are checked against the originals' MD5s; synthetic ones (made by a test) are accepted by name."""
    from lesion.data import _idx

    real = _idx.md5
    synthetic = {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"}

    def md5(path: Path) -> str:
        if path.name in synthetic and path.parent.name in _idx.RAW_CHECKSUMS:
            return _idx.RAW_CHECKSUMS[path.parent.name].get(path.name + ".gz", real(path))
        return real(path)

    monkeypatch.setattr(_idx, "md5", md5)
