"""Lower-precision evaluation (bf16/fp16 autocast) and the count of predictions that differ from float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lesion import Lesion, LesionError, evaluate, lesioned, single, sweep
from lesion.cli import app
from lesion.data import Split
from lesion.models import meyes2020_cnn
from lesion.plans import Plan
from lesion.store import Run
from lesion.testing import (
    ROUNDING_FLIPS,
    TOY_EXPECTED,
    rounding_data,
    rounding_network,
    toy_data,
    toy_network,
)


def _per_class(topk: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[float, ...]:
    correct = topk[:, 0] == labels
    return tuple(float(correct[labels == c].mean()) for c in range(n_classes))


@pytest.mark.parametrize("autocast", ["bf16", "fp16"])
@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_rounding_network_flips_exactly_the_rounded_samples(tmp_path: Path, autocast: str, engine: str) -> None:
    model, data = rounding_network(), rounding_data()
    run = sweep(model, data, single(model, "hidden"), tmp_path / "run", k=1, autocast=autocast, engine=engine)
    check = run.float32_check()
    assert check is not None
    assert dict(zip(check["lesion"], check["differ"], strict=True)) == ROUNDING_FLIPS
    assert list(check["n"]) == [6, 6]
    assert list(run.topk("intact")[:, 0]) == [1, 1, 1, 0, 0, 1]  # the three 1.0004 samples flipped
    assert list(run.topk("hidden:0")[:, 0]) == [1] * 6
    assert "intact 3 of 6; 1 sampled lesion 0 of 6 (0.000 %), at most 0 in one (hidden:0)" in _summary(run)


def _summary(run: Run) -> str:
    from lesion.report._summary import run_summary

    return run_summary(run).text


def test_float32_run_has_no_check(tmp_path: Path) -> None:
    model, data = rounding_network(), rounding_data()
    run = sweep(model, data, single(model, "hidden"), tmp_path / "run", k=1)
    assert run.float32_check() is None
    assert list(run.topk("intact")[:, 0]) == [0, 0, 0, 0, 0, 1]
    assert "Precision" not in _summary(run)


@pytest.mark.parametrize("autocast", ["bf16", "fp16"])
def test_toy_network_is_exact_in_low_precision(tmp_path: Path, autocast: str) -> None:
    """Every weight and logit of the toy network is exact in bf16/fp16: the hand-worked numbers hold."""
    model, data = toy_network(), toy_data()
    lesions = [Lesion.from_key(key) for key in TOY_EXPECTED if key != "intact"]
    labels = data.labels.numpy()
    for outcome in evaluate(model, data, lesions, k=1, engine="fast", batch_size=5, autocast=autocast):
        assert _per_class(outcome.topk, labels, 4) == TOY_EXPECTED[outcome.lesion.key]
    run = sweep(model, data, Plan("toy", tuple(lesions)), tmp_path / "run", k=1, autocast=autocast)
    check = run.float32_check()
    assert len(check) == 1 + len(lesions) and (check["differ"] == 0).all()


def test_check_counts_equal_an_independent_count(tmp_path: Path) -> None:
    """The stored counts equal a direct comparison with float32 forwards; the sample spreads over the plan."""
    torch.manual_seed(0)
    model = meyes2020_cnn(width=6).eval()
    data = Split("random", torch.randn(300, 1, 28, 28), torch.randint(0, 10, (300,)), tuple("0123456789"))
    plan = single(model, "conv1;conv3;fc2")  # 6 + 6 + 512 lesions
    run = sweep(model, data, plan, tmp_path / "run", autocast="bf16", float32_check=5)
    check = run.float32_check()
    keys = [lesion.key for lesion in plan]
    assert set(check["lesion"]) == {"intact"} | {keys[i] for i in (0, 131, 262, 392, 523)}
    for row in check.itertuples():
        with torch.inference_mode(), lesioned(model, Lesion.from_key(row.lesion)):
            float32 = model(data.inputs).argmax(1).numpy()
        assert row.differ == int((run.topk(row.lesion)[:, 0] != float32).sum()), row.lesion


def test_resume_adds_checks_and_keeps_earlier_ones(tmp_path: Path) -> None:
    model, data = toy_network(), toy_data()
    plan = single(model, "hidden")
    sweep(model, data, plan, tmp_path / "run", k=1, autocast="bf16", float32_check=1)
    first = Run(tmp_path / "run").float32_check()
    assert list(first["lesion"]) == ["intact", "hidden:0"]
    run = sweep(model, data, plan, tmp_path / "run", k=1, autocast="bf16", float32_check=5)
    assert list(run.float32_check()["lesion"]) == ["intact", *[f"hidden:{u}" for u in range(5)]]


def test_autocast_is_part_of_the_run_identity(tmp_path: Path) -> None:
    model, data = toy_network(), toy_data()
    sweep(model, data, single(model, "hidden"), tmp_path / "run", k=1)
    with pytest.raises(LesionError, match="different config"):
        sweep(model, data, single(model, "hidden"), tmp_path / "run", k=1, autocast="bf16")


def test_bad_precision_arguments_are_refused_before_any_work(tmp_path: Path) -> None:
    model, data = toy_network(), toy_data()
    with pytest.raises(LesionError, match=r"autocast must be one of \('bf16', 'fp16'\).*closest: 'fp16'"):
        evaluate(model, data, [Lesion.from_key("hidden:0")], autocast="fp61")
    with pytest.raises(LesionError, match="autocast must be one of"):
        sweep(model, data, single(model, "hidden"), tmp_path / "run", autocast="float32")
    with pytest.raises(LesionError, match="float32_check"):
        sweep(model, data, single(model, "hidden"), tmp_path / "run", autocast="bf16", float32_check=-1)
    assert not (tmp_path / "run").exists()


def test_compile_gives_the_hand_worked_numbers() -> None:
    model, data = toy_network(), toy_data()
    lesions = [Lesion.from_key(key) for key in TOY_EXPECTED if key != "intact"]
    for outcome in evaluate(model, data, lesions, k=1, engine="fast", compile=True):
        assert _per_class(outcome.topk, data.labels.numpy(), 4) == TOY_EXPECTED[outcome.lesion.key]


def test_cli_sweep_reports_the_float32_check(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    args = ["sweep", "-m", "meyes2019-mlp", "--model-arg", "in_features=64", "-d", "digits", "-l", "fc1:0-3", "-o"]
    result = CliRunner().invoke(app, [*args, str(tmp_path / "run"), "--autocast", "bf16", "--float32-check", "2"])
    assert result.exit_code == 0, result.output
    assert "Precision: bf16 autocast; top-1 predictions that differ from float32 (re-evaluated): intact " in result.output
    assert "2 sampled lesions" in result.output
    bad = CliRunner().invoke(app, [*args, str(tmp_path / "bad"), "--autocast", "fp32"])
    assert bad.exit_code == 2 and not (tmp_path / "bad").exists()
