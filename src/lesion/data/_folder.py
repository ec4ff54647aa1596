"""ImageNet-style image folders, decoded lazily (Pillow + numpy + torch, no torchvision).

A folder is either one sub-folder per class (class index = position of the folder name in the
sorted list, as torchvision's ``ImageFolder``) or a flat folder of images plus a labels file.
Each image goes through the standard evaluation transform: resize the shorter side to
``resize`` (bilinear), centre-crop ``image_size``, scale to [0, 1], normalise by mean and std
per channel: the same numbers as torchvision's ``Resize``/``CenterCrop``/``ToTensor``/``Normalize``.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset as TorchDataset

from lesion._errors import LesionError, closest
from lesion.data._split import Dataset, Split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ImageFiles(TorchDataset):
    """Images decoded on access: item ``i`` is ``(x, label)``, x float32 of shape (3, S, S).

    Parameters
    ----------
    root : Path
    files : sequence of str
        Paths relative to ``root``.
    labels : Tensor of shape (N,), int64
    image_size, resize : int
        Centre-crop side S and the shorter side after resizing.
    mean, std : sequence of 3 floats
    """

    def __init__(
        self,
        root: Path,
        files: Sequence[str],
        labels: Tensor,
        image_size: int,
        resize: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.root = root
        self.files = list(files)
        self.labels = labels
        self.image_size = image_size
        self.resize = resize
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        path = self.root / self.files[i]
        try:
            with Image.open(path) as img:
                pixels = _resize_crop(img.convert("RGB"), self.resize, self.image_size)
        except OSError as err:
            raise LesionError(f"cannot decode image {path}: {err}") from err
        x = torch.from_numpy(pixels).permute(2, 0, 1).float().div(255)
        return x.sub_(self.mean).div_(self.std), int(self.labels[i])


def image_folder(
    data_dir: str | Path | None = None,
    *,
    train_dir: str | Path | None = None,
    val_dir: str | Path | None = None,
    labels_file: str | Path | None = None,
    image_size: int = 224,
    resize: int = 256,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
) -> Dataset:
    """An image-folder dataset, e.g. ImageNet's validation set.

    Parameters
    ----------
    data_dir : path, optional
        The evaluation folder alone (the ``test`` split; no train split). Same as ``val_dir``.
    train_dir, val_dir : path, optional
        Train and evaluation folders; ``train_dir`` must have one sub-folder per class, and
        its sorted folder names fix the class indices of both splits.
    labels_file : path, optional
        For a flat evaluation folder: lines ``filename label``, or a ``.csv`` with columns
        ``file,label``. A label is a class index or a class name.
    image_size : int
        Side S of the centre crop.
    resize : int
        The shorter side is resized to this (bilinear) before cropping; >= ``image_size``.
    mean, std : sequence of 3 floats
        Per-channel normalisation of pixels in [0, 1].

    Returns
    -------
    Dataset
        Splits whose ``inputs`` is an :class:`ImageFiles` (x of shape (3, S, S)), ``labels``
        the int64 labels of shape (N,) and ``fingerprint_source`` a digest of the relative
        paths, sizes, labels and transform.
    """
    if data_dir is not None and val_dir is not None:
        raise LesionError(f"give data_dir or val_dir, not both (got {data_dir} and {val_dir})")
    val_dir = val_dir if val_dir is not None else data_dir
    if val_dir is None:
        raise LesionError(
            "image_folder needs the evaluation folder: data_dir (--data-dir) or val_dir"
        )
    if not 0 < image_size <= resize:
        raise LesionError(
            f"need 0 < image_size <= resize, got image_size={image_size}, resize={resize}"
        )
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise LesionError(
            f"mean and std must have 3 values each, std > 0; got mean={mean}, std={std}"
        )
    transform = (image_size, resize, tuple(mean), tuple(std))

    classes = None
    train = None
    if train_dir is not None:
        train_root = _existing_dir(train_dir, "train_dir")
        classes = _class_folders(train_root)
        if not classes:
            raise LesionError(f"train_dir {train_root} has no class sub-folders")
        train = _split("train", train_root, *_scan_classes(train_root, classes), classes, transform)
    val_root = _existing_dir(val_dir, "val_dir" if data_dir is None else "data_dir")
    if labels_file is not None:
        files, labels, classes = _read_labels_file(Path(labels_file), val_root, classes)
    else:
        if classes is None:
            classes = _class_folders(val_root)
        if not classes:
            raise LesionError(
                f"{val_root} has no class sub-folders; for a flat folder of images give labels_file"
            )
        files, labels = _scan_classes(val_root, classes)
    return Dataset(
        "folder", test=_split("test", val_root, files, labels, classes, transform), train=train
    )


def _resize_crop(img: Image.Image, resize: int, size: int) -> np.ndarray:
    """Shorter side to ``resize`` (bilinear), then the centre ``size`` x ``size``: uint8 (size, size, 3).

    Rounding as torchvision: the longer side is truncated, the crop offset rounded half to even.
    """
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(resize * long / short)
    new_w, new_h = (resize, new_long) if w <= h else (new_long, resize)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top, left = round((new_h - size) / 2), round((new_w - size) / 2)
    return np.array(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _existing_dir(path: str | Path, parameter: str) -> Path:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise LesionError(f"{parameter}: {root} is not a folder")
    return root


def _class_folders(root: Path) -> tuple[str, ...]:
    return tuple(
        sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    )


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _scan_classes(root: Path, classes: tuple[str, ...]) -> tuple[list[str], list[int]]:
    """Relative paths (sorted) and class indices of the images under ``root/<class>/``."""
    found = set(_class_folders(root))
    unknown = sorted(found - set(classes))
    if unknown:
        raise LesionError(
            f"{root}: class folder {unknown[0]!r} is not a class of the train folder{closest(unknown[0], classes)}"
        )
    files, labels = [], []
    for index, name in enumerate(classes):
        if name in found:
            images = sorted(
                p.relative_to(root).as_posix() for p in (root / name).rglob("*") if _is_image(p)
            )
            files += images
            labels += [index] * len(images)
    if not files:
        raise LesionError(
            f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in its class folders"
        )
    return files, labels


def _read_labels_file(
    path: Path, root: Path, classes: tuple[str, ...] | None
) -> tuple[list[str], list[int], tuple[str, ...]]:
    """Files (sorted), class indices and class names from a labels file for the flat folder ``root``.

    Labels are class indices when they are all integers, else class names. Without known
    ``classes``, integer labels name classes "0".."max" and name labels give sorted classes.
    """
    if not path.is_file():
        raise LesionError(f"labels_file: {path} not found")
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            for column in ("file", "label"):
                if column not in columns:
                    raise LesionError(
                        f"labels_file {path}: needs columns 'file' and 'label', found {columns}{closest(column, columns)}"
                    )
            pairs = [(row["file"].strip(), row["label"].strip()) for row in reader]
    else:
        pairs = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                fields = line.strip().rsplit(maxsplit=1)
                if len(fields) != 2:
                    raise LesionError(
                        f"labels_file {path}, line {number}: expected 'filename label', got {line!r}"
                    )
                pairs.append((fields[0], fields[1]))
    if not pairs:
        raise LesionError(f"labels_file {path} lists no images")
    pairs.sort()
    for file, _ in pairs:
        if not _is_image(root / file):
            raise LesionError(
                f"labels_file {path} names {file!r}, but {root / file} is not an image file"
            )
    raw = [label for _, label in pairs]
    if all(label.lstrip("-").isdigit() for label in raw):
        indices = [int(label) for label in raw]
        if classes is None:
            classes = tuple(str(c) for c in range(max(indices) + 1))
        bad = [i for i in indices if not 0 <= i < len(classes)]
        if bad:
            raise LesionError(
                f"labels_file {path}: class index {bad[0]} is not in 0..{len(classes) - 1}"
            )
    else:
        if classes is None:
            classes = tuple(sorted(set(raw)))
        position = {name: i for i, name in enumerate(classes)}
        unknown = [label for label in raw if label not in position]
        if unknown:
            raise LesionError(
                f"labels_file {path}: {unknown[0]!r} is not a class name{closest(unknown[0], classes)}"
            )
        indices = [position[label] for label in raw]
    return [file for file, _ in pairs], indices, classes


def _split(
    part: str,
    root: Path,
    files: list[str],
    labels: list[int],
    classes: tuple[str, ...],
    transform: tuple[int, int, tuple[float, ...], tuple[float, ...]],
) -> Split:
    image_size, resize, mean, std = transform
    h = hashlib.sha256(repr(transform).encode())
    for file, label in zip(files, labels, strict=True):
        h.update(f"{file}\t{(root / file).stat().st_size}\t{label}\n".encode())
    label_tensor = torch.tensor(labels, dtype=torch.long)
    return Split(
        f"folder/{part}",
        ImageFiles(root, files, label_tensor, image_size, resize, mean, std),
        label_tensor,
        classes,
        fingerprint_source=f"image-folder:{h.hexdigest()}",
    )
