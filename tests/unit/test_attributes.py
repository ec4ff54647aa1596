import math

import numpy as np
import pytest
import scipy.stats
import torch

from lesion._errors import LesionError
from lesion.attributes import (
    NO_CLASS,
    ClassMeanAccumulator,
    ablation_effect_selectivity,
    class_means,
    mann_whitney,
    mann_whitney_vs_init_distribution,
    most_selective_counts,
    selectivity,
    weight_norms,
)

# --- weight_norms ------------------------------------------------------------------------


def test_weight_norms_by_hand_linear_and_conv():
    table = weight_norms(np.array([[3.0, -4.0], [0.0, 1.0]]))
    assert table["unit"].tolist() == [0, 1]
    np.testing.assert_allclose(table["l1"], [7.0, 1.0])
    np.testing.assert_allclose(table["l2"], [5.0, 1.0])
    # conv weight (C_out=2, C_in=1, 2, 2): each filter's 4 weights are one unit's fan-in
    conv = torch.tensor(
        [[[[1.0, -1.0], [1.0, -1.0]]], [[[0.0, 0.0], [0.0, -2.0]]]], requires_grad=True
    )
    table = weight_norms(conv)
    np.testing.assert_allclose(table["l1"], [4.0, 2.0])
    np.testing.assert_allclose(table["l2"], [2.0, 2.0])


def test_weight_norms_rejects_a_bias_vector():
    with pytest.raises(LesionError, match=r"^weight: expected a weight of shape \(n_units, fan_in"):
        weight_norms(np.zeros(5))


# --- mann_whitney ------------------------------------------------------------------------


def test_mann_whitney_by_hand():
    # every trained weight exceeds every initial one: U = 3 * 3 = 9 of 9 pairs.
    # Exact null: all C(6, 3) = 20 splits of the ranks equally likely, this one the most
    # extreme of its side, so two-sided p = 2 / 20.
    table = mann_whitney(np.array([[1.0, 2.0, 3.0]]), np.array([[4.0, 5.0, 6.0]]))
    row = table.iloc[0]
    assert (row["U"], row["cles"], row["rank_biserial"]) == (9.0, 1.0, 1.0)
    assert row["p"] == pytest.approx(0.1)
    assert row["reference"] == "initial snapshot"
    # trained (0, 0.5, 2.5) vs initial (1, 2, 3): only 2.5 > 1 and 2.5 > 2, so U = 2,
    # cles = 2/9, rank-biserial = 2 * 2/9 - 1 = -5/9 (trained weights tend to be smaller)
    row = mann_whitney(np.array([[1.0, 2.0, 3.0]]), np.array([[0.0, 0.5, 2.5]])).iloc[0]
    assert row["U"] == 2.0
    assert row["cles"] == pytest.approx(2 / 9)
    assert row["rank_biserial"] == pytest.approx(-5 / 9)


def test_mann_whitney_per_unit_of_a_conv_weight_matches_scipy():
    rng = np.random.default_rng(0)
    initial = rng.uniform(-0.2, 0.2, size=(3, 2, 3, 3))
    trained = initial + np.array([0.0, 0.1, -0.3])[:, None, None, None]
    table = mann_whitney(initial, trained)
    assert table["unit"].tolist() == [0, 1, 2]
    for unit in range(3):
        expected = scipy.stats.mannwhitneyu(trained[unit].ravel(), initial[unit].ravel())
        assert table["U"][unit] == expected.statistic
        assert table["p"][unit] == pytest.approx(expected.pvalue)
    # unit 0 unchanged: U = n^2 / 2 exactly, no effect; the shifted units differ in sign
    assert table["p"][0] == pytest.approx(1.0) and table["rank_biserial"][0] == 0.0
    assert table["rank_biserial"][1] > 0 > table["rank_biserial"][2]


def test_mann_whitney_rejects_mismatched_shapes():
    with pytest.raises(LesionError, match=r"^initial, trained: expected weights of the same shape"):
        mann_whitney(np.zeros((2, 3)), np.zeros((2, 4)))


def test_vs_init_distribution_draws_uniform_with_the_fan_in_bound():
    trained = np.random.default_rng(1).normal(size=(4, 16))
    table = mann_whitney_vs_init_distribution(trained, seed=3)
    assert table["reference"].unique().tolist() == [
        "init distribution (uniform ±1/sqrt(16), seed 3)"
    ]
    # the reference is exactly default_rng(seed).uniform(-1/sqrt(fan_in), +1/sqrt(fan_in))
    reference = np.random.default_rng(3).uniform(-0.25, 0.25, size=(4, 16))
    same = mann_whitney(reference, trained)
    np.testing.assert_array_equal(table["U"], same["U"])
    np.testing.assert_array_equal(table["p"], same["p"])


def test_vs_init_distribution_uses_the_given_fan_in():
    at_bound = np.full((1, 50), 0.45)
    # fan_in 4: reference within +-0.5, some draws above 0.45 -> trained not above all of them
    assert mann_whitney_vs_init_distribution(at_bound, fan_in=4)["cles"][0] < 1.0
    # fan_in 100: reference within +-0.1, all below 0.45
    assert mann_whitney_vs_init_distribution(at_bound, fan_in=100)["cles"][0] == 1.0


