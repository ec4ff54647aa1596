"""Datasets: the embedded digits, the MNIST family from raw IDX files, CIFAR-10 (binary), image folders.

``load_dataset(name, data_dir=None, normalize=None)`` returns a :class:`Dataset` with a ``test``
split and, where one exists, a ``train`` split.
"""

from __future__ import annotations

from pathlib import Path

from lesion._errors import LesionError, closest
from lesion.data._digits import digits
from lesion.data._fetch import fetch
from lesion.data._split import Dataset, Split

DATASETS = ("digits", "mnist", "fashion-mnist", "kmnist", "cifar10", "folder")
NORMALIZATIONS = ("unit", "half", "standard")


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    normalize: str | None = None,
    **kwargs: object,
) -> Dataset:
    """Load a dataset by name.

    Parameters
    ----------
    name : {"digits", "mnist", "fashion-mnist", "kmnist", "cifar10", "folder"}
    data_dir : path, optional
        Where the files are; default: ``$LESION_DATA_DIR``. Unused for ``digits``.
    normalize : {"unit", "half", "standard"}, optional
        ``unit``: pixels in [0, 1] (default); ``half``: N(0.5, 0.5), i.e. [-1, 1], as the 2020 CNN;
        ``standard``: the dataset's own mean and standard deviation.
    """
    if normalize is not None and normalize not in NORMALIZATIONS:
        raise LesionError(
            f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}{closest(normalize, NORMALIZATIONS)}"
        )
    if name == "digits":
        return digits(**kwargs)  # type: ignore[arg-type]
    if name in ("mnist", "fashion-mnist", "kmnist"):
        from lesion.data._idx import mnist_family

        return mnist_family(name, data_dir, normalize=normalize or "unit", **kwargs)  # type: ignore[arg-type]
    if name == "cifar10":
        from lesion.data._cifar import cifar10

        return cifar10(data_dir, normalize=normalize or "unit", **kwargs)  # type: ignore[arg-type]
    if name == "folder":
        from lesion.data._folder import image_folder

        return image_folder(data_dir, **kwargs)  # type: ignore[arg-type]
    raise LesionError(f"unknown dataset {name!r}; expected one of {DATASETS}{closest(name, DATASETS)}")


__all__ = ["DATASETS", "NORMALIZATIONS", "Dataset", "Split", "digits", "fetch", "load_dataset"]
