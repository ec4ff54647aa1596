"""The hand-built network of `lesion.testing`: every number here is worked out in its docstring."""

import numpy as np
import pytest

import lesion
from lesion.metrics import class_metrics
from lesion.testing import TOY_EXPECTED, toy_data, toy_network


@pytest.fixture
def run(tmp_path):
    model = toy_network()
    return lesion.sweep(
        model, toy_data(), [lesion.single(model, "hidden"), lesion.pairs(model, "hidden")], tmp_path / "run",
        engine="reference",
    )


def test_per_class_accuracy_after_each_lesion_is_the_hand_worked_value(run):
    table = run.table("top1")
    for key, expected in TOY_EXPECTED.items():
        np.testing.assert_allclose(table.loc[key, ["c0", "c1", "c2", "c3"]].to_numpy(), expected, err_msg=key)


def test_unit_that_kills_exactly_one_class(run):
    metrics = run.metrics(metric="lost").query("lesion == 'hidden:0'").set_index("class")["value"]
    assert metrics[0] == 4 and metrics[[1, 2, 3]].sum() == 0 and metrics[-1] == 4


def test_redundant_pair(run):
    table = run.table("top1")
    assert table.loc["hidden:1", "c1"] == table.loc["hidden:2", "c1"] == 1.0
    assert table.loc["hidden:1-2", "c1"] == 0.0
    lost = run.metrics(metric="lost").query("lesion == 'hidden:1-2' and `class` == 1")["value"].item()
    assert lost == 4


def test_unit_whose_loss_improves_a_class(run):
    gained = run.metrics(metric="gained").query("lesion == 'hidden:4'").set_index("class")["value"]
    assert gained[2] == 2 and gained[-1] == 2
    assert run.table("top1").loc["hidden:4", "all"] == 1.0


def test_mean_lesion_by_hand():
    # hidden:0 outputs x0; its mean over the 14 samples is 4/14, so out0 = 8/14 > 0.5 for every sample:
    # class 0 stays right, the two class-3 samples (x = 0, won by the 0.5 bias) are now called class 0.
    model, data = toy_network(), toy_data()
    (outcome,) = lesion.evaluate(model, data, [lesion.Lesion((("hidden", (0,)),), "mean")],
                                 means=lesion.unit_means(model, ["hidden"], data.batches(14)), engine="reference")
    top1 = class_metrics(outcome.topk, data.labels.numpy(), 4)["top1"]
    np.testing.assert_allclose(top1, [1.0, 1.0, 0.5, 0.0, 10 / 14])


def test_no_near_ties_on_the_toy_network(run):
    assert run.lesions()["near_ties"].sum() == 0
