"""scikit-learn's bundled 8x8 digits: the embedded default, no download."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from lesion.data._split import Dataset, Split


def digits(test_size: float = 0.3, seed: int = 0, train: bool = True) -> Dataset:
    """Digits as (N, 1, 8, 8) float32 in [0, 1], split by a fixed stratified shuffle.

    The split depends only on ``seed`` (default 0), so every run sees the same test set;
    ``train=False`` leaves the train split out.
    """
    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    y = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=test_size, stratify=y, random_state=seed
    )
    names = tuple(str(c) for c in range(10))

    def split(part: str, idx: np.ndarray) -> Split:
        idx = np.sort(idx)
        return Split(f"digits/{part}", torch.from_numpy(x[idx]), torch.from_numpy(y[idx]), names)

    return Dataset("digits", test=split("test", idx_test), train=split("train", idx_train) if train else None)
