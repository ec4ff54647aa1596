"""The cumulative plan selector: orders, lesion sets per step, and curves worked out on paper."""

from __future__ import annotations

import numpy as np
import pytest

import lesion
from lesion import LesionError
from lesion.models import meyes2019_mlp
from lesion.plans import area_under_curve, curves
from lesion.testing import toy_data, toy_network

# A hand-given attribute of the toy network's 5 hidden units: high->low order 3, 0, 2, 4, 1.
ATTRIBUTE = {"hidden": [0.5, 0.1, 0.3, 0.9, 0.2]}
# Overall top-1 (of 14 samples) after lesioning the first k units of the high order, worked out
# from the toy network's logits (lesion.testing): k=1 {3} kills class 2 (10/14); k=2 {0,3} also
# class 0, whose samples then go to the bias class 3 (6/14); k=3 adds unit 2, whose twin 1 still
# wins class 1 (6/14); k=4 adds the distractor 4 (class 2 stays lost: 6/14); k=5 leaves only the
# bias: class 3's 2 samples (2/14).
HIGH_CURVE = [12, 10, 6, 6, 6, 2]


def test_orders_and_lesion_sets_by_attribute_and_step() -> None:
    plan = lesion.cumulative(toy_network(), "hidden", step=2, seeds=[], attributes={"a": ATTRIBUTE})
    assert plan.info["steps"] == [0, 2, 4, 5]
    assert plan.info["orders"] == {"a:high": [3, 0, 2, 4, 1], "a:low": [1, 4, 2, 0, 3]}
    assert plan.info["curves"] == {
        "a:high": ["intact", "hidden:0,3", "hidden:0,2-4", "hidden:0-4"],
        "a:low": ["intact", "hidden:1,4", "hidden:0-2,4", "hidden:0-4"],
    }
    # The full set is shared by both curves: one lesion of the plan.
    assert plan.keys == ["hidden:0,3", "hidden:0,2-4", "hidden:0-4", "hidden:1,4", "hidden:0-2,4"]


def test_random_orders_are_seeded_permutations_pooled_over_layers() -> None:
    model = meyes2019_mlp()
    plan = lesion.cumulative(model, "fc2;out:0-4", step=3, seeds=[0, 5], method="mean")
    pooled = [["fc2", u] for u in range(10)] + [["out", u] for u in range(5)]
    assert plan.info["units"] == pooled and plan.info["steps"] == [0, 3, 6, 9, 12, 15]
    for seed in (0, 5):
        order = np.random.default_rng(seed).permutation(15).tolist()
        assert plan.info["orders"][f"random:{seed}"] == order
        for k, key in zip(plan.info["steps"][1:], plan.info["curves"][f"random:{seed}"][1:], strict=True):
            spec = lesion.Lesion.from_key(key)
            assert spec.method == "mean" and spec.size == k
            got = {(layer, u) for layer, units in spec.units for u in units}
            assert got == {tuple(pooled[i]) for i in order[:k]}
    assert plan.info["orders"]["random:0"] != plan.info["orders"]["random:5"]
    assert all(lesion_.method == "mean" for lesion_ in plan)


def test_curve_of_the_toy_network_matches_the_paper_calculation(tmp_path) -> None:
    model, split = toy_network(), toy_data()
    plan = lesion.cumulative(model, "hidden", step=1, seeds=[1], attributes={"a": ATTRIBUTE})
    run = lesion.sweep(model, split, plan, tmp_path / "run", engine="reference")
    table = curves(plan, run.table("top1"))
    high = table[table["curve"] == "a:high"]
    assert high["k"].tolist() == [0, 1, 2, 3, 4, 5]
    assert np.allclose(high["value"] * 14, HIGH_CURVE)
    # Class-2 column: intact 1/2 (2 of 4 class-2 samples); lesioning unit 3 first kills it.
    assert np.allclose(curves(plan, run.table("top1"), column="c2").query("curve == 'a:high'")["value"],
                       [0.5, 0, 0, 0, 0, 0])
    # Area over fractions 0, .2, ..., 1 by the trapezoid rule, by hand: 0.2 * (12/2 + 10 + 6 + 6 + 6 + 2/2) / 14.
    area = area_under_curve(high["fraction"], high["value"])
    assert area == pytest.approx(0.2 * (6 + 10 + 6 + 6 + 6 + 1) / 14)
    assert set(table["order"]) == {"random", "a"} and set(table["direction"]) == {"1", "high", "low"}


def test_refusals() -> None:
    model = toy_network()
    with pytest.raises(LesionError, match=r"step: expected an integer >= 1"):
        lesion.cumulative(model, "hidden", step=0)
    with pytest.raises(LesionError, match="at least one random seed"):
        lesion.cumulative(model, "hidden", seeds=[])
    with pytest.raises(LesionError, match="one value per unit"):
        lesion.cumulative(model, "hidden", attributes={"a": {"hidden": [1.0, 2.0]}})
    with pytest.raises(LesionError, match="holds NaN"):
        lesion.cumulative(model, "hidden", attributes={"a": {"hidden": [1.0, 2.0, np.nan, 0, 0]}})
    with pytest.raises(LesionError, match=r"max_units: expected an integer in 1\.\.5"):
        lesion.cumulative(model, "hidden", max_units=6)
    with pytest.raises(LesionError, match="fraction must increase"):
        area_under_curve([0, 0], [1, 1])


def test_sweep_command_runs_a_cumulative_plan(tmp_path) -> None:
    import subprocess
    import sys

    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "lesion", "sweep", "-m", "meyes2019-mlp", "--model-arg", "in_features=64", "-d", "digits",
         "-l", "fc2", "--plan", "cumulative", "--step", "4", "--random-init", "-o", str(out)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    expected = lesion.cumulative(meyes2019_mlp(in_features=64), "fc2", step=4)
    assert set(lesion.Run(out).lesions()["key"]) == {"intact", *expected.keys}


def test_batch_norm_outputs_can_be_the_units() -> None:
    from lesion.models import build_model

    model = build_model("meyes2019-mlp", in_features=8, hidden=(4, 3), batch_norm=True)
    plan = lesion.cumulative(model, "bn1;bn2", step=7, seeds=[0], include=["bn1", "bn2"])
    assert plan.info["units"][:5] == [["bn1", 0], ["bn1", 1], ["bn1", 2], ["bn1", 3], ["bn2", 0]]
    assert plan.info["curves"]["random:0"][-1] == "bn1:0-3+bn2:0-2"
