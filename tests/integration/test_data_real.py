"""The MNIST family from the real files in ../shared/datasets (or $LESION_DATA_DIR)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lesion.data import load_dataset
from lesion.data._idx import CHECKSUMS, FILES, STATS, md5

pytestmark = pytest.mark.integration

DATA_DIR = Path(
    os.environ.get("LESION_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "datasets"
)


def require(name: str) -> None:
    if not (DATA_DIR / name).is_dir():
        pytest.skip(f"no {name} folder in {DATA_DIR}: set LESION_DATA_DIR to the shared datasets")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_complete_datasets(name: str) -> None:
    require(name)
    for file in FILES:
        assert md5(DATA_DIR / name / file) == CHECKSUMS[name][file]
    ds = load_dataset(name, DATA_DIR)
    assert ds.train is not None
    assert ds.test.inputs.shape == (10000, 1, 28, 28)
    assert ds.train.inputs.shape == (60000, 1, 28, 28)
    assert ds.test.inputs.min() >= 0 and ds.test.inputs.max() <= 1
    test_counts = torch.bincount(ds.test.labels, minlength=10)
    train_counts = torch.bincount(ds.train.labels, minlength=10)
    assert len(test_counts) == 10 and test_counts.sum() == 10000 and train_counts.sum() == 60000
    if name == "mnist":
        assert test_counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    else:
        assert test_counts.tolist() == [1000] * 10 and train_counts.tolist() == [6000] * 10
    mean, std = STATS[name]
    assert ds.train.inputs.mean().item() == pytest.approx(mean, abs=5e-4)
    assert ds.train.inputs.std().item() == pytest.approx(std, abs=5e-4)


def test_kmnist_test_split_only() -> None:
    require("kmnist")
    if (DATA_DIR / "kmnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("the KMNIST train images are present: the test-only fallback does not apply")
    with pytest.warns(UserWarning, match="kmnist: the train split is unavailable"):
        ds = load_dataset("kmnist", DATA_DIR, normalize="standard")
    assert ds.train is None
    assert ds.test.inputs.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.test.labels).tolist() == [1000] * 10
    assert ds.class_names[:3] == ("o", "ki", "su")
