"""CIFAR-10 binary batches and image folders, on tiny synthetic files written here."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lesion._errors import LesionError
from lesion.data import load_dataset
from lesion.data._cifar import CLASS_NAMES, MEAN, STD, cifar10
from lesion.data._folder import ImageFiles, image_folder

# --- CIFAR-10 -------------------------------------------------------------------------------


def cifar_records(labels: list[int], seed: int) -> tuple[bytes, np.ndarray]:
    """Binary records (label byte + 3072 pixel bytes) and their pixels, uint8 (N, 3, 32, 32)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    rows = np.concatenate(
        [np.array(labels, np.uint8)[:, None], pixels.reshape(len(labels), -1)], axis=1
    )
    return rows.tobytes(), pixels


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(cifar_records([i, 9 - i], seed=i)[0])
    (folder / "test_batch.bin").write_bytes(cifar_records([3, 0, 7], seed=0)[0])
    (folder / "batches.meta.txt").write_text("\n".join(CLASS_NAMES) + "\n\n")
    return tmp_path


def test_cifar_shapes_labels_and_pixel_layout(cifar_dir: Path) -> None:
    ds = cifar10(cifar_dir)
    _, pixels = cifar_records([3, 0, 7], seed=0)
    assert ds.test.inputs.dtype == torch.float32 and ds.test.inputs.shape == (3, 3, 32, 32)
    assert ds.test.labels.dtype == torch.int64 and ds.test.labels.tolist() == [3, 0, 7]
    torch.testing.assert_close(ds.test.inputs, torch.from_numpy(pixels).float() / 255)
    assert ds.train is not None and ds.train.inputs.shape == (10, 3, 32, 32)
    assert ds.train.labels.tolist() == [1, 8, 2, 7, 3, 6, 4, 5, 5, 4]
    assert ds.class_names == CLASS_NAMES and ds.test.name == "cifar10/test"


def test_cifar_record_is_label_then_red_green_blue(tmp_path: Path) -> None:
    record = bytes([4]) + bytes([10]) * 1024 + bytes([20]) * 1024 + bytes([30]) * 1024
    (tmp_path / "test_batch.bin").write_bytes(record)
    ds = cifar10(tmp_path, train=False)  # data_dir may be the batches folder itself
    assert ds.train is None and ds.test.labels.tolist() == [4]
    assert ds.test.inputs[0, :, 5, 7].mul(255).round().tolist() == [10, 20, 30]
    assert ds.class_names == CLASS_NAMES  # no batches.meta.txt: the standard names


def test_cifar_normalizations(cifar_dir: Path) -> None:
    unit = cifar10(cifar_dir, train=False).test.inputs
    half = cifar10(cifar_dir, "half", train=False).test.inputs
    standard = load_dataset("cifar10", cifar_dir, normalize="standard", train=False).test.inputs
    torch.testing.assert_close(half, (unit - 0.5) / 0.5)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(standard, (unit - mean) / std)


def test_cifar_missing_and_corrupt(
    cifar_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(
        LesionError, match=r"test_batch\.bin not found.*cifar-10-binary\.tar\.gz"
    ) as err:
        cifar10(empty)
    assert str(empty / "cifar-10-batches-bin") in str(err.value)
    batches = cifar_dir / "cifar-10-batches-bin"
    (batches / "data_batch_3.bin").unlink()
    with pytest.raises(LesionError, match=r"data_batch_3\.bin not found"):
        cifar10(cifar_dir)
    (batches / "test_batch.bin").write_bytes(b"\0" * 3074)
    with pytest.raises(LesionError, match="corrupt: 3074 bytes"):
        cifar10(cifar_dir, train=False)
    with pytest.raises(LesionError, match="closest: 'half'"):
        cifar10(cifar_dir, "hlf")


# --- image folders --------------------------------------------------------------------------


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def random_image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3))


