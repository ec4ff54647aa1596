"""Morcos 2018 study: cumulative curves of a network worked out on paper, areas, and the study at a tiny size."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lesion
from fixtures.hand_selectivity import CSI, hand_data, hand_network
from lesion import LesionError
from lesion.attributes import selectivity
from lesion.plans import curves
from lesion.studies._variants import activation_class_means
from lesion.studies.morcos2018 import _analysis as analysis
from lesion.studies.morcos2018 import run_morcos2018


def test_selectivity_ordered_curves_of_the_hand_network(tmp_path) -> None:
    # Selectivity [1, 0.5, 1]: high->low order h0, h2, h1 (tie to the lower index), low->high h1, h0, h2.
    # High: k=1 {h0} loses class 0 (4/6); k=2 {h0, h2} also class 2 (2/6); k=3 leaves the bias:
    # everything is class 0 (2/6). Low: k=1 {h1} loses class 1 (4/6); k=2 {h1, h0}: class 0 gets
    # [0.5, 0, 0], right again, class 1 still lost (4/6); k=3: 2/6.
    model, split = hand_network(), hand_data()
    means = activation_class_means(model, split, {"hidden": "relu"})
    csi = selectivity(means["hidden"][0])["selectivity"].to_numpy()
    assert np.allclose(csi, CSI)
    plan = lesion.cumulative(model, "hidden", step=1, seeds=[], attributes={"csi": {"hidden": csi}})
    assert plan.info["orders"] == {"csi:high": [0, 2, 1], "csi:low": [1, 0, 2]}
    run = lesion.sweep(model, split, plan, tmp_path / "run")
    table = curves(plan, run.table("top1")).assign(network="hand", split="test", method="zero")
    assert np.allclose(table.query("curve == 'csi:high'")["value"] * 6, [6, 4, 2, 2])
    assert np.allclose(table.query("curve == 'csi:low'")["value"] * 6, [6, 4, 4, 2])
    areas = analysis.curve_areas(table).set_index("curve")
    # Trapezoids over fractions 0, 1/3, 2/3, 1: high (1/3)(5/6 + 1/2 + 1/3) = 5/9; low (1/3)(5/6 + 2/3 + 1/2) = 2/3.
    assert areas.loc["csi:high", "auc"] == pytest.approx(5 / 9) and areas.loc["csi:low", "auc"] == pytest.approx(2 / 3)
    assert areas.loc["csi:high", "auc_relative"] == pytest.approx(5 / 9)  # intact accuracy is 1


def test_random_orders_are_averaged_and_related_to_the_gap() -> None:
    rows = []
    for network, level in (("a", 1.0), ("b", 0.5), ("c", 0.0)):
        for seed, end in ((0, level), (1, level / 2)):
            rows += [{"network": network, "split": "train", "method": "zero", "curve": f"random:{seed}", "order": "random",
                      "k": k, "fraction": k / 2, "value": v} for k, v in ((0, 1.0), (1, 1.0), (2, end))]
    areas = analysis.curve_areas(pd.DataFrame(rows)).set_index("network")
    # Curve [1, 1, e] has area 1/2 + (1 + e)/4; the two seeds end at e and e/2.
    for network, level in (("a", 1.0), ("b", 0.5), ("c", 0.0)):
        expected = [0.5 + (1 + e) / 4 for e in (level, level / 2)]
        assert areas.loc[network, "auc"] == pytest.approx(np.mean(expected))
        assert areas.loc[network, "auc_sd"] == pytest.approx(np.std(expected, ddof=1))
    networks = pd.DataFrame({"network": ["a", "b", "c", "d"], "gap": [0.0, 0.3, 0.6, 0.9], "architecture": "mlp"})
    relation = analysis.gap_relation(networks, areas.reset_index(), ["architecture"])
    row = relation.query("measure == 'auc'").iloc[0]
    assert row["n"] == 3 and row["spearman_r"] == pytest.approx(-1.0)  # larger gap, smaller area


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path) -> None:
    result = run_morcos2018(tmp_path / "m", size="small", dataset="digits", architectures=("mlp",), fractions=(0.0, 1.0),
                            variants=("plain", "bn"), epochs=2)
    networks = result.networks.set_index("network")
    assert list(networks.index) == ["mlp-plain-noise0-seed0", "mlp-plain-noise1-seed0", "mlp-bn-noise0-seed0", "mlp-bn-noise1-seed0"]
    assert np.allclose(networks["gap"], networks["train_acc"] - networks["test_acc"])
    # 64 hidden units (fc1, fc2 of 32) in 8 steps of 8: 9 points per curve, 2 random + 4 attribute curves.
    one = result.curves.query("network == 'mlp-plain-noise0-seed0' and split == 'test' and method == 'zero'")
    assert sorted(set(one["k"])) == list(range(0, 65, 8)) and one["curve"].nunique() == 6
    assert set(result.curves.query("network == 'mlp-bn-noise0-seed0'")["lesion"].str.split(":").str[0]) >= {"intact", "bn1"}
    assert (one.query("k == 0")["value"] == networks.loc["mlp-plain-noise0-seed0", "test_acc"]).all()
    # Noise at scale 0 is the intact network: the same accuracy as the sweep's intact evaluation.
    zero_noise = result.noise.query("scale == 0 and split == 'test'").set_index("network")["accuracy"]
    assert np.allclose(zero_noise.loc[networks.index], networks["test_acc"])
    assert set(result.order_tests["curve"]) == {"csi:high", "csi:low", "l1:high", "l1:low"}
    assert set(result.figures) == {"fig1-curves", "fig2-area-vs-gap", "fig3-orders", "fig4-noise"}
    assert "memorise" in result.summary_path.read_text()
    with pytest.raises(LesionError, match="fractions must be label-noise fractions"):
        run_morcos2018(tmp_path / "x", size="small", dataset="digits", fractions=(1.5,))
