"""CIFAR-10 from its binary distribution (``cifar-10-batches-bin``), never the pickled one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lesion._errors import LesionError, closest
from lesion.data._idx import resolve_data_dir
from lesion.data._split import Dataset, Split

FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
RECORD = 1 + 3 * 32 * 32  # one label byte, then 1024 red, 1024 green, 1024 blue pixel bytes
CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
#: Per-channel mean and standard deviation of the train split's pixels in [0, 1].
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
NORMALIZATIONS = ("unit", "half", "standard")


def cifar10(
    data_dir: str | Path | None = None, normalize: str = "unit", train: bool = True
) -> Dataset:
    """Load CIFAR-10 from the binary batches.

    Parameters
    ----------
    data_dir : path, optional
        Default: ``$LESION_DATA_DIR``. The folder ``cifar-10-batches-bin`` is looked for in
        ``<data_dir>/``, ``<data_dir>/cifar10/``, or ``data_dir`` is that folder itself.
    normalize : {"unit", "half", "standard"}
        ``unit``: x / 255; ``half``: (x / 255 - 0.5) / 0.5; ``standard``: per channel
        (x / 255 - MEAN) / STD.
    train : bool
        Load the train split (``data_batch_1..5.bin``) too.

    Returns
    -------
    Dataset
        Inputs float32 of shape (N, 3, 32, 32), labels int64 of shape (N,); class names from
        ``batches.meta.txt`` when present.
    """
    if normalize not in NORMALIZATIONS:
        raise LesionError(
            f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}{closest(normalize, NORMALIZATIONS)}"
        )
    folder = _locate(resolve_data_dir(data_dir, "cifar10"))
    meta = folder / "batches.meta.txt"
    names = (
        tuple(line.strip() for line in meta.read_text().splitlines() if line.strip())
        if meta.is_file()
        else CLASS_NAMES
    )
    if len(names) != 10:
        raise LesionError(f"{meta} should list 10 class names, found {len(names)}")

    def split(part: str, files: tuple[str, ...]) -> Split:
        x, y = zip(*(_read_batch(folder / f) for f in files), strict=True)
        return Split(
            f"cifar10/{part}",
            torch.from_numpy(_normalized(np.concatenate(x), normalize)),
            torch.from_numpy(np.concatenate(y).astype(np.int64)),
            names,
        )

    return Dataset(
        "cifar10",
        test=split("test", (TEST_FILE,)),
        train=split("train", TRAIN_FILES) if train else None,
    )


def _locate(root: Path) -> Path:
    candidates = (root / FOLDER, root / "cifar10" / FOLDER, root)
    for folder in candidates:
        if (folder / TEST_FILE).is_file():
            return folder
    raise LesionError(
        f"cifar10: {TEST_FILE} not found; looked in {', '.join(str(c) for c in candidates)}. "
        f"Download the binary version cifar-10-binary.tar.gz (MD5 c32a1d4ab5d03f1284b67883e8d87530) "
        f"from https://www.cs.toronto.edu/~kriz/cifar.html and extract it into {root}."
    )


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pixels uint8 (N, 3, 32, 32) and labels uint8 (N,) of one binary batch file."""
    if not path.is_file():
        raise LesionError(
            f"cifar10: {path} not found; the binary distribution has {FOLDER}/{path.name}"
        )
    data = np.fromfile(path, np.uint8)
    if data.size == 0 or data.size % RECORD:
        raise LesionError(
            f"{path} is corrupt: {data.size} bytes is not a whole number of {RECORD}-byte records"
        )
    records = data.reshape(-1, RECORD)
    labels = records[:, 0]
    if labels.max() >= 10:
        raise LesionError(f"{path} is corrupt: labels must be in 0..9, found {int(labels.max())}")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _normalized(pixels: np.ndarray, normalize: str) -> np.ndarray:
    """Float32 (N, 3, 32, 32) from uint8 pixels, scaled to [0, 1], then shifted and scaled per channel."""
    x = pixels.astype(np.float32)
    x /= 255
    if normalize != "unit":
        mean, std = ((0.5,) * 3, (0.5,) * 3) if normalize == "half" else (MEAN, STD)
        x -= np.asarray(mean, np.float32)[:, None, None]
        x /= np.asarray(std, np.float32)[:, None, None]
    return x
