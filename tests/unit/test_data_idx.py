"""The IDX reader, the MNIST-family loader and fetch, on tiny IDX files written here."""

from __future__ import annotations

import gzip
import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lesion._errors import LesionError
from lesion.data import _fetch as fetch_module
from lesion.data import _idx, fetch, load_dataset
from lesion.data._idx import (
    CHECKSUMS,
    IMAGES_MAGIC,
    LABELS_MAGIC,
    RAW_CHECKSUMS,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    mnist_family,
    read_idx,
)


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """An IDX file of unsigned bytes: magic, one big-endian uint32 per dimension, the payload."""
    dims = np.asarray(array.shape, ">u4").tobytes()
    return magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


RNG = np.random.default_rng(0)
TRAIN_X = RNG.integers(0, 256, (6, 28, 28), dtype=np.uint8)
TRAIN_Y = np.array([0, 1, 2, 3, 4, 9], np.uint8)
TEST_X = RNG.integers(0, 256, (4, 28, 28), dtype=np.uint8)
TEST_Y = np.array([5, 6, 7, 8], np.uint8)
ARRAYS = {
    TRAIN_IMAGES: (TRAIN_X, IMAGES_MAGIC),
    TRAIN_LABELS: (TRAIN_Y, LABELS_MAGIC),
    TEST_IMAGES: (TEST_X, IMAGES_MAGIC),
    TEST_LABELS: (TEST_Y, LABELS_MAGIC),
}