@pytest.fixture
def classes_dir(tmp_path: Path) -> Path:
    """Two class folders, ``cat`` and ``dog``, of PNGs of different sizes (one grey)."""
    root = tmp_path / "val"
    save(root / "dog" / "d1.png", random_image(300, 260, 1))
    save(root / "cat" / "c2.png", random_image(240, 400, 2))
    save(root / "cat" / "c1.png", random_image(256, 256, 3))
    save(root / "dog" / "sub" / "d0.png", random_image(230, 231, 4))
    Image.fromarray(np.full((250, 300), 7, np.uint8)).save(root / "dog" / "grey.png")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_class_folders(classes_dir: Path) -> None:
    ds = image_folder(classes_dir)
    assert ds.train is None and ds.test.name == "folder/test"
    assert ds.class_names == ("cat", "dog")
    assert ds.test.labels.dtype == torch.int64 and ds.test.labels.tolist() == [0, 0, 1, 1, 1]
    assert isinstance(ds.test.inputs, ImageFiles)
    assert ds.test.inputs.files == [
        "cat/c1.png",
        "cat/c2.png",
        "dog/d1.png",
        "dog/grey.png",
        "dog/sub/d0.png",
    ]
    assert ds.test.input_shape == (3, 224, 224)
    x, y = ds.test.inputs[3]
    assert x.dtype == torch.float32 and y == 1
    grey = (7 / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(x, grey.view(3, 1, 1).expand(3, 224, 224))


def test_centre_crop_by_hand(tmp_path: Path) -> None:
    """7 wide x 5 high, shorter side already 5: no resize; crop 2x2 at top round(1.5)=2, left round(2.5)=2."""
    pixels = np.arange(5 * 7 * 3).reshape(5, 7, 3)
    save(tmp_path / "a" / "x.png", pixels)
    ds = image_folder(tmp_path, image_size=2, resize=5, mean=(0, 0, 0), std=(1, 1, 1))
    x, _ = ds.test.inputs[0]
    expected = torch.tensor(pixels[2:4, 2:4], dtype=torch.float32).permute(2, 0, 1) / 255
    torch.testing.assert_close(x, expected)


def test_resize_shorter_side_bilinear(tmp_path: Path) -> None:
    """1 high x 2 wide [0, 255] -> shorter side 2: 2 x 4, bilinear [0, 64, 191, 255]; centre 2 x 2."""
    save(tmp_path / "a" / "x.png", np.array([[[0] * 3, [255] * 3]]))
    ds = image_folder(tmp_path, image_size=2, resize=2, mean=(0, 0, 0), std=(1, 1, 1))
    x, _ = ds.test.inputs[0]
    expected = torch.tensor([64.0, 191.0]).div(255).expand(3, 2, 2)
    torch.testing.assert_close(x, expected)


def test_workers_give_identical_batches(classes_dir: Path) -> None:
    split = image_folder(classes_dir, image_size=32, resize=40).test
    serial = list(split.batches(2, workers=0))
    parallel = list(split.batches(2, workers=2))
    assert [len(y) for _, y in serial] == [2, 2, 1]
    for (x0, y0), (x2, y2) in zip(serial, parallel, strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    assert serial[0][0].shape == (2, 3, 32, 32) and serial[0][1].dtype == torch.int64


def test_labels_file_and_csv(tmp_path: Path) -> None:
    for i, name in enumerate(["b.png", "a.png", "c.jpg"]):
        save(tmp_path / "flat" / name, random_image(20 + i, 30, i))
    (tmp_path / "labels.txt").write_text("# file label\nb.png 1\na.png 0\n\nc.jpg 1\n")
    ds = image_folder(
        tmp_path / "flat", labels_file=tmp_path / "labels.txt", image_size=8, resize=10
    )
    assert ds.test.inputs.files == ["a.png", "b.png", "c.jpg"]
    assert ds.test.labels.tolist() == [0, 1, 1] and ds.class_names == ("0", "1")
    assert ds.test.inputs[2][0].shape == (3, 8, 8)
    (tmp_path / "labels.csv").write_text("file,label\nc.jpg,dog\na.png,cat\nb.png,dog\n")
    ds = image_folder(tmp_path / "flat", labels_file=tmp_path / "labels.csv")
    assert ds.class_names == ("cat", "dog") and ds.test.labels.tolist() == [0, 1, 1]


def test_train_and_val_folders(classes_dir: Path, tmp_path: Path) -> None:
    train = tmp_path / "train"
    for name in ("cat", "dog", "emu"):
        save(train / name / "t.png", random_image(10, 12, 0))
    ds = load_dataset("folder", train_dir=train, val_dir=classes_dir)
    assert ds.train is not None and ds.train.name == "folder/train"
    assert ds.class_names == ("cat", "dog", "emu") and ds.train.labels.tolist() == [0, 1, 2]
    assert ds.test.labels.tolist() == [0, 0, 1, 1, 1]
    (tmp_path / "val.csv").write_text("file,label\ncat/c1.png,emu\n")
    ds = image_folder(train_dir=train, val_dir=classes_dir, labels_file=tmp_path / "val.csv")
    assert ds.test.labels.tolist() == [2]
    save(classes_dir / "cow" / "x.png", random_image(10, 12, 0))
    with pytest.raises(LesionError, match="'cow' is not a class of the train folder"):
        image_folder(train_dir=train, val_dir=classes_dir)


def test_fingerprint_source(classes_dir: Path) -> None:
    first = image_folder(classes_dir).test
    assert first.fingerprint_source is not None
    assert first.fingerprint() == image_folder(classes_dir).test.fingerprint()
    assert (
        first.fingerprint_source
        != image_folder(classes_dir, image_size=200).test.fingerprint_source
    )
    save(classes_dir / "cat" / "c1.png", random_image(256, 255, 3))  # a different file size
    assert first.fingerprint_source != image_folder(classes_dir).test.fingerprint_source


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(LesionError, match="is not a folder"):
        image_folder(tmp_path / "nowhere")
    with pytest.raises(LesionError, match=f"{re.escape(str(tmp_path))} has no class sub-folders"):
        image_folder(tmp_path)
    (tmp_path / "cat").mkdir()
    with pytest.raises(LesionError, match=f"{re.escape(str(tmp_path))} holds no images"):
        image_folder(tmp_path)
    with pytest.raises(LesionError, match=r"labels_file: .*missing\.txt not found"):
        image_folder(tmp_path, labels_file=tmp_path / "missing.txt")
    (tmp_path / "l.txt").write_text("gone.png 0\n")
    with pytest.raises(LesionError, match=r"names 'gone\.png'"):
        image_folder(tmp_path, labels_file=tmp_path / "l.txt")
    (tmp_path / "l.csv").write_text("path,label\n")
    with pytest.raises(LesionError, match="needs columns 'file' and 'label'"):
        image_folder(tmp_path, labels_file=tmp_path / "l.csv")
    with pytest.raises(LesionError, match="image_size <= resize"):
        image_folder(tmp_path, image_size=300)
    with pytest.raises(LesionError, match=r"data_dir \(--data-dir\) or val_dir"):
        image_folder()
