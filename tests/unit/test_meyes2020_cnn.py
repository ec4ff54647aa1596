"""The Meyes et al. (2020) study: its plans, its compositions of AS / AES / bars, and the command end to end."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fixtures.regression import cnn_args, cnn_checkpoint
from lesion import LesionError
from lesion.cli import app
from lesion.models import meyes2020_cnn
from lesion.plans import fraction
from lesion.plots._cnn import LayerLesionBars
from lesion.stats import class_drops
from lesion.studies.meyes2020_cnn import _analysis as analysis
from lesion.studies.meyes2020_cnn._stages import LESION_LAYERS, run_meyes2020_cnn

# --- synthetic MNIST-family files -----------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x803 if array.ndim == 3 else 0x801
    path.write_bytes(struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes())


def fake_mnist_family(root: Path, name: str, n_test: int, n_train: int | None) -> Path:
    """Unzipped IDX files of class-coded 28x28 images (class c: a bright band at rows 2c..2c+3)."""
    folder = root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    parts = {"t10k": n_test} | ({"train": n_train} if n_train else {})
    for part, n in parts.items():
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 * c + 2 : 2 * c + 6, 4:24] = 255
        write_idx(folder / f"{part}-images-idx3-ubyte", images)
        write_idx(folder / f"{part}-labels-idx1-ubyte", labels)
    return root


# --- plans and compositions -----------------------------------------------------------------


def test_random_draws_are_reproducible_from_the_seed_and_without_replacement() -> None:
    model = meyes2020_cnn()
    plan = fraction(model, list(LESION_LAYERS), 0.5, "random", seed=3, draws=100)
    again = fraction(model, list(LESION_LAYERS), 0.5, "random", seed=3, draws=100)
    other = fraction(model, list(LESION_LAYERS), 0.5, "random", seed=4, draws=100)
    assert plan.keys == again.keys and plan.info["draws"] == again.info["draws"]
    assert plan.keys != other.keys
    draws = plan.info["draws"]
    assert len(draws) == 600
    sizes = {"conv1": 32, "conv2": 32, "conv3": 32, "fc1": 256, "fc2": 256, "out": 5}
    for layer, p, _, units in draws:
        assert p == 0.5 and len(set(units)) == len(units) == sizes[layer]
    assert sum(len(m) for m in plan.info["members"].values()) == 600


def aes_units() -> pd.DataFrame:
    """Two conv kernels (2x2 positions each) and one fc unit with hand-set AES."""
    return pd.DataFrame(
        {
            "layer": ["conv1", "conv1", "fc1"],
            "unit": [0, 1, 0],
            "aes": [-0.5, 0.25, -1.0],
            "aes_scaled": [0.5, 1.0, 1.0],
            "aes_class": [2, 1, 2],
            "sign": [-1, 1, -1],
        }
    )


def as_neurons() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "column": range(9),
            "layer": ["conv1"] * 8 + ["fc1"],
            "unit": [0, 0, 0, 0, 1, 1, 1, 1, 0],
            "position": [0, 1, 2, 3, 0, 1, 2, 3, 0],
            "AS": [0.1, 0.2, 0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
            "preferred_class": [0, 1, -1, 1, 1, 1, 2, 2, 0],
        }
    )


def test_a_kernels_aes_is_shared_by_its_spatial_neurons() -> None:
    neurons = analysis.neuron_table(as_neurons(), aes_units())
    assert len(neurons) == 9
    for (layer, unit), group in neurons.groupby(["layer", "unit"]):
        row = aes_units().set_index(["layer", "unit"]).loc[(layer, unit)]
        assert (group["aes"] == row["aes"]).all() and (group["aes_class"] == row["aes_class"]).all()
    counts = analysis.selective_counts(neurons, ["a", "b", "c"])
    # AES: kernel 0 (4 neurons) and the fc unit hurt class 2; kernel 1 (4 neurons) helps class 1.
    assert counts["n_aes"].tolist() == [0, 4, 5]
    assert counts["n_aes_negative"].tolist() == [0, 0, 5] and counts["n_aes_positive"].tolist() == [0, 4, 0]
    # AS: a neuron with AS 0 or class -1 prefers nothing.
    assert counts["n_as"].tolist() == [2, 4, 2]


def test_a_neuron_without_a_single_lesion_gets_no_aes() -> None:
    neurons = analysis.neuron_table(as_neurons(), aes_units().iloc[:2])
    fc = neurons[neurons["layer"] == "fc1"].iloc[0]
    assert fc["aes"] == 0 and fc["aes_class"] == -1 and fc["aes_sign"] == 0


def effects_table() -> pd.DataFrame:
    rows = []
    changes = {"conv1": [-0.1, 0.02], "conv2": [-0.2, -0.05], "out": [0.05, -0.3]}
    for layer, per_class in changes.items():
        for c, change in enumerate(per_class):
            rows.append((layer, 0.5, c, f"class{c}", change, 0.01, 3))
        rows.append((layer, 0.5, -1, "all", float(np.mean(per_class)), 0.01, 3))
    return pd.DataFrame(rows, columns=["layer", "fraction", "class", "class_name", "mean_change", "std_change", "n_draws"])


def test_stacked_layer_bars_sum_to_the_class_totals() -> None:
    bars = LayerLesionBars.from_effects(effects_table(), 0.5)
    assert list(bars.changes.columns) == ["conv1", "conv2", "out"]
    np.testing.assert_allclose(bars.totals, [-0.25, -0.33])
    drops = class_drops(effects_table(), 0.5)
    np.testing.assert_allclose(drops["total"], bars.totals)
    segments = bars.segments()
    # signed heights add up to the total; negatives stack below 0, positives above, without overlap
    np.testing.assert_allclose(sum(h for _, h in segments.values()), 100 * bars.totals)
    bottom, height = segments["conv2"]
    np.testing.assert_allclose(bottom, [-10, 0])
    np.testing.assert_allclose(height, [-20, -5])
    np.testing.assert_allclose(segments["out"][0], [0, -5])
    with pytest.raises(LesionError, match=r"no effects for 0\.3"):
        LayerLesionBars.from_effects(effects_table(), 0.3)


def test_error_vs_drop_is_positive_when_harder_classes_lose_more() -> None:
    accuracy = pd.Series([0.99, 0.9, 0.8, 0.7], index=list("abcd"))
    total_change = pd.Series([-0.01, -0.05, -0.1, -0.2], index=list("abcd"))
    result = analysis.error_vs_drop(accuracy, total_change)
    assert result.spearman_r == pytest.approx(1.0)


# --- the command end to end -----------------------------------------------------------------


def test_training_without_the_train_split_names_the_file_and_checkpoint(tmp_path) -> None:
    root = fake_mnist_family(tmp_path / "data", "kmnist", n_test=20, n_train=None)
    with pytest.raises(LesionError, match=r"train-images-idx3-ubyte\.gz.*--checkpoint"):
        run_meyes2020_cnn(tmp_path / "study", dataset="kmnist", data_dir=root, epochs=1)
    assert not (tmp_path / "study").exists()  # nothing claimed: a rerun with --checkpoint may use it


@pytest.mark.slow
def test_reproduce_end_to_end_at_a_tiny_scale(tmp_path) -> None:
    root, checkpoint = cnn_checkpoint(tmp_path)
    out = tmp_path / "study"
    args = cnn_args(root, checkpoint, out)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "kmnist: top-1" in result.output
    stems = [
        "layer-lesions-50pct", "activation-space-intact", "activation-space-lesioned-conv1",
        "neurons-by-layer", "neurons-by-class",
    ]
    for stem in stems:
        for suffix in (".png", ".svg"):
            assert (out / "figures" / f"{stem}{suffix}").stat().st_size > 0
    summary = (out / "summary.md").read_text()
    for row in [
        "| test accuracy (top-1) | 95.3 %", "| Spearman: class error vs accuracy drop", "r = 0.60, p = 0.07",
        "| Pearson: most-selective neurons per class (AS) vs class NH | r = 0.30, p = 0.40",
        "| Pearson: most-selective neurons per class (AES) vs class NH | r = 0.50, p = 0.14",
        "| AS-selective neurons, class 1 / class 2", "| AES-selective neurons, class 1 / class 2",
        "| lesion of 50 % of conv1", "| NH rises along the layers", "100 test images", "60 test images",
    ]:
        assert row in summary, row
    for stage in ("sweep", "capture", "selectivity", "horizontal reduction", "vertical reduction", "figures"):
        assert re.search(rf"\| {stage} \| [\d,.]+ s \|", summary), stage
    classes = pd.read_csv(out / "tables" / "classes.csv")
    neurons = pd.read_csv(out / "tables" / "neurons.csv")
    assert len(classes) == 10 and len(neurons) == 4 * (196 + 49 + 9) + 1024
    assert classes["n_aes"].sum() == ((neurons["aes_class"] >= 0) & (neurons["aes"] != 0)).sum()
    assert np.load(out / "activations" / "intact.npy", mmap_mode="r").shape == (100, len(neurons) + 10)
    # a rerun resumes from the caches; other settings are refused
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    with pytest.raises(LesionError, match=r"other settings \(differs in \['draws'\]\)"):
        run_meyes2020_cnn(out, dataset="kmnist", data_dir=root, checkpoint=tmp_path / "cnn.pt", draws=4, limit=100)
