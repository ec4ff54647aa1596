import math
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from lesion._errors import LesionError
from lesion.stats import (
    OVERALL,
    SAMPLE_CATEGORIES,
    Correlation,
    benjamini_hochberg,
    class_drop_spread,
    correlate,
    correlations_by_group,
    kde,
    mcnemar_exact,
    pair_synergy,
    sample_categories,
)

# --- mcnemar_exact -----------------------------------------------------------------------


def test_mcnemar_by_hand():
    # b=0, c=3: P(X <= 0) for Binomial(3, 1/2) is 1/8, two-sided 2/8
    assert mcnemar_exact(0, 3) == pytest.approx(0.25)
    # b=1, c=9: P(X <= 1) = (1 + 10) / 1024, two-sided 22/1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    assert mcnemar_exact(0, 0) == 1.0  # no discordant sample
    assert mcnemar_exact(4, 4) == 1.0  # 2 * P(X <= 4) > 1 for Binomial(8, 1/2): capped


@pytest.mark.parametrize(
    ("b", "c"),
    [(0, 0), (0, 1), (1, 0), (2, 7), (5, 5), (6, 5), (13, 2), (60, 40), (1000, 1100), (5000, 4000)],
)
def test_mcnemar_matches_binomtest(b, c):
    expected = 1.0 if b + c == 0 else scipy.stats.binomtest(min(b, c), b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_mcnemar_is_vectorised():
    b = np.array([[0, 1], [4, 1000]])
    c = np.array([[0, 9], [4, 1100]])
    p = mcnemar_exact(b, c)
    assert p.shape == (2, 2)
    expected = [
        [1.0, 22 / 1024],
        [1.0, scipy.stats.binomtest(1000, 2100, 0.5).pvalue],
    ]
    np.testing.assert_allclose(p, expected, rtol=1e-9)
    np.testing.assert_allclose(mcnemar_exact([0, 1, 9], 9), [2 / 512, 22 / 1024, 1.0])


@pytest.mark.parametrize(("b", "c"), [(-1, 2), (1.5, 2), (np.nan, 1), (True, 1)])
def test_mcnemar_rejects_non_counts(b, c):
    with pytest.raises(LesionError, match=r"^b: expected non-negative integer counts"):
        mcnemar_exact(b, c)


# --- benjamini_hochberg ------------------------------------------------------------------


def test_benjamini_hochberg_by_hand_with_nan():
    p = [0.045, np.nan, 0.01, 0.2, 0.04]
    # m = 4 finite p-values. Sorted: 0.01 (rank 1), 0.04 (2), 0.045 (3), 0.2 (4).
    # m * p / rank: 0.04, 0.08, 0.06, 0.2.
    # Running minimum from the largest rank down: 0.2 -> 0.06 -> min(0.08, 0.06) = 0.06 -> 0.04.
    # So q(0.01) = 0.04, q(0.04) = 0.06 (not 0.08: the step-up borrows from rank 3),
    # q(0.045) = 0.06, q(0.2) = 0.2; the NaN stays NaN.
    q, reject = benjamini_hochberg(p, alpha=0.05)
    np.testing.assert_allclose(q, [0.06, np.nan, 0.04, 0.2, 0.06])
    assert reject.tolist() == [False, False, True, False, False]
    # at alpha = 0.07 the step-up rule rejects ranks 1..3: 0.045 <= 3 * 0.07 / 4 = 0.0525
    _, reject = benjamini_hochberg(p, alpha=0.07)
    assert reject.tolist() == [True, False, True, False, True]


def test_benjamini_hochberg_caps_at_one_and_keeps_shape():
    q, reject = benjamini_hochberg(np.array([[0.9, 0.95], [0.99, 1.0]]))
    assert q.shape == (2, 2) and not reject.any()
    assert q.max() == 1.0
    q, reject = benjamini_hochberg([])
    assert q.shape == (0,) and reject.shape == (0,)


def test_benjamini_hochberg_rejects_what_the_step_up_rule_rejects():
    rng = np.random.default_rng(3)
    p = rng.permutation(np.concatenate([rng.uniform(size=40), rng.uniform(0, 1e-3, size=10)]))
    _, reject = benjamini_hochberg(p, alpha=0.05)
    ranked = np.sort(p)
    below = np.nonzero(ranked <= np.arange(1, p.size + 1) * 0.05 / p.size)[0]
    k = below.max() + 1 if below.size else 0  # reject the k smallest, k the largest i with p_(i) <= i alpha / m
    np.testing.assert_array_equal(reject, p <= ranked[k - 1] if k else np.zeros(p.size, bool))
    assert 10 <= reject.sum() < 50


@pytest.mark.parametrize(
    ("pvalues", "alpha", "message"),
    [([0.1, 1.5], 0.05, r"^pvalues: expected values in \[0, 1\]"), ([0.1], 1.0, r"^alpha: ")],
)
def test_benjamini_hochberg_rejects_bad_input(pvalues, alpha, message):
    with pytest.raises(LesionError, match=message):
        benjamini_hochberg(pvalues, alpha)


# --- correlate / correlations_by_group ---------------------------------------------------


def test_correlate_by_hand():
    # x = 1..4, y = 2, 4, 5, 4: means 2.5 and 3.75; deviations (-1.5, -.5, .5, 1.5) and
    # (-1.75, .25, 1.25, .25): cross products sum to 3.5, squares to 5 and 4.75,
    # so r = 3.5 / sqrt(5 * 4.75).
    # Ranks of y: 1, 2.5, 4, 2.5 (mean 2.5, deviations -1.5, 0, 1.5, 0): cross products
    # sum to 2.25 + 0.75 = 3, squares to 4.5 -> Spearman = 3 / sqrt(5 * 4.5)
    result = correlate([1, 2, 3, 4], [2, 4, 5, 4])
    assert result.n == 4
    assert result.pearson_r == pytest.approx(3.5 / math.sqrt(5 * 4.75))
    assert result.spearman_r == pytest.approx(3 / math.sqrt(5 * 4.5))
    # p-value of r with n - 2 = 2 degrees of freedom: t = r sqrt(2 / (1 - r^2))
    r = result.pearson_r
    assert result.pearson_p == pytest.approx(2 * scipy.stats.t.sf(r * math.sqrt(2 / (1 - r**2)), 2))


def test_correlate_drops_nan_pairs():
    result = correlate([1, 2, np.nan, 3, 4, 5], [1, 2, 100, 3, np.inf, 6])
    assert result.n == 4
    assert result.spearman_r == pytest.approx(1.0)
    assert result == correlate([1, 2, 3, 5], [1, 2, 3, 6])


@pytest.mark.parametrize(
    ("x", "y", "n"),
    [([1, 1, 1, 1], [1, 2, 3, 4], 4), ([1, 2, 3], [5, 5, 5], 3), ([1, 2, np.nan], [1, 2, 3], 2)],
)
def test_correlate_is_nan_when_undefined(x, y, n):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConstantInputWarning, no RuntimeWarning
        result = correlate(x, y)
    assert result.n == n
    assert all(
        math.isnan(v)
        for v in (result.pearson_r, result.pearson_p, result.spearman_r, result.spearman_p)
    )


def test_correlate_rejects_mismatched_lengths():
    with pytest.raises(LesionError, match=r"^x, y: expected two 1-D arrays of the same length"):
        correlate([1, 2, 3], [1, 2])


def test_correlations_by_group_per_network_and_pooled():
    df = pd.DataFrame(
        {
            "network": [0, 0, 0, 1, 1, 1, 2, 2, 2],
            "p": [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0],
            "drop": [2.0, 4.0, 6.0, 3.0, 2.0, 1.0, 7.0, 7.0, 7.0],
        }
    )
    table = correlations_by_group(df, "p", "drop", by="network")
    assert list(table.columns) == [
        "network", "pooled", "n", "pearson_r", "pearson_p", "spearman_r", "spearman_p",
    ]  # fmt: skip
    assert table["network"].tolist() == [0, 1, 2, None]
    assert table["pooled"].tolist() == [False, False, False, True]
    assert table["n"].tolist() == [3, 3, 3, 9]
    np.testing.assert_allclose(table["pearson_r"][:2], [1.0, -1.0])  # y = 2x; y = 4 - x
    np.testing.assert_allclose(table["spearman_r"][:2], [1.0, -1.0])
    assert math.isnan(table["pearson_r"][2])  # network 2: constant drop
    pooled = correlate(df["p"], df["drop"])
    assert table.iloc[3][["pearson_r", "spearman_p"]].tolist() == [
        pooled.pearson_r,
        pooled.spearman_p,
    ]


def test_correlations_by_group_names_the_missing_column():
    df = pd.DataFrame({"network": [0], "p": [1.0], "drop": [0.5]})
    with pytest.raises(
        LesionError, match=r"^y: expected a column of df, got 'dorp' \(closest: 'drop'"
    ):
        correlations_by_group(df, "p", "dorp", by="network")


def test_correlation_is_frozen():
    with pytest.raises(AttributeError):
        Correlation(1.0, 0.0, 1.0, 0.0, 3).n = 4  # type: ignore[misc]


# --- kde ---------------------------------------------------------------------------------


def test_kde_matches_gaussian_mixture_by_hand():
    # two points 0 and 1: sample std (ddof=1) = sqrt(1/2), Scott's factor n^(-1/5) = 2^(-1/5)
    # bandwidth h = sqrt(1/2) * 2^(-1/5); density = mean of the two normal pdfs
    grid, density = kde([0.0, 1.0, np.nan], grid=[0.0, 0.5, 3.0])
    h = math.sqrt(0.5) * 2 ** (-1 / 5)
    expected = [(scipy.stats.norm.pdf(g, 0, h) + scipy.stats.norm.pdf(g, 1, h)) / 2 for g in grid]
    np.testing.assert_allclose(density, expected)


def test_kde_default_grid_covers_the_mass():
    grid, density = kde(np.random.default_rng(0).normal(size=40))
    assert grid.shape == density.shape == (200,)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("values", [[], [0.3], [0.3, 0.3, np.nan]])
def test_kde_without_spread_is_nan(values):
    grid, density = kde(values, n_points=5)
    assert grid.shape == (5,) and np.isnan(density).all()


# --- class_drop_spread -------------------------------------------------------------------


def test_class_drop_spread_uses_population_std():
    df = pd.DataFrame(
        {
            "network": [0, 0, 0, 0, 1, 1, 1, 1],
            "unit": [0, 1, 0, 1, 0, 1, 0, 1],
            "class": [0, 0, 1, 1, 0, 0, 1, 1],
            "drop": [0.1, 0.3, 0.2, 0.2, 0.0, 0.4, 0.5, 0.1],
        }
    )
    spread = class_drop_spread(df)
    # network 0: class 0 drops 0.1, 0.3 -> mean 0.2, deviations +-0.1 -> std (ddof=0) 0.1
    #            (ddof=1 would give 0.1414); class 1 drops 0.2, 0.2 -> 0
    # network 1: class 0 drops 0.0, 0.4 -> 0.2; class 1 drops 0.5, 0.1 -> 0.2
    np.testing.assert_allclose(spread.per_network["std"], [0.1, 0.0, 0.2, 0.2])
    assert spread.per_network["n_units"].tolist() == [2, 2, 2, 2]
    # population mean over the 2 networks: class 0 (0.1 + 0.2) / 2, class 1 (0 + 0.2) / 2
    np.testing.assert_allclose(spread.population["mean_std"], [0.15, 0.1])
    assert spread.population["class"].tolist() == [0, 1]
    assert spread.population["n_networks"].tolist() == [2, 2]


def test_class_drop_spread_rejects_bad_tables():
    with pytest.raises(LesionError, match=r"missing \['drop'\]"):
        class_drop_spread(pd.DataFrame({"network": [0], "unit": [0], "class": [0]}))
    duplicated = pd.DataFrame(
        {"network": [0, 0], "unit": [1, 1], "class": [2, 2], "drop": [0.1, 0.2]}
    )
    with pytest.raises(LesionError, match=r"one row per \(network, unit, class\)"):
        class_drop_spread(duplicated)


# --- pair_synergy / sample_categories ----------------------------------------------------


def test_pair_synergy_by_hand():
    single = {"u4": [-0.10, 0.00, 0.02], "u16": [-0.05, -0.01, 0.01]}
    pair = {("u4", "u16"): [-0.40, -0.01, 0.05]}
    table = pair_synergy(
        single,
        pair,
        single_overall={"u4": -0.04, "u16": -0.02},
        pair_overall={("u4", "u16"): -0.12},
    )
    assert table["class"].tolist() == [OVERALL, 0, 1, 2]
    assert table["unit_a"].unique().tolist() == ["u4"] and table["unit_b"].unique().tolist() == [
        "u16"
    ]
    # class 0: pair -0.40 vs singles -0.10 + -0.05 = -0.15 -> synergy -0.25 (redundancy)
    # class 2: pair +0.05 vs +0.02 + 0.01 = 0.03 -> synergy +0.02 (the positive effect exceeds the sum)
    # overall: -0.12 vs -0.06 -> -0.06
    np.testing.assert_allclose(table["sum_singles"], [-0.06, -0.15, -0.01, 0.03])
    np.testing.assert_allclose(table["synergy"], [-0.06, -0.25, 0.0, 0.02], atol=1e-12)
    np.testing.assert_allclose(table["single_b"], [-0.02, -0.05, -0.01, 0.01])


def test_pair_synergy_without_overall_and_validation():
    table = pair_synergy({0: [0.0, -0.5], 1: [-0.1, 0.0]}, {(0, 1): [-0.2, -0.5]})
    assert table["class"].tolist() == [0, 1]
    np.testing.assert_allclose(table["synergy"], [-0.1, 0.0])
    with pytest.raises(LesionError, match=r"got 2 which has none"):
        pair_synergy({0: [0.0], 1: [0.0]}, {(0, 2): [0.0]})
    with pytest.raises(LesionError, match=r"expected 2 class values like single, got 3"):
        pair_synergy({0: [0.0, 0.0], 1: [0.0, 0.0]}, {(0, 1): [0.0, 0.0, 0.0]})
    with pytest.raises(
        LesionError, match=r"^single_overall, pair_overall: expected both or neither"
    ):
        pair_synergy({0: [0.0], 1: [0.0]}, {(0, 1): [0.0]}, single_overall={0: 0.0, 1: 0.0})


def test_sample_categories_partition_by_hand():
    #                    s0     s1     s2     s3     s4     s5     s6
    intact = np.array([True, True, True, True, False, False, True])
    single_u = np.array([True, False, True, True, False, True, True])
    single_v = np.array([True, True, False, True, False, True, True])
    pair = np.array([True, False, False, False, True, False, True])
    categories = sample_categories(pair, single_u, single_v, intact)
    assert categories.tolist() == [
        "correct",  # s0: right intact and after the pair
        "lost_single",  # s1: lost, and already wrong after u alone
        "lost_single",  # s2: lost, and already wrong after v alone
        "lost_pair_only",  # s3: right after each single, wrong only after the pair
        "gained",  # s4: wrong intact, right after the pair
        "wrong",  # s5: wrong intact and after the pair
        "correct",  # s6
    ]
    assert set(categories) <= set(SAMPLE_CATEGORIES)


def test_sample_categories_rejects_non_boolean():
    with pytest.raises(LesionError, match=r"^correct_u: expected a 1-D boolean array"):
        sample_categories(np.array([True]), np.array([1]), np.array([True]), np.array([True]))
    with pytest.raises(LesionError, match=r"expected arrays of the same shape"):
        sample_categories(
            np.array([True]), np.array([True, False]), np.array([True]), np.array([True])
        )
