"""The VGG study of Meyes et al. (2019): depth aggregation, lesion points, the command end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from fixtures.regression import compare_study, fake_mnist_family, vgg_args
from lesion import Lesion, LesionError, Split, evaluate, lesioned
from lesion._threads import torch_threads
from lesion.cli import app
from lesion.models import build_model
from lesion.models._vgg import vgg_conv_layers
from lesion.stats import spread
from lesion.studies.meyes2019_vgg._report import SECTIONS
from lesion.studies.meyes2019_vgg._stages import block_output, point_plan, run_meyes2019_vgg

FIGURES = (
    "fig14-depth-top1", "fig15-depth-top5", "fig16-classes-top5", "fig16-classes-top1", "fig17-class-drops-top5",
    "fig17-class-drops-top1", "fig18-recovery-instances", "fig19-recovery-iterative", "lesion-points",
)


# --- depth-resolved aggregation -----------------------------------------------------------


def test_spread_is_the_mean_and_the_rms_deviation_below_and_above_it() -> None:
    s = spread(np.array([1.0, 2.0, 6.0]))
    assert s.mean[0] == pytest.approx(3.0)
    assert s.lower[0] == pytest.approx(np.sqrt((2**2 + 1**2) / 2))  # 1 and 2 lie below 3
    assert s.upper[0] == pytest.approx(3.0)  # only 6 lies above
    assert s.n == 3


def test_spread_weights_rows_and_treats_columns_apart() -> None:
    drops = np.array([[1.0, 4.0], [6.0, 4.0]])  # column 1: every drop equals the mean
    s = spread(drops, weights=np.array([2.0, 1.0]))  # row 0 stands for two references
    np.testing.assert_allclose(s.mean, [8 / 3, 4.0])
    np.testing.assert_allclose(s.lower, [5 / 3, 0.0])
    np.testing.assert_allclose(s.upper, [10 / 3, 0.0])
    assert s.n == 3


def test_spread_rejects_bad_weights() -> None:
    with pytest.raises(LesionError, match="weights"):
        spread(np.array([1.0, 2.0]), weights=np.array([0.0, 0.0]))


# --- lesion points with batch norm --------------------------------------------------------


def bn_block() -> nn.Sequential:
    """conv (2 filters) -> BN with shift β − γμ/√(σ²+ε) = 1 − 0.5 > 0 on filter 0 -> ReLU."""
    block = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.ReLU())
    with torch.no_grad():
        block[0].weight.fill_(1.0)
        block[0].bias.zero_()
        block[1].weight.fill_(1.0)
        block[1].bias.fill_(1.0)
        block[1].running_mean.fill_(0.5)
        block[1].running_var.fill_(1.0 - block[1].eps)
    return block.eval()


def test_conv_lesion_leaves_the_batch_norm_shift_and_block_lesion_silences_the_filter() -> None:
    block, x = bn_block(), torch.rand(3, 1, 4, 4)
    with lesioned(block, Lesion((("0", (0,)),))), torch.no_grad():
        conv_point = block(x)
    with lesioned(block, Lesion((("2", (0,)),))), torch.no_grad():
        block_point = block(x)
    torch.testing.assert_close(conv_point[:, 0], torch.full_like(conv_point[:, 0], 0.5))  # ReLU(β − γμ/σ) ≠ 0
    assert torch.equal(block_point[:, 0], torch.zeros_like(block_point[:, 0]))
    torch.testing.assert_close(conv_point[:, 1], block_point[:, 1])  # the other filter is untouched


def test_block_plan_moves_the_same_groups_to_the_relu_after_batch_norm() -> None:
    model = build_model("vgg11_bn", n_classes=3, in_channels=1, image_size=28, width_divisor=16, classifier_width=8)
    convs = vgg_conv_layers(model)
    assert [block_output(model, c) for c in convs[:2]] == ["features.2", "features.6"]
    conv, block = point_plan(model, convs, [0.25], "conv"), point_plan(model, convs, [0.25], "block")
    assert len(conv) == len(block)
    for a, b in zip(conv, block, strict=True):
        assert b.units[0] == (block_output(model, a.units[0][0]), a.units[0][1])
    assert block.info["layers"] == [block_output(model, c) for c in convs]
    assert sum(len(m) for m in block.info["members"].values()) == sum(len(m) for m in conv.info["members"].values())
    with pytest.raises(LesionError, match="Conv2d"):
        block_output(model, "features.1")


def test_fast_engine_is_exact_at_the_block_output() -> None:
    torch.manual_seed(0)
    model = build_model("vgg11_bn", n_classes=10, in_channels=1, image_size=28, width_divisor=16, classifier_width=16)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):  # shifts of both signs, so the conv point is not silent
            module.running_mean.uniform_(-0.5, 0.5)
            module.bias.data.uniform_(-0.5, 1.0)
    model.eval()
    split = Split("random", torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,)), tuple("abcdefghij"))
    lesions = list(point_plan(model, vgg_conv_layers(model), [0.25], "block"))[::20]
    with torch_threads(1):
        fast = {o.lesion.key: o.topk for o in evaluate(model, split, lesions, k=5, engine="fast")}
        reference = list(evaluate(model, split, lesions, k=5, engine="reference"))
    for outcome in reference:
        np.testing.assert_array_equal(fast[outcome.lesion.key], outcome.topk)


# --- the command end to end ---------------------------------------------------------------


def test_small_reproduction_writes_every_figure_table_and_section(tmp_path: Path) -> None:
    data_dir = fake_mnist_family(tmp_path / "data", "fashion-mnist", 200, 300)
    out = tmp_path / "study"
    args = vgg_args(data_dir, out)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in FIGURES:
        for suffix in ("png", "svg"):
            assert (out / "figures" / f"{name}.{suffix}").is_file(), name
    summary = (out / "summary.md").read_text()
    for section in SECTIONS:
        assert section in summary
    for table in ("depth", "ranking", "lesion_points", "recovery_history", "recovery_classes"):
        assert (out / "tables" / f"{table}.csv").is_file()
    assert (out / "model.pt").is_file()
    recovered = sorted(p.name for p in (out / "recovery").iterdir())
    assert len(recovered) == 2
    iterative = json.loads((out / "recovery" / recovered[0] / "iterative" / "recovery.json").read_text())
    assert [run["run"] for run in iterative["runs"]] == [1, 2]
    assert (out / "recovery" / recovered[0] / "iterative" / "checkpoints" / "iteration-002.pt").is_file()

    compare_study("meyes2019-vgg", out)  # the numbers of the study before its port to the scaffold
    again = CliRunner().invoke(app, [*args[:-2], "--lesion-point", "block"])
    assert again.exit_code != 0 and "differs in ['lesion_point']" in str(again.exception)


def fake_image_folder(root: Path, classes: int = 3, per_class: int = 2) -> Path:
    rng = np.random.default_rng(1)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 80, size=(40, 48, 3), dtype=np.uint8)
            pixels[..., c] = 200
            Image.fromarray(pixels).save(root / f"class{c}" / f"img{i}.png")
    return root


def test_imagenet_path_runs_on_a_synthetic_image_folder(tmp_path: Path) -> None:
    train_dir, val_dir = fake_image_folder(tmp_path / "train"), fake_image_folder(tmp_path / "val")
    kwargs = {"n_classes": 3, "width_divisor": 16, "classifier_width": 8}
    torch.manual_seed(0)
    weights = tmp_path / "vgg11_bn.pth"
    torch.save(build_model("vgg11_bn", **kwargs).state_dict(), weights)  # a bare torchvision-style state dict
    result = run_meyes2019_vgg(
        tmp_path / "study", small=False, weights=weights, train_dir=train_dir, val_dir=val_dir, model="vgg11_bn",
        model_kwargs=kwargs, fractions=(0.25,), lesion_point="block", compare_fraction=0.25, instances=1,
        recovery_epochs=1, max_epochs=1, max_iterations=1, threads=1,
    )
    assert result.config["model"] == "vgg11_bn" and len(result.run.labels) == 6
    assert set(result.depth["point"]) == {"conv", "block"}
    assert set(result.depth["layer"]) == set(vgg_conv_layers(build_model("vgg11_bn", **kwargs)))
    assert result.summary_path is not None and "## Iterative recovery" in result.summary_path.read_text()
    assert len(result.recovery) == 4 and all(r.history["epoch"].max() == 1 for r in result.recovery)

    out = tmp_path / "recover"
    args = [
        "recover", "--model", "vgg11_bn", "--checkpoint", str(weights), "--data", "folder",
        "--train-dir", str(train_dir), "--val-dir", str(val_dir), "--layer", "features.4", "--protocol", "iterative",
        "--epochs", "1", "--max-epochs", "1", "--max-iterations", "1", "--out", str(out), "--threads", "1",
        *[item for key, value in kwargs.items() for item in ("--model-arg", f"{key}={value}")],
    ]
    ran = CliRunner().invoke(app, args)
    assert ran.exit_code == 0, ran.output
    for name in ("recovery.json", "history.csv", "classes.csv", "recovery-iterative.png", "recovery-iterative.svg"):
        assert (out / name).is_file(), name


def test_the_imagenet_path_needs_weights_and_folders(tmp_path: Path) -> None:
    with pytest.raises(LesionError, match="weights"):
        run_meyes2019_vgg(tmp_path / "study", small=False)
    with pytest.raises(LesionError, match="lesion_point"):
        run_meyes2019_vgg(tmp_path / "study", lesion_point="relu")