def test_pytorch_default_init_is_the_reference_distribution():
    layer = torch.nn.Linear(64, 20)
    # kaiming_uniform_(a=sqrt(5)) stays within +-1/sqrt(fan_in), the reference's bound
    assert layer.weight.abs().max().item() <= 1 / math.sqrt(64)
    assert layer.weight.abs().max().item() > 0.9 / math.sqrt(64)
    table = mann_whitney_vs_init_distribution(layer.weight)
    # untrained weights come from the reference distribution: p is uniform under the null
    assert (table["p"] < 0.05).sum() <= 3


def test_vs_init_distribution_default_fan_in_is_the_incoming_weight_count():
    # conv weight (2, 16, 4, 4): fan_in 256, bound 1/16 = 0.0625; a tenth of the draws
    # exceed 0.05, none exceeds 0.07
    assert mann_whitney_vs_init_distribution(np.full((2, 16, 4, 4), 0.05))["cles"][0] < 0.95
    assert mann_whitney_vs_init_distribution(np.full((2, 16, 4, 4), 0.07))["cles"][0] == 1.0


def test_vs_init_distribution_rejects_unknown_init():
    with pytest.raises(
        LesionError, match=r"^init: .*got 'kaiming_uniformm' \(closest: 'kaiming_uniform'\)"
    ):
        mann_whitney_vs_init_distribution(np.zeros((2, 2)), init="kaiming_uniformm")


# --- class means -------------------------------------------------------------------------

ACTS = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [2.0, 2.0]])
LABELS = np.array([0, 0, 1, 0])
# class 0: samples 0, 1, 3 -> means (1 + 3 + 2) / 3 = 2 and (0 + 2 + 2) / 3 = 4/3
# class 1: sample 2 -> (5, 4); class 2: no samples -> NaN
EXPECTED_MEANS = [[2.0, 4 / 3], [5.0, 4.0], [np.nan, np.nan]]


def test_class_means_by_hand():
    np.testing.assert_allclose(class_means(ACTS, LABELS, 3), EXPECTED_MEANS)


def test_accumulator_streams_batches_to_the_same_means():
    acc = ClassMeanAccumulator(n_classes=3, n_units=2)
    acc.update(torch.tensor(ACTS[:1], dtype=torch.float32), torch.tensor(LABELS[:1]))
    acc.update(ACTS[1:3], LABELS[1:3])
    acc.update(ACTS[3:], LABELS[3:])
    acc.update(np.zeros((0, 2)), np.zeros(0, dtype=int))
    np.testing.assert_allclose(acc.means(), EXPECTED_MEANS)
    assert acc.counts.tolist() == [3, 1, 0]


def test_accumulator_accumulates_in_float64():
    acc = ClassMeanAccumulator(n_classes=1, n_units=1)
    for _ in range(4):
        acc.update(np.full((1, 1), 1e8, dtype=np.float32), [0])
        acc.update(np.full((1, 1), 1.0, dtype=np.float32), [0])
    # float32 sums would lose the 1s next to 4e8
    assert acc.means()[0, 0] == (4e8 + 4) / 8


def test_accumulator_rejects_bad_batches_without_changing():
    acc = ClassMeanAccumulator(n_classes=2, n_units=2)
    acc.update(ACTS[:2], [0, 1])
    with pytest.raises(
        LesionError, match=r"^labels: expected classes in 0\.\.1, got values in 0\.\.2"
    ):
        acc.update(ACTS[:2], [0, 2])
    with pytest.raises(LesionError, match=r"^labels: expected integer labels of shape \(2,\)"):
        acc.update(ACTS[:2], [0.0, 1.0])
    with pytest.raises(LesionError, match=r"^activations: expected shape \(B, 2\), got \(2, 3\)"):
        acc.update(np.zeros((2, 3)), [0, 1])
    assert acc.counts.tolist() == [1, 1]
    np.testing.assert_allclose(acc.means(), ACTS[:2])


# --- selectivity (AS) --------------------------------------------------------------------


def test_selectivity_by_hand():
    means = np.array(
        [
            # unit: 0    1    2    3    4
            [4.0, 0.0, 0.0, 1.0, 2.0],
            [1.0, 0.0, 0.0, 3.0, 2.0],
            [1.0, 2.0, 0.0, 3.0, 2.0],
        ]
    )
    table = selectivity(means)
    # unit 0: max 4, rest (1 + 1) / 2 = 1 -> (4 - 1) / (4 + 1) = 0.6
    # unit 1: max 2, rest 0 -> 1 (responds to one class only)
    # unit 2: dead, denominator 0 -> 0, no preferred class
    # unit 3: max 3 (classes 1 and 2 tie -> class 1), rest (1 + 3) / 2 = 2 -> 1/5
    # unit 4: flat -> 0, no preferred class
    np.testing.assert_allclose(table["selectivity"], [0.6, 1.0, 0.0, 0.2, 0.0])
    assert table["preferred_class"].tolist() == [0, 2, NO_CLASS, 1, NO_CLASS]
    assert table["unit"].tolist() == [0, 1, 2, 3, 4]