@pytest.fixture
def family_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir with tiny MNIST files in ``mnist/``, and the checksum table set to their MD5s."""
    sums = {}
    for file, (array, magic) in ARRAYS.items():
        sums[file] = md5_of(write(tmp_path / "mnist" / file, idx_bytes(array, magic)))
    monkeypatch.setitem(CHECKSUMS, "mnist", sums)
    return tmp_path


# --- read_idx -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x.gz", "x"])
def test_read_idx_gzipped_and_plain(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, idx_bytes(TEST_X, IMAGES_MAGIC))
    got = read_idx(path, IMAGES_MAGIC)
    assert got.dtype == np.uint8 and got.shape == (4, 28, 28)
    np.testing.assert_array_equal(got, TEST_X)
    np.testing.assert_array_equal(
        read_idx(write(tmp_path / "y", idx_bytes(TEST_Y, LABELS_MAGIC)), LABELS_MAGIC), TEST_Y
    )


def test_read_idx_truncated_payload(tmp_path: Path) -> None:
    path = write(tmp_path / "x.gz", idx_bytes(TEST_X, IMAGES_MAGIC)[:-1])
    with pytest.raises(LesionError, match=r"truncated.*3136 payload bytes, found 3135"):
        read_idx(path, IMAGES_MAGIC)


def test_read_idx_trailing_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "x.gz", idx_bytes(TEST_X, IMAGES_MAGIC) + b"\0")
    with pytest.raises(LesionError, match="trailing bytes"):
        read_idx(path, IMAGES_MAGIC)


def test_read_idx_wrong_magic(tmp_path: Path) -> None:
    path = write(tmp_path / "x.gz", idx_bytes(TEST_Y, LABELS_MAGIC))
    with pytest.raises(LesionError, match=r"magic number 2051 \(found 2049\)"):
        read_idx(path, IMAGES_MAGIC)
    with pytest.raises(LesionError, match="magic number"):
        read_idx(write(tmp_path / "empty", b""), LABELS_MAGIC)


def test_read_idx_broken_gzip(tmp_path: Path) -> None:
    path = write(tmp_path / "x.gz", idx_bytes(TEST_X, IMAGES_MAGIC))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(LesionError, match="not a complete gzip file"):
        read_idx(path, IMAGES_MAGIC)


# --- mnist_family ---------------------------------------------------------------------------


def test_loads_both_splits(family_dir: Path) -> None:
    ds = mnist_family("mnist", family_dir)
    assert ds.name == "mnist" and ds.train is not None
    assert ds.test.name == "mnist/test" and ds.train.name == "mnist/train"
    assert ds.test.inputs.dtype == torch.float32 and ds.test.inputs.shape == (4, 1, 28, 28)
    assert ds.train.inputs.shape == (6, 1, 28, 28)
    assert ds.test.labels.dtype == torch.int64 and ds.test.labels.tolist() == [5, 6, 7, 8]
    assert ds.train.labels.tolist() == TRAIN_Y.tolist()
    assert ds.class_names == tuple("0123456789")
    torch.testing.assert_close(ds.test.inputs[:, 0], torch.from_numpy(TEST_X).float() / 255)


@pytest.mark.parametrize(
    ("normalize", "pixel", "expected"),
    [("unit", 0, 0.0), ("unit", 255, 1.0), ("half", 0, -1.0), ("half", 255, 1.0), ("half", 51, -0.6),
     ("standard", 0, -0.1307 / 0.3081), ("standard", 255, (1 - 0.1307) / 0.3081)],
)  # fmt: skip
def test_normalization_values(
    family_dir: Path, normalize: str, pixel: int, expected: float
) -> None:
    x = mnist_family("mnist", family_dir, normalize=normalize).test.inputs
    got = x[torch.from_numpy(TEST_X[:, None] == pixel)]
    assert len(got) > 0
    torch.testing.assert_close(got, torch.full_like(got, expected))


def test_class_names_and_standard_stats() -> None:
    assert _idx.CLASS_NAMES["fashion-mnist"][0] == "T-shirt/top"
    assert _idx.CLASS_NAMES["fashion-mnist"][9] == "Ankle boot"
    assert _idx.CLASS_NAMES["kmnist"] == (
        "o",
        "ki",
        "su",
        "tsu",
        "na",
        "ha",
        "ma",
        "ya",
        "re",
        "wo",
    )
    assert _idx.STATS == {
        "mnist": (0.1307, 0.3081),
        "fashion-mnist": (0.2860, 0.3530),
        "kmnist": (0.1918, 0.3483),
    }


def test_wrong_md5_names_file_and_both_checksums(
    family_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(CHECKSUMS["mnist"], TEST_IMAGES, "0" * 32)
    actual = md5_of(family_dir / "mnist" / TEST_IMAGES)
    with pytest.raises(LesionError) as err:
        mnist_family("mnist", family_dir)
    message = str(err.value)
    assert str(family_dir / "mnist" / TEST_IMAGES) in message
    assert actual in message and "0" * 32 in message
    assert "lesion data fetch mnist" in message


def test_missing_file_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(LesionError) as err:
        mnist_family("fashion-mnist", tmp_path)
    message = str(err.value)
    assert TEST_IMAGES in message
    for folder in (tmp_path / "fashion-mnist", tmp_path / "FashionMNIST" / "raw", tmp_path):
        assert str(folder) in message
    assert CHECKSUMS["fashion-mnist"][TEST_IMAGES] in message
    assert f"lesion data fetch fashion-mnist --data-dir {tmp_path}" in message


def test_missing_train_images_warns_and_loads_test(family_dir: Path) -> None:
    (family_dir / "mnist" / TRAIN_IMAGES).unlink()
    with pytest.warns(UserWarning, match=r"train split is unavailable.*train-images-idx3-ubyte.gz"):
        ds = mnist_family("mnist", family_dir)
    assert ds.train is None and len(ds.test) == 4
    with pytest.raises(LesionError, match=r"train-images-idx3-ubyte\.gz.*not found"):
        mnist_family("mnist", family_dir, require_train=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mnist_family("mnist", family_dir, train=False).train is None


def test_corrupt_train_file_is_an_error_not_a_warning(family_dir: Path) -> None:
    (family_dir / "mnist" / TRAIN_LABELS).write_bytes(b"junk")
    with pytest.raises(LesionError, match="corrupt"):
        mnist_family("mnist", family_dir)


def test_torchvision_and_flat_layouts(
    family_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    raw = family_dir / "MNIST" / "raw"
    raw.parent.mkdir()
    (family_dir / "mnist").rename(raw)
    assert len(mnist_family("mnist", family_dir).test) == 4
    flat = tmp_path_factory.mktemp("flat")
    for file in raw.iterdir():
        file.rename(flat / file.name)
    assert len(mnist_family("mnist", flat).test) == 4


def test_unzipped_files_are_accepted_with_their_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sums = {}
    for file, (array, magic) in ARRAYS.items():
        sums[file] = md5_of(write(tmp_path / "kmnist" / file.removesuffix(".gz"), idx_bytes(array, magic)))
    monkeypatch.setitem(RAW_CHECKSUMS, "kmnist", sums)
    ds = mnist_family("kmnist", tmp_path)
    assert ds.train is not None and ds.train.labels.tolist() == TRAIN_Y.tolist()
    shifted = write(tmp_path / "kmnist" / TEST_LABELS.removesuffix(".gz"), idx_bytes(np.roll(TEST_Y, 1), LABELS_MAGIC))
    with pytest.raises(LesionError, match=f"{shifted}.*corrupt or not the original.*uncompressed bytes"):
        mnist_family("kmnist", tmp_path)
    monkeypatch.setitem(RAW_CHECKSUMS, "kmnist", {k: v for k, v in sums.items() if k != TEST_LABELS})
    with pytest.raises(LesionError, match="no checksum of the unzipped file is known"):
        mnist_family("kmnist", tmp_path)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "kmnist"])
def test_raw_checksums_are_those_of_the_real_files(name: str) -> None:
    """Each known MD5 of an unzipped file is that of the real ``.gz``'s uncompressed bytes."""
    import os

    root = Path(os.environ.get("LESION_DATA_DIR", "../shared/datasets")) / name
    present = [file for file in RAW_CHECKSUMS[name] if (root / file).is_file()]
    if not present:
        pytest.skip(f"no {name} files in {root} (set LESION_DATA_DIR)")
    for file in present:
        assert md5_of(root / file) == CHECKSUMS[name][file]
        assert hashlib.md5(gzip.decompress((root / file).read_bytes())).hexdigest() == RAW_CHECKSUMS[name][file]


