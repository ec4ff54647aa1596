"""The 2019 MLP study: analyses on hand-checkable cases, and the whole command on digits."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import lesion
from fixtures.regression import compare_study, mlp_args
from lesion.cli import app
from lesion.plots._mlp import (
    AttributeDropScatter,
    CoefficientDensity,
    LesionOutcomeView,
    WeightMaps,
    outcome_categories,
)
from lesion.stats import (
    attribute_correlations,
    benjamini_hochberg,
    lesion_effects,
    pair_analysis,
    pair_parts,
    ranked_pairs,
    unit_attributes,
    with_tests,
)
from lesion.studies.meyes2019_mlp._report import ROWS
from lesion.testing import toy_data, toy_network

matplotlib.use("Agg")

TOY_LAYERS = {"hidden": "relu"}


@pytest.fixture
def toy_run(tmp_path):
    model = toy_network()
    run = lesion.sweep(
        model, toy_data(), [lesion.single(model, "hidden"), lesion.pairs(model, "hidden")], tmp_path / "run"
    )
    yield run
    run.close()


# --- pairs: redundancy and synergy -------------------------------------------------------------


def test_redundant_pair_is_lost_only_after_the_pair(toy_run):
    table = pair_analysis(toy_run).set_index(["lesion", "class"])
    row = table.loc[("hidden:1-2", 1)]
    assert (row["unit_a"], row["unit_b"]) == ("hidden:1", "hidden:2")
    assert row["single_a"] == row["single_b"] == 0.0
    assert row["pair"] == row["synergy"] == -100.0
    assert row["n_lost_pair_only"] == 4
    assert row[["n_correct", "n_lost_single", "n_gained", "n_wrong"]].sum() == 0
    overall = table.loc[("hidden:1-2", -1)]
    assert overall["pair"] == pytest.approx(-400 / 14) and overall["synergy"] == pytest.approx(-400 / 14)


def test_redundant_pair_samples_by_category(toy_run):
    category = outcome_categories(toy_run, "hidden:1-2")
    labels = toy_run.labels
    assert set(category[labels == 1]) == {"lost_pair_only"}
    assert "lost_pair_only" not in set(category[labels != 1])


def test_non_redundant_pair_adds_up(toy_run):
    table = pair_analysis(toy_run).set_index(["lesion", "class"])
    row = table.loc[("hidden:0,3", 0)]
    assert row["pair"] == row["single_a"] == -100.0 and row["synergy"] == 0.0
    assert row["n_lost_single"] == 4


def test_ranked_pairs_finds_the_redundant_pair_and_positive_kind():
    pairs = pd.DataFrame(
        {
            "lesion": ["a", "a", "b", "b", "c"],
            "class": [0, -1, 0, -1, 0],
            "pair": [-100.0, -30.0, 5.16, 1.0, 2.0],
            "single_a": [0.0, 0.0, 3.14, 0.5, -50.0],
            "single_b": [0.0, 0.0, 0.45, 0.2, 1.0],
        }
    )
    pairs["synergy"] = pairs["pair"] - pairs["single_a"] - pairs["single_b"]
    assert ranked_pairs(pairs, "negative")["lesion"].tolist() == ["a"]
    assert ranked_pairs(pairs, "negative", overall=True)["lesion"].tolist() == ["a"]
    positive = ranked_pairs(pairs, "positive")
    assert positive["lesion"].tolist() == ["b"]  # c's "gain" only offsets a damaging single
    assert positive["synergy"].item() == pytest.approx(1.57)
    with pytest.raises(lesion.LesionError, match="kind"):
        ranked_pairs(pairs, "both")


def test_pair_parts():
    assert pair_parts("fc1:3,15") == ("fc1:3", "fc1:15")
    with pytest.raises(lesion.LesionError, match="two units"):
        pair_parts("fc1:3")


# --- statistics of every effect ------------------------------------------------------------------


def test_mcnemar_and_bh_columns_by_hand():
    effects = pd.DataFrame({"network": 0, "lost": [10, 0, 5, 0], "gained": [0, 0, 5, 6]})
    tested = with_tests(effects, alpha=0.05)
    # exact two-sided McNemar: 2 * P(Binomial(b + c, 1/2) <= min(b, c)), 1 without discordant samples
    np.testing.assert_allclose(tested["mcnemar_p"], [2 / 2**10, 1.0, 1.0, 2 / 2**6])
    # BH over 4 tests: sorted p (1/512, 1/32, 1, 1) -> 4p/1 = 1/128, 4p/2 = 1/16, then 1
    np.testing.assert_allclose(tested["bh_q"], [1 / 128, 1.0, 1.0, 1 / 16])
    assert tested["bh_reject"].tolist() == [True, False, False, False]


def test_bh_families_are_per_network():
    effects = pd.DataFrame({"network": [0, 0, 1], "lost": [10, 0, 10], "gained": [0, 6, 0]})
    tested = with_tests(effects)
    # network 0: p = (1/512, 1/32), m = 2 -> (2/512, 2/32 / 2); network 1 alone: p = q = 1/512
    np.testing.assert_allclose(tested["bh_q"], [1 / 256, 1 / 32, 1 / 512])
    # one family of 3: sorted (1/512, 1/512, 1/32) -> (3/512, 3/1024, 1/32), made monotone from the right
    np.testing.assert_allclose(with_tests(effects, by=())["bh_q"], [3 / 1024, 1 / 32, 3 / 1024])


def test_lesion_effects_on_the_toy_network(toy_run):
    effects = lesion_effects(toy_run, network=7).set_index(["lesion", "class"])
    kill = effects.loc[("hidden:0", 0)]
    assert (kill["lost"], kill["gained"], kill["change_pp"], kill["drop_pp"]) == (4, 0, -100.0, 100.0)
    assert kill["mcnemar_p"] == pytest.approx(2 / 16)
    helper = effects.loc[("hidden:4", 2)]
    assert (helper["lost"], helper["gained"], helper["change_pp"]) == (0, 2, 50.0)
    assert helper["mcnemar_p"] == pytest.approx(0.5)
    assert effects.loc[("hidden:1", -1), "mcnemar_p"] == 1.0
    q, _ = benjamini_hochberg(effects["mcnemar_p"].to_numpy())
    np.testing.assert_allclose(effects["bh_q"], q)
    assert not effects["bh_reject"].any()  # 14 samples cannot make 75 tests significant
    assert set(effects.index.get_level_values(0)) == set(toy_run.lesions()["key"]) - {"intact"}
    assert (effects["network"] == 7).all()


def test_lesion_effects_rejects_with_a_real_effect(tmp_path):
    # 100 copies of each toy sample: hidden:0 now loses 400 samples, far beyond chance
    data = toy_data()
    big = data.subset(np.repeat(np.arange(len(data)), 100))
    model = toy_network()
    run = lesion.sweep(model, big, lesion.single(model, "hidden"), tmp_path / "big")
    effects = lesion_effects(run).set_index(["lesion", "class"])
    run.close()
    assert effects.loc[("hidden:0", 0), "bh_reject"] and effects.loc[("hidden:4", 2), "bh_reject"]
    assert not effects.loc[("hidden:1", 1), "bh_reject"]


# --- unit attributes ---------------------------------------------------------------------------------


def test_unit_attributes_by_hand():
    model = toy_network()
    table = unit_attributes(model, toy_data(), layers=TOY_LAYERS, network=3)
    wide = table[table["class"] == -1].pivot(index="unit", columns="attribute", values="value")
    np.testing.assert_allclose(wide["l1"], [1, 1, 1, 1, 1])
    np.testing.assert_allclose(wide["l2"], [1, 1, 1, 1, 1])
    # hidden:0 fires (1.0) on the 4 class-0 samples only: preferred class 0, selectivity 1
    assert wide.loc[0, "preferred_class"] == 0 and wide.loc[0, "selectivity"] == pytest.approx(1.0)
    assert wide.loc[1, "preferred_class"] == 1
    # hidden:4 fires on the 2 confusing class-2 samples: class mean 0.5, the rest 0
    means = table[table["attribute"] == "mean_activation"].pivot(index="unit", columns="class", values="value")
    np.testing.assert_allclose(means.loc[4], [0, 0, 0.5, 0])
    mw = table[table["attribute"].str.startswith("mw_")]
    assert mw["reference"].str.startswith("init distribution").all()
    assert (table.loc[~table["attribute"].str.startswith("mw_"), "reference"] == "").all()
    assert (table["network"] == 3).all()
    assert not any(m._forward_hooks for m in model.modules())


def test_unit_attributes_against_the_initial_snapshot():
    model = toy_network()
    initial = {"hidden.weight": model.hidden.weight.detach().clone()}
    table = unit_attributes(model, toy_data(), layers=TOY_LAYERS, initial=initial)
    mw = table[table["attribute"] == "mw_p"]
    assert (mw["reference"] == "initial snapshot").all()
    np.testing.assert_allclose(mw["value"], 1.0)  # unchanged weights: no shift at all


def test_unit_attributes_unknown_layer():
    with pytest.raises(lesion.LesionError, match="fc9"):
        unit_attributes(toy_network(), toy_data(), layers={"fc9": "relu"})


def test_attribute_correlations_per_network_and_pooled(toy_run):
    model = toy_network()
    attrs = pd.concat([unit_attributes(model, toy_data(), layers=TOY_LAYERS, network=n) for n in (0, 1)])
    effects = pd.concat([lesion_effects(toy_run, network=n) for n in (0, 1)])
    table = attribute_correlations(attrs, effects, attribute_names=("selectivity", "mean_activation"), layers=("hidden",))
    overall = table[(table["attribute"] == "selectivity") & (table["class"] == -1)]
    assert overall["pooled"].tolist() == [False, False, True]
    assert overall["n"].tolist() == [5, 5, 10]
    assert -1 not in set(table.loc[table["attribute"] == "mean_activation", "class"])
    # class 0: only hidden:0 is active for class 0 and only its lesion drops it: a perfect correlation
    class0 = table[(table["attribute"] == "mean_activation") & (table["class"] == 0) & ~table["pooled"]]
    np.testing.assert_allclose(class0["pearson_r"], 1.0)


# --- views -------------------------------------------------------------------------------------------


def test_outcome_view_counts_and_stars(toy_run):
    embedding = np.arange(28, dtype=float).reshape(14, 2)
    effects = lesion_effects(toy_run)
    view = LesionOutcomeView.from_run(toy_run, "hidden:4", embedding, effects).plot()
    counts = dict(zip(view.categories, view.counts, strict=True))
    assert counts["gained"].tolist() == [0, 0, 2, 0]
    assert counts["lost"].sum() == 0 and view.accuracy == 1.0
    assert view.change_pp == pytest.approx(100 * 2 / 14)
    assert len(view.ax_) == 2 and not view.significant.any()
    pair = LesionOutcomeView.from_run(toy_run, "hidden:1-2")
    assert dict(zip(pair.categories, pair.counts, strict=True))["lost_pair_only"].tolist() == [0, 4, 0, 0]
    import matplotlib.pyplot as plt

    plt.close("all")


def test_outcome_view_rejects_a_wrong_embedding(toy_run):
    with pytest.raises(lesion.LesionError, match="embedding"):
        LesionOutcomeView.from_run(toy_run, "hidden:0", np.zeros((3, 2)))


def test_weight_maps_and_scatter_inputs():
    with pytest.raises(lesion.LesionError, match="trained, pvalues"):
        WeightMaps.from_weights(np.zeros((4, 10)), np.ones(4), (3, 3))
    maps = WeightMaps.from_weights(np.ones((4, 9)), np.ones(4), (3, 3), initial=np.zeros((4, 9))).plot()
    assert maps.ax_.shape == (1, 10)
    table = pd.DataFrame({"network": [0, 0, 0, 1, 1, 1], "class": -1, "drop": [1.0, 2, 3, 1, 2, 3],
                          "mw_p": [0.9, 0.5, 0.1, 0.8, 0.4, 0.2]})
    scatter = AttributeDropScatter.from_table(table).plot()
    assert scatter.ref.pearson_r == pytest.approx(-1.0) and scatter.pooled.spearman_r < -0.9
    density = CoefficientDensity.from_table(pd.DataFrame({"pooled": [False, False, True], "pearson_r": [-0.5, -0.3, -0.4],
                                                          "spearman_r": [-0.6, 0.1, -0.3]})).plot()
    assert density.pearson.tolist() == [-0.5, -0.3] and np.isfinite(density.pearson_density).all()
    import matplotlib.pyplot as plt

    plt.close("all")


# --- the whole command -------------------------------------------------------------------------------

FIGURES = (
    "fig01-tsne", "fig02-intact", "fig03-largest-drop", "fig04-selective-unit", "fig05-smallest-drop",
    "fig06-median-drop", "fig07-largest-class-gain", "fig08-weight-maps", "fig09-pvalue-vs-drop",
    "fig10-coefficient-density", "fig11-class-spread", "fig12-negative-synergy-pair",
    "fig13-positive-synergy-pair", "figA1-second-largest-drop", "figA2-low-drop-units",
    "figA3-pair-of-fig3-fig4-units", "figA4-singles-of-fig13-pair",
)


@pytest.mark.slow
def test_reproduce_command_on_digits(tmp_path):
    out = tmp_path / "study"
    result = CliRunner().invoke(app, mlp_args(out))
    assert result.exit_code == 0, result.output
    for name in FIGURES:
        for suffix in (".png", ".svg"):
            assert (out / "figures" / f"{name}{suffix}").stat().st_size > 1000, name
    summary = (out / "summary.md").read_text()
    main_table = summary.split("\n## ")[0]
    assert len([line for line in main_table.splitlines() if line.startswith("| ")]) == 1 + len(ROWS)
    for quantity in ("94.6 %", "91.4 % (class 8)", "98.4 % (class 1)", "44.5 pp", "4 of 20", "+5.7 pp",
                     "the smaller p, the larger the drop", "all but two Pearson", "units 4+16", "+5.16 pp",
                     "Benjamini-Hochberg", "numbered from 0"):
        assert quantity in main_table, quantity
    assert "nan" not in main_table.lower()
    for seed in (0, 1, 2):
        assert (out / "networks" / f"seed-{seed:03d}" / "attributes.csv").is_file()
        assert (out / "population" / f"seed-{seed:03d}.pt").is_file()
    assert len(list(out.glob("tsne-*.npy"))) == 1
    effects = pd.read_csv(out / "tables" / "effects.csv")
    assert len(effects) == 3 * (30 + 190) * 11
    assert {"mcnemar_p", "bh_q", "bh_reject"} <= set(effects.columns)
    compare_study("meyes2019-mlp", out)  # the numbers of the study before its port to the scaffold
    page = (out / "report.html").read_text()  # every reproduce writes the study's report at the end
    assert page.startswith("<!doctype html>") and "meyes2019-mlp" in page


def test_bad_arguments_change_nothing(tmp_path):
    from lesion.studies.meyes2019_mlp._stages import run_meyes2019_mlp

    with pytest.raises(lesion.LesionError, match="networks"):
        run_meyes2019_mlp(tmp_path / "x", data="digits", networks=0)
    with pytest.raises(lesion.LesionError, match="population"):
        run_meyes2019_mlp(tmp_path / "y", data="digits", networks=1, population=tmp_path)
    assert not (tmp_path / "x").exists()


def test_reused_population_is_checked(tmp_path):
    from lesion.data import digits
    from lesion.studies.meyes2019_mlp._stages import _population_checkpoints
    from lesion.train import train_population

    (path,) = train_population("meyes2019-mlp", digits(), [4], tmp_path, epochs=1, lr=0.01, momentum=0.9,
                               batch_size=64, model_kwargs={"in_features": 64}, eval_every_epoch=False)
    assert _population_checkpoints(tmp_path, 1, "digits") == [path]
    with pytest.raises(lesion.LesionError, match="trained on 'digits'"):
        _population_checkpoints(tmp_path, 1, "mnist")
    with pytest.raises(lesion.LesionError, match="holds 1 checkpoints"):
        _population_checkpoints(tmp_path, 2, "digits")