def test_selectivity_rejects_nan_and_single_class():
    with pytest.raises(LesionError, match=r"^class_means: expected no NaN"):
        selectivity(np.array(EXPECTED_MEANS))
    with pytest.raises(LesionError, match=r"at least 2 classes, got \(1, 3\)"):
        selectivity(np.ones((1, 3)))


# --- ablation effect selectivity (AES) ---------------------------------------------------


def test_aes_by_hand():
    delta = np.array(
        [
            [-0.5, -0.1, -0.1],  # u0: damage mostly to class 0
            [0.0, 0.3, 0.1],  # u1: helps class 1
            [0.0, 0.0, 0.0],  # u2: no effect
            [-0.2, 0.1, 0.1],  # u3: hurts class 0, helps the others
            [-0.1, 0.1, -0.1],  # u4: equal magnitudes, no class stands out
            [0.2, 0.0, 0.0],  # u5: helps class 0 only
        ]
    )
    table = ablation_effect_selectivity(delta)
    # u0: m = (.5, .1, .1): (.5 - .1) / (.5 + .1) = 2/3, negative. All changes share a sign,
    #     so this is the paper's formula: (-.5 - -.1) / (-.5 + -.1) = 2/3.
    # u1: m_max .3, rest (0 + .1) / 2 = .05: .25 / .35 = 5/7, positive
    # u3: m_max .2, rest .1: .1 / .3 = 1/3, negative (the signed formula would give
    #     (-.2 - .1) / (-.2 + .1) = 3: unbounded, so magnitudes are used)
    # u5: rest 0 -> 1, positive
    np.testing.assert_allclose(table["aes"], [-2 / 3, 5 / 7, 0.0, -1 / 3, 0.0, 1.0])
    assert table["sign"].tolist() == [-1, 1, 0, -1, 0, 1]
    assert table["aes_class"].tolist() == [0, 1, NO_CLASS, 0, NO_CLASS, 0]
    np.testing.assert_allclose(table["delta_max"], [-0.5, 0.3, 0.0, -0.2, -0.1, 0.2])
    np.testing.assert_allclose(table["delta_rest"], [-0.1, 0.05, 0.0, 0.1, 0.0, 0.0], atol=1e-12)
    # rescaled per sign: negatives by 2/3 -> u0 1, u3 0.5; positives by 1 -> u1 5/7, u5 1
    np.testing.assert_allclose(table["aes_scaled"], [1.0, 5 / 7, 0.0, 0.5, 0.0, 1.0])


def test_aes_paper_formula_on_same_sign_rows():
    rng = np.random.default_rng(2)
    delta = -rng.uniform(0.01, 0.5, size=(20, 10))
    table = ablation_effect_selectivity(delta)
    top = np.abs(delta).argmax(axis=1)
    d_max = delta[np.arange(20), top]
    d_rest = (delta.sum(axis=1) - d_max) / 9
    np.testing.assert_allclose(-table["aes"], (d_max - d_rest) / (d_max + d_rest))
    assert table["aes_scaled"].max() == 1.0 and (table["sign"] == -1).all()


# --- most_selective_counts ---------------------------------------------------------------


def test_most_selective_counts_by_hand_with_kernel_weights():
    values = [0.6, 1.0, 0.0, 0.2, -0.3, 0.5, 0.0, np.nan]
    classes = [0, 2, NO_CLASS, 1, 2, 0, 1, 1]
    weights = [1, 25, 1, 1, 196, 1, 1, 1]
    table = most_selective_counts(values, classes, n_classes=3, weights=weights)
    # class 0: units 0 and 5; class 1: unit 3 (unit 6 has value 0, unit 7 NaN);
    # class 2: unit 1 (a 5x5 kernel, +) and unit 4 (a 14x14 kernel, -); unit 2 has no class
    assert table["class"].tolist() == [0, 1, 2]
    assert table["n_neurons"].tolist() == [2, 1, 221]
    assert table["n_negative"].tolist() == [0, 0, 196]
    assert table["n_positive"].tolist() == [2, 1, 25]
    assert most_selective_counts(values, classes, n_classes=3)["n_neurons"].tolist() == [2, 1, 2]


@pytest.mark.parametrize(
    ("classes", "weights", "message"),
    [
        ([0, 3], None, r"^preferred_class: expected integers in -1\.\.2"),
        ([0, 1], [1.5, 1.0], r"^weights: expected non-negative integers"),
        ([0], None, r"expected the same length, got 2, 1, 2"),
    ],
)
def test_most_selective_counts_rejects_bad_input(classes, weights, message):
    with pytest.raises(LesionError, match=message):
        most_selective_counts([0.1, 0.2], classes, n_classes=3, weights=weights)