def test_env_data_dir_and_none(family_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LESION_DATA_DIR", str(family_dir))
    assert len(load_dataset("mnist").test) == 4
    monkeypatch.delenv("LESION_DATA_DIR")
    with pytest.raises(LesionError, match="LESION_DATA_DIR"):
        mnist_family("mnist")


def test_bad_arguments(family_dir: Path) -> None:
    with pytest.raises(LesionError, match="closest: 'kmnist'"):
        mnist_family("kmnsit", family_dir)
    with pytest.raises(LesionError, match="closest: 'standard'"):
        mnist_family("mnist", family_dir, normalize="standrd")


def test_labels_and_counts_are_checked(family_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = write(
        family_dir / "mnist" / TEST_LABELS, idx_bytes(np.array([1, 2, 3, 10]), LABELS_MAGIC)
    )
    monkeypatch.setitem(CHECKSUMS["mnist"], TEST_LABELS, md5_of(bad))
    with pytest.raises(LesionError, match=r"labels must be in 0\.\.9"):
        mnist_family("mnist", family_dir)
    short = write(family_dir / "mnist" / TEST_LABELS, idx_bytes(np.array([1, 2, 3]), LABELS_MAGIC))
    monkeypatch.setitem(CHECKSUMS["mnist"], TEST_LABELS, md5_of(short))
    with pytest.raises(LesionError, match="N labels"):
        mnist_family("mnist", family_dir)


def test_decoded_arrays_are_cached_and_read_only(family_dir: Path) -> None:
    mnist_family("mnist", family_dir)
    hits = _idx._decode_cached.cache_info().hits
    ds = mnist_family("mnist", family_dir)
    assert _idx._decode_cached.cache_info().hits == hits + 4
    path = str(family_dir / "mnist" / TEST_IMAGES)
    cached = _idx._decode(path, IMAGES_MAGIC)
    assert not cached.flags.writeable
    ds.test.inputs.zero_()  # the Split owns its float copy: the cache is untouched
    np.testing.assert_array_equal(_idx._decode(path, IMAGES_MAGIC), TEST_X)


# --- fetch ----------------------------------------------------------------------------------


def test_fetch_skips_valid_files(family_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("fetch must not download files that are present and valid")

    monkeypatch.setattr(fetch_module.urllib.request, "urlopen", no_network)
    assert fetch("mnist", family_dir) == []


def test_fetch_network_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(fetch_module.MIRRORS, "kmnist", "http://127.0.0.1:9/")
    with pytest.raises(LesionError) as err:
        fetch("kmnist", tmp_path, timeout=5)
    message = str(err.value)
    assert "could not download http://127.0.0.1:9/train-images-idx3-ubyte.gz" in message
    assert str(tmp_path / "kmnist" / TRAIN_IMAGES) in message
    assert CHECKSUMS["kmnist"][TRAIN_IMAGES] in message
    assert list((tmp_path / "kmnist").iterdir()) == []  # no partial file left behind


def test_fetch_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(LesionError, match="closest: 'mnist'"):
        fetch("minst", tmp_path)
