"""Zhou 2018 study: its tables on a network worked out on paper, and the whole study at its small size."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import lesion
from fixtures.hand_selectivity import (
    CLASS_DROPS,
    CLASS_SELECTIVITY,
    CSI,
    PREFERRED,
    hand_data,
    hand_network,
)
from fixtures.regression import fake_mnist_family
from lesion import LesionError
from lesion.cli import app
from lesion.models import load_checkpoint, load_model
from lesion.rotation import rotate
from lesion.studies import STUDIES
from lesion.studies._variants import activation_class_means, class_drops, single_plan, unit_points
from lesion.studies.zhou2018 import _analysis as analysis
from lesion.studies.zhou2018 import run_zhou2018


def test_unit_and_pair_tables_of_the_hand_network(tmp_path) -> None:
    model, split = hand_network(), hand_data()
    points = unit_points(model, ["hidden"])
    assert points == {"hidden": ("hidden", "relu")}
    plan = single_plan(model, {"hidden": "hidden"}, {"hidden": 3})
    run = lesion.sweep(model, split, plan, tmp_path / "run")
    drops = class_drops(run.table("top1"), plan.info["units"], split.class_names)
    means = activation_class_means(model, split, {"hidden": "relu"})
    assert np.allclose(means["hidden"][0], [[2, 3, 0], [0, 1, 0], [0, 1, 1]])
    units = analysis.unit_table(drops, means, {"hidden": model.hidden.weight.detach()}, split.class_names)
    assert np.allclose(units["csi"], CSI) and np.allclose(units["as2020"], CSI)
    assert units["preferred_class"].tolist() == PREFERRED and np.allclose(units["l1"], 1.0)
    assert np.allclose(units[["drop_c0", "drop_c1", "drop_c2"]], CLASS_DROPS)
    assert np.allclose(units["overall"], 100 / 3)
    assert units["max_class_drop"].tolist() == [100.0, 100.0, 100.0]
    # h1 prefers class 0 but its lesion costs class 1: its preferred class's drop is 0.
    assert units["preferred_class_drop"].tolist() == [100.0, 0.0, 100.0]
    assert units["damaged_classes"].tolist() == [1, 1, 1]
    pairs = analysis.pair_table(units, means, split.class_names)
    grid = pairs.pivot(index="class", columns="unit", values="class_selectivity").to_numpy()
    assert np.allclose(grid, CLASS_SELECTIVITY)
    assert np.allclose(pairs.pivot(index="unit", columns="class", values="class_drop").to_numpy(), CLASS_DROPS)


def test_variant_and_rotation_tests_on_hand_made_tables() -> None:
    networks = pd.DataFrame({
        "network": ["p0", "p1", "p2", "b0", "b1", "b2"], "architecture": "cnn", "variant": ["plain"] * 3 + ["bn"] * 3,
        "seed": [0, 1, 2] * 2,
        "basis": "unit", "mean_overall_drop": [1.0, 2, 3, 4, 5, 6], "mean_max_class_drop": [1.0, 2, 3, 4, 5, 6],
        "damaging_share": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    })
    tests = analysis.variant_tests(networks)
    # Every bn network above every plain one: U = 9, exact two-sided p = 2 / C(6, 3) = 0.1.
    assert set(tests["metric"]) == {"mean_overall_drop", "mean_max_class_drop", "damaging_share"}
    assert (tests["U"] == 9).all() and np.allclose(tests["p"], 0.1)
    assert np.allclose(tests["reference_mean"], [2, 2, 0.2]) and np.allclose(tests["variant_mean"], [5, 5, 0.5])
    # A second architecture is tested apart: its plain networks are its own reference (VGG bn below its plain).
    vgg = networks.assign(network=lambda f: "v" + f["network"], architecture="vgg",
                          mean_overall_drop=lambda f: -f["mean_overall_drop"])
    both = analysis.variant_tests(pd.concat([networks, vgg]))
    assert both.groupby("architecture").size().to_dict() == {"cnn": 3, "vgg": 3}
    vgg_row = both.query("architecture == 'vgg' and metric == 'mean_overall_drop'")
    assert vgg_row["U"].item() == 0 and vgg_row["reference_mean"].item() == -2 and vgg_row["variant_mean"].item() == -5


@pytest.mark.slow
def test_small_study_end_to_end(tmp_path) -> None:
    assert STUDIES["zhou2018"] == "lesion.studies.zhou2018"
    result = run_zhou2018(tmp_path / "z", dataset="digits", size="small", variants=("plain", "bn"), seeds=(0,), epochs=1)
    units = result.units
    # Every unit of conv1-fc2 of each network lesioned once (width 8: 3 x 8 conv + 2 x 32 fc), plus fc1's 32 rotated directions.
    counts = units.groupby(["network", "basis"]).size().to_dict()
    assert counts == {("cnn-bn-seed0", "rotated"): 32, ("cnn-bn-seed0", "unit"): 88, ("cnn-plain-seed0", "rotated"): 32,
                      ("cnn-plain-seed0", "unit"): 88}
    assert list(result.config["architectures"]) == ["cnn"]  # digits: the CNN only
    assert result.rotation_max_error < 1e-4
    assert set(result.figures) == {"fig1-selectivity-vs-drop", "fig2-variants", "fig3-rotation", "fig4-predictors"}
    text = result.summary_path.read_text()
    assert "Claim 2" in text and "random rotation" in text
    pooled = result.predictors.query("variant == 'plain' and basis == 'unit' and layer == 'all' and x == 'csi' and y == 'overall'")
    assert len(pooled) == 1 and pooled["n"].item() == 88
    again = run_zhou2018(tmp_path / "z", dataset="digits", size="small", variants=("plain", "bn"), seeds=(0,), epochs=1)
    pd.testing.assert_frame_equal(again.units, units)  # resumed from the cached networks and finished sweeps
    with pytest.raises(LesionError, match="other settings"):
        run_zhou2018(tmp_path / "z", dataset="digits", size="small", variants=("plain",), seeds=(0,), epochs=1)
    with pytest.raises(LesionError, match="variants must name some of"):
        run_zhou2018(tmp_path / "y", dataset="digits", size="small", variants=("batchnorm",))
    with pytest.raises(LesionError, match="the VGG needs images of at least 16 px"):
        run_zhou2018(tmp_path / "y", dataset="digits", size="small", architectures=("vgg",))
    with pytest.raises(LesionError, match=r"architectures must name some of \['cnn', 'vgg'\], got \['vg'\]"):
        run_zhou2018(tmp_path / "y", dataset="digits", size="small", architectures=("vg",))


@pytest.mark.slow
@pytest.mark.usefixtures("synthetic_idx")
def test_tiny_vgg_study_end_to_end(tmp_path) -> None:
    # A tiny VGG-11 (widths / 16: 4, 8, 16, 16, 32, 32, 32, 32; classifier 32) in its plain and bn variants on 28 px
    # class-coded images, trained a few batches; the CNN beside it so the tables compare the two.
    root = fake_mnist_family(tmp_path / "data", "fashion-mnist", n_test=60, n_train=128)
    args = ["reproduce", "zhou2018", "--small", "--dataset", "fashion-mnist", "--data-dir", str(root), "--variant", "plain",
            "--variant", "bn", "--architecture", "cnn", "--architecture", "vgg", "--seeds", "0", "--epochs", "1",
            "--out", str(tmp_path / "z")]
    cli = CliRunner().invoke(app, args)
    assert cli.exit_code == 0, cli.output
    # The same settings through the API claim the same directory and read everything back.
    result = run_zhou2018(tmp_path / "z", dataset="fashion-mnist", data_dir=root, size="small", variants=("plain", "bn"),
                          architectures=("cnn", "vgg"), seeds=(0,), epochs=1)
    vgg = result.config["architectures"]["vgg"]
    assert vgg["layers"] == [*(f"conv{i}" for i in range(1, 9)), "fc1", "fc2"] and vgg["rotate"] == ["conv7", "fc1"]
    counts = result.units.groupby(["network", "architecture", "basis", "layer"]).size()
    widths = dict(zip(vgg["layers"], [4, 8, 16, 16, 32, 32, 32, 32, 32, 32], strict=True))
    for variant in ("plain", "bn"):
        assert counts[f"vgg-{variant}-seed0", "vgg", "unit"].to_dict() == widths
        assert counts[f"vgg-{variant}-seed0", "vgg", "rotated"].to_dict() == {"conv7": 32, "fc1": 32}
    assert set(result.units["architecture"]) == {"cnn", "vgg"}
    for table in (result.networks, result.predictors, result.variant_tests, result.rotation_tests):
        assert set(table["architecture"]) == {"cnn", "vgg"}
    assert set(pd.read_csv(result.out / "tables" / "networks.csv")["architecture"]) == {"cnn", "vgg"}
    assert result.rotation_max_error < 1e-4

    # The variant is in the checkpoint: plain is vgg11 without dropout, bn is vgg11_bn; keys are torchvision's.
    checkpoint = load_checkpoint(result.out / "networks" / "vgg-bn-seed0.pt")
    assert checkpoint["model"] == "vgg11_bn" and checkpoint["model_kwargs"]["dropout"] == 0.0
    assert "features.1.running_mean" in checkpoint["trained"] and "classifier.6.weight" in checkpoint["trained"]
    plain = load_checkpoint(result.out / "networks" / "vgg-plain-seed0.pt")
    assert plain["model"] == "vgg11" and not any("running_mean" in key for key in plain["trained"])

    # Rotation of the trained bn VGG's conv7 (features.22, BN and ReLU before Q) is exact: same logits to float32 rounding.
    model = load_model(checkpoint=result.out / "networks" / "vgg-bn-seed0.pt")
    rotated = rotate(model, "features.22", seed=0)
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(rotated.model(x), model(x), atol=1e-5, rtol=0)
    units = result.units.query("network == 'vgg-bn-seed0' and basis == 'unit' and layer == 'conv1'")
    assert units["unit"].tolist() == [0, 1, 2, 3]
    text = result.summary_path.read_text()
    assert "Architectures compared" in text and "VGG-11 at 28 px" in text


def test_selectivity_of_rotated_directions_is_that_of_their_magnitude() -> None:
    # Rotating by the permutation-with-sign Q = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]: z = (-h1, h0, h2).
    # |z| has the class means of h1, h0, h2, so its selectivity is CSI permuted: [0.5, 1, 1].
    from lesion.attributes import selectivity

    q = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    rotated = rotate(hand_network(), "hidden", q=q)
    means = activation_class_means(rotated.model, hand_data(), {"hidden": rotated.layer}, absolute=True)
    assert np.allclose(selectivity(means["hidden"][0])["selectivity"], [CSI[1], CSI[0], CSI[2]])
    signed = activation_class_means(rotated.model, hand_data(), {"hidden": rotated.layer})
    assert np.allclose(signed["hidden"][0][:, 0], [-3, -1, -1])


def test_correlation_intervals() -> None:
    from scipy import stats as scipy_stats

    from lesion.stats import correlation_ci, correlation_table

    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    got = correlation_ci(x, y)
    reference = scipy_stats.pearsonr(x, y).confidence_interval(0.95)
    assert got["n"] == 40 and got["pearson_lo"] == pytest.approx(reference.low) and got["pearson_hi"] == pytest.approx(reference.high)
    rho = scipy_stats.spearmanr(x, y).statistic
    half = scipy_stats.norm.ppf(0.975) * np.sqrt((1 + rho**2 / 2) / 37)  # Bonett & Wright's standard error
    assert got["spearman_r"] == pytest.approx(rho)
    assert got["spearman_lo"] == pytest.approx(np.tanh(np.arctanh(rho) - half))
    assert np.isnan(correlation_ci([1, 2, 3], [1, 2, 4])["pearson_lo"])  # fewer than 4 pairs: no interval
    table = correlation_table(pd.DataFrame({"g": [0] * 20 + [1] * 20, "x": x, "y": y}), "x", "y", ["g"])
    assert table["g"].tolist() == [0, 1] and (table["n"] == 20).all()
    with pytest.raises(LesionError, match=r"level must be in \(0, 1\)"):
        correlation_ci(x, y, level=95)
