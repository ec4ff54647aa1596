"""MNIST, Fashion-MNIST and Kuzushiji-MNIST from their original gzipped IDX files.

The reader is our own: it checks each ``.gz`` against the MD5 that torchvision publishes (an unzipped
copy against the MD5 of the original's uncompressed bytes), then
the IDX header (magic number, dimensions) and that the payload length matches the header
exactly. Checksums and decoded arrays are cached per process, so repeated loads are cheap.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import warnings
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from lesion._errors import LesionError, closest
from lesion.data._split import Dataset, Split

IMAGES_MAGIC = 0x00000803  # 2051: unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # 2049: unsigned bytes, 1 dimension

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

#: MD5 of each distribution file, as published in torchvision/datasets/mnist.py.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
        TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
        TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        TRAIN_IMAGES: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        TRAIN_LABELS: "25c81989df183df01b3e8a0aad5dffbe",
        TEST_IMAGES: "bef4ecab320f06d8554ea6380940ec79",
        TEST_LABELS: "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "kmnist": {
        TRAIN_IMAGES: "bdb82020997e1d708af4cf47b453dcf7",
        TRAIN_LABELS: "e144d726b3acfaa3e44228e80efcd344",
        TEST_IMAGES: "5c965bf0a639b31b8f53240b1b52f4d7",
        TEST_LABELS: "7320c461ea6c1c855c0b718fb2a4b134",
    },
}

#: MD5 of each file's uncompressed bytes (measured on the files above), for unzipped copies.
#: KMNIST's train images are missing here: an unzipped copy of them cannot be checked, so only
#: the ``.gz`` is taken.
RAW_CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        TRAIN_IMAGES: "6bbc9ace898e44ae57da46a324031adb",
        TRAIN_LABELS: "a25bea736e30d166cdddb491f175f624",
        TEST_IMAGES: "2646ac647ad5339dbf082846283269ea",
        TEST_LABELS: "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        TRAIN_IMAGES: "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        TRAIN_LABELS: "9018921c3c673c538a1fc5bad174d6f9",
        TEST_IMAGES: "8181f5470baa50b63fa0f6fddb340f0a",
        TEST_LABELS: "15d484375f8d13e6eb1aabb0c3f46965",
    },
    "kmnist": {
        TRAIN_LABELS: "949e75301f8813e0dc5800dcc320fc52",
        TEST_IMAGES: "bf305b8cd328700fbc17f5acbc2856d2",
        TEST_LABELS: "9f55f451c0988b028eccdf7d5cc265ab",
    },
}

#: Folder names torchvision uses under ``<root>/<folder>/raw/``.
TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "kmnist": ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
}

#: Mean and standard deviation of the train split's pixels in [0, 1] (the well-known values).
STATS = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530), "kmnist": (0.1918, 0.3483)}

NORMALIZATIONS = ("unit", "half", "standard")


def mnist_family(
    name: str,
    data_dir: str | Path | None = None,
    normalize: str = "unit",
    train: bool = True,
    require_train: bool = False,
) -> Dataset:
    """Load MNIST, Fashion-MNIST or KMNIST from the original gzipped IDX files.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist", "kmnist"}
    data_dir : path, optional
        Default: ``$LESION_DATA_DIR``. Each file is looked for in ``<data_dir>/<name>/``,
        torchvision's ``<data_dir>/<MNIST|FashionMNIST|KMNIST>/raw/`` and ``<data_dir>/``,
        as ``<file>.gz`` or unzipped ``<file>``, each checked against its known MD5.
    normalize : {"unit", "half", "standard"}
        ``unit``: x / 255; ``half``: (x / 255 - 0.5) / 0.5; ``standard``: (x / 255 - mean) / std
        with the train split's mean and std (see ``STATS``).
    train : bool
        Load the train split too, when its files are present.
    require_train : bool
        Make a missing train file an error instead of a warning.

    Returns
    -------
    Dataset
        ``test`` (and ``train``, or None when its files are missing or ``train=False``) with
        inputs float32 of shape (N, 1, 28, 28) and labels int64 of shape (N,).
    """
    if name not in CHECKSUMS:
        raise LesionError(
            f"name must be one of {tuple(CHECKSUMS)}, got {name!r}{closest(name, CHECKSUMS)}"
        )
    if normalize not in NORMALIZATIONS:
        raise LesionError(
            f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}{closest(normalize, NORMALIZATIONS)}"
        )
    root = resolve_data_dir(data_dir, name)
    test = _split(name, "test", root, TEST_IMAGES, TEST_LABELS, normalize)
    train_split = None
    if train:
        try:
            train_split = _split(name, "train", root, TRAIN_IMAGES, TRAIN_LABELS, normalize)
        except _MissingFileError as missing:
            if require_train:
                raise
            warnings.warn(
                f"{name}: the train split is unavailable, loading the test split only. {missing}",
                stacklevel=2,
            )
    return Dataset(name, test=test, train=train_split)


def resolve_data_dir(data_dir: str | Path | None, name: str) -> Path:
    """``data_dir``, else ``$LESION_DATA_DIR``; a LesionError naming ``name`` when neither is set."""
    if data_dir is None:
        data_dir = os.environ.get("LESION_DATA_DIR")
        if not data_dir:
            raise LesionError(
                f"{name}: no data directory; pass data_dir (--data-dir) or set LESION_DATA_DIR"
            )
    return Path(data_dir).expanduser()


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Decode one IDX file of unsigned bytes, gzipped (``.gz``) or plain.

    Parameters
    ----------
    path : Path
    magic : int
        ``IMAGES_MAGIC`` (2051, 3 dimensions) or ``LABELS_MAGIC`` (2049, 1 dimension).

    Returns
    -------
    ndarray of uint8, read-only
        Shape (N, rows, cols) for images, (N,) for labels.
    """
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise LesionError(
                f"{path} is not a complete gzip file ({err}); the file is corrupt"
            ) from err
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
        raise LesionError(f"{path} is not an IDX file with magic number {magic} (found {found})")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        kind = "truncated" if len(data) - header < expected else "followed by trailing bytes"
        raise LesionError(
            f"{path} is {kind}: its header {shape} needs {expected} payload bytes, found {len(data) - header}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


class _MissingFileError(LesionError):
    """A distribution file is in none of the places looked."""


def _split(
    name: str, part: str, root: Path, images_file: str, labels_file: str, normalize: str
) -> Split:
    images = _decode(str(_locate(name, root, images_file)), IMAGES_MAGIC)
    labels = _decode(str(_locate(name, root, labels_file)), LABELS_MAGIC)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise LesionError(
            f"{name}/{part}: expected images (N, 28, 28) and N labels, got {images.shape} and {labels.shape}"
        )
    if labels.size and labels.max() >= 10:
        raise LesionError(f"{name}/{part}: labels must be in 0..9, found {int(labels.max())}")
    return Split(
        f"{name}/{part}",
        torch.from_numpy(_normalized(images, name, normalize)[:, None]),
        torch.from_numpy(labels.astype(np.int64)),
        CLASS_NAMES[name],
    )


def _normalized(images: np.ndarray, name: str, normalize: str) -> np.ndarray:
    """Float32 copy of ``images`` (N, 28, 28) scaled to [0, 1], then shifted and scaled."""
    x = images.astype(np.float32)
    x /= 255
    mean, std = {"unit": (0.0, 1.0), "half": (0.5, 0.5), "standard": STATS[name]}[normalize]
    if normalize != "unit":
        x -= mean
        x /= std
    return x


def _locate(name: str, root: Path, file: str) -> Path:
    """The first of ``<root>/<name>``, ``<root>/<Torchvision>/raw``, ``<root>`` holding ``file``.

    A ``.gz`` found there must have its published MD5, an unzipped copy the MD5 of the original's
    uncompressed bytes (:data:`RAW_CHECKSUMS`); an unzipped copy with no known MD5 is refused.
    """
    folders = (root / name, root / TORCHVISION_FOLDERS[name] / "raw", root)
    expected_md5 = CHECKSUMS[name][file]
    how = (
        f"Get it with `lesion data fetch {name} --data-dir {root}`, or copy the original file "
        f"(MD5 {expected_md5}) to {root / name / file}."
    )
    for folder in folders:
        gz, plain = folder / file, folder / file.removesuffix(".gz")
        if gz.is_file():
            found_md5 = md5(gz)
            if found_md5 != expected_md5:
                raise LesionError(
                    f"{gz} is corrupt or not the original: MD5 {found_md5}, expected {expected_md5}. {how}"
                )
            return gz
        if plain.is_file():
            expected_raw = RAW_CHECKSUMS[name].get(file)
            if expected_raw is None:
                raise LesionError(
                    f"{plain}: no checksum of the unzipped file is known, so it cannot be checked; "
                    f"put the original {file} (MD5 {expected_md5}) beside it instead. {how}"
                )
            found_md5 = md5(plain)
            if found_md5 != expected_raw:
                raise LesionError(
                    f"{plain} is corrupt or not the original: MD5 {found_md5}, expected {expected_raw} "
                    f"(the uncompressed bytes of {file}). {how}"
                )
            return plain
    looked = ", ".join(str(f) for f in folders)
    raise _MissingFileError(
        f"{file} (or unzipped {file.removesuffix('.gz')}) not found; looked in {looked}. {how}"
    )


def md5(path: Path) -> str:
    """MD5 hex digest of a file, cached per process on (path, size, modification time)."""
    stat = path.stat()
    return _md5(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _md5(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _decode(path: str, magic: int) -> np.ndarray:
    """``read_idx`` cached per process on the file's path and MD5 (a changed file is re-read)."""
    return _decode_cached(path, md5(Path(path)), magic)


@lru_cache(maxsize=16)
def _decode_cached(path: str, digest: str, magic: int) -> np.ndarray:
    return read_idx(Path(path), magic)
