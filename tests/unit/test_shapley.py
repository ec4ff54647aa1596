"""Shapley values of units: exact on the hand-worked toy network, sampled estimates, resumed runs."""

from __future__ import annotations

import itertools
from math import factorial

import numpy as np
import pytest

from lesion import Lesion, LesionError, evaluate
from lesion.engine import EngineOptions
from lesion.search import coalition, cross_entropy, players_of, shapley
from lesion.stats._shapley import (
    chain_contributions,
    exact_interaction,
    exact_shapley,
    mean_and_se,
    permutation_orders,
)
from lesion.store import Run
from lesion.testing import toy_data, toy_network

# Worked by hand from lesion.testing's docstring. Correct samples with the set L of hidden units lesioned:
# 4·[0∉L] + 4·[not {1,2}⊆L] + 2·[3∉L] + 2·[3∉L and 4∈L] + 2 (class 3) of 14. Shapley value = the average
# drop when a unit is lesioned over all orders: unit 0 4/14; units 1, 2 each half of the class-1 block
# (the drop comes when the partner is already gone) 2/14; unit 3 2/14 + half of the "3 and 4" block 1/14;
# unit 4 -1/14. Leave-one-out: 4/14, 0, 0, 2/14, -2/14.
OVERALL = [4 / 14, 2 / 14, 2 / 14, 3 / 14, -1 / 14]
SINGLE = [4 / 14, 0, 0, 2 / 14, -2 / 14]
CLASS1 = [0, 0.5, 0.5, 0, 0]  # the redundant pair: each 1/2, though neither alone changes anything
CLASS2 = [0, 0, 0, 0.75, -0.25]


def test_exact_values_of_the_toy_network_match_the_hand_worked_ones(tmp_path):
    result = shapley(toy_network(), toy_data(), "hidden", tmp_path / "run", exact=True, pairs=[("hidden:1", "hidden:2")])
    v = result.values.set_index(["player", "class"])
    players = [f"hidden:{i}" for i in range(5)]
    assert [v.loc[(p, -1), "value"] for p in players] == pytest.approx(OVERALL)
    assert [v.loc[(p, -1), "single"] for p in players] == pytest.approx(SINGLE)
    assert [v.loc[(p, 1), "value"] for p in players] == pytest.approx(CLASS1)
    assert [v.loc[(p, 1), "single"] for p in players] == pytest.approx([0] * 5)
    assert [v.loc[(p, 2), "value"] for p in players] == pytest.approx(CLASS2)
    assert (result.values["se"] == 0).all() and result.exact
    # efficiency: the values add up to intact minus everything lesioned (12/14 - 2/14)
    assert result.table()["value"].sum() == pytest.approx(10 / 14)
    # the redundant pair interacts with index -1 on class 1 (either unit suffices)
    i = result.interactions.set_index("class")
    assert i.loc[1, "value"] == pytest.approx(-1.0) and i.loc[1, "pair"] == pytest.approx(-1.0)
    assert i.loc[-1, "value"] == pytest.approx(-4 / 14)


def test_exact_loss_values_equal_a_brute_force_enumeration(tmp_path):
    model, data = toy_network(), toy_data()
    result = shapley(model, data, "hidden", tmp_path / "run", exact=True, loss=True)
    loss = {frozenset(s): cross_entropy(model, data, coalition(players_of(model, "hidden"), s))
            for r in range(6) for s in itertools.combinations(range(5), r)}
    for i in range(5):  # the Shapley formula written out over subsets
        others = [p for p in range(5) if p != i]
        want = sum(
            factorial(len(s)) * factorial(4 - len(s)) / factorial(5) * (loss[frozenset(s)] - loss[frozenset(s) | {i}])
            for r in range(5) for s in itertools.combinations(others, r)
        )
        rows = result.values[(result.values["metric"] == "loss") & (result.values["player"] == f"hidden:{i}")]
        got = rows["value"].item()
        assert got == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("sampling", ["plain", "antithetic"])
def test_sampled_values_converge_to_the_exact_ones_within_their_standard_errors(tmp_path, sampling):
    result = shapley(toy_network(), toy_data(), "hidden", tmp_path / "run", permutations=200, seed=1, sampling=sampling)
    table = result.values.set_index(["player", "class"])
    for i, want in enumerate(OVERALL):
        row = table.loc[(f"hidden:{i}", -1)]
        assert abs(row["value"] - want) <= 4 * row["se"] + 1e-12
    assert table.loc[("hidden:1", -1), "se"] > 0  # a real sampling error, not the exact answer in disguise
    # every order's contributions add up to the same total, so the estimates do too
    assert result.table()["value"].sum() == pytest.approx(10 / 14)


def test_one_order_per_sample_converges_to_the_exact_values_with_far_smaller_errors(tmp_path):
    model, data = toy_network(), toy_data()
    result = shapley(model, data, "hidden", tmp_path / "run", permutations=40, seed=1, sampling="per-sample", loss=True)
    table = result.values.set_index(["player", "class", "metric"])
    shared = shapley(model, data, "hidden", tmp_path / "shared", permutations=40, seed=1, loss=True)
    shared_table = shared.values.set_index(["player", "class", "metric"])
    for i, want in enumerate(OVERALL):
        row = table.loc[(f"hidden:{i}", -1, "top1")]
        assert abs(row["value"] - want) <= 4 * row["se"] + 1e-12
        assert row["single"] == pytest.approx(SINGLE[i])
    for i, want in enumerate(CLASS2):
        row = table.loc[(f"hidden:{i}", 2, "top1")]
        assert abs(row["value"] - want) <= 4 * row["se"] + 1e-12
    assert table.loc[("hidden:1", -1, "top1"), "se"] > 0
    ses = result.table()["se"].to_numpy()
    assert (ses < shared.table()["se"].to_numpy()).sum() >= 4  # each draw averages 14 independent orders
    # each sample's contributions add up to its own intact minus all-lesioned: so do every draw's, exactly
    assert result.table()["value"].sum() == pytest.approx(10 / 14)
    assert result.table("loss")["value"].sum() == pytest.approx(shared.table("loss")["value"].sum())
    assert (shared_table["single"] == table["single"]).all()
    # resumed: the draws already in the run are reused, the sequence continues
    longer = shapley(model, data, "hidden", tmp_path / "run", permutations=60, seed=1, sampling="per-sample", loss=True)
    fresh = shapley(model, data, "hidden", tmp_path / "fresh", permutations=60, seed=1, sampling="per-sample", loss=True)
    assert longer.permutations == 60 and np.allclose(longer.values[["value", "se"]], fresh.values[["value", "se"]])
    with pytest.raises(LesionError, match="pairs"):
        shapley(model, data, "hidden", tmp_path / "p", sampling="per-sample", pairs=[("hidden:1", "hidden:2")])
    with pytest.raises(LesionError, match="sampling: 'per-sample'"):
        shapley(model, data, "hidden", tmp_path / "r", sampling="per-sample", options=EngineOptions(engine="reference"))


def test_rerun_continues_the_same_orders_and_evaluates_no_coalition_twice(tmp_path):
    model, data = toy_network(), toy_data()
    short = shapley(model, data, "hidden", tmp_path / "run", permutations=20, seed=5)
    longer = shapley(model, data, "hidden", tmp_path / "run", permutations=50, seed=5)
    fresh = shapley(model, data, "hidden", tmp_path / "fresh", permutations=50, seed=5)
    assert longer.permutations == fresh.permutations == 50
    pd_equal = longer.values[["value", "se"]].to_numpy()
    assert np.allclose(pd_equal, fresh.values[["value", "se"]].to_numpy(), equal_nan=True)
    assert not np.allclose(short.values["value"], longer.values["value"])
    chunks = Run(tmp_path / "run").meta("shapley:chunks")
    keys = [key for name in chunks for key in Run(tmp_path / "run").meta(name)]
    assert len(keys) == len(set(keys))  # each coalition stored once
    with pytest.raises(LesionError, match="config"):
        shapley(model, data, "hidden", tmp_path / "run", permutations=50, seed=6)


def test_tolerance_stops_early(tmp_path):
    result = shapley(toy_network(), toy_data(), "hidden", tmp_path / "run", permutations=400, tolerance=0.02, min_permutations=10)
    assert result.permutations < 400
    assert (result.values.query("`class` == -1")["se"] < 0.02).all()
    run = Run(tmp_path / "run")
    assert run.meta("shapley:permutations") == result.permutations
    assert run.meta("shapley:stopping") == {"tolerance": 0.02, "budget": 400}  # the report shows the target
    run.close()


def test_many_coalitions_per_pass_give_the_values_of_one_engine_call_each(tmp_path):
    """The default path (coalitions of one layer many per pass) against engine="reference" (one full forward
    per coalition, through lesion.evaluate): the same counts, so the same values; the loss to rounding."""
    import torch

    from lesion.data import digits
    from lesion.engine import EngineOptions
    from lesion.models import meyes2019_mlp

    torch.manual_seed(0)
    model, data = meyes2019_mlp(in_features=64).eval(), digits().test.head(150)
    common = dict(permutations=6, seed=3, sampling="antithetic", pairs=[("fc1:0@mean", "fc1:1@mean")], loss=True, method="mean")
    together = shapley(model, data, "fc1:0-5", tmp_path / "a", options=EngineOptions(batch_size=32, memory=50_000), **common)
    one_each = shapley(model, data, "fc1:0-5", tmp_path / "b", options=EngineOptions(engine="reference", batch_size=64), **common)
    for got, want in ((together.values, one_each.values), (together.interactions, one_each.interactions)):
        top1 = got["metric"] == "top1"
        assert (got[top1]["value"].to_numpy() == want[top1]["value"].to_numpy()).all()
        assert got[~top1]["value"].to_numpy() == pytest.approx(want[~top1]["value"].to_numpy(), abs=1e-6)
    assert together.table()["value"].abs().sum() > 0


def test_chain_coalitions_match_the_reference_path():
    model, data = toy_network(), toy_data()
    players = players_of(model, "hidden")
    order = permutation_orders(5, 0, 1, seed=2)[0]
    chain = [coalition(players, order[:j]) for j in range(1, 6)]
    fast = {o.lesion.key: o.topk for o in evaluate(model, data, chain, k=1)}
    slow = {o.lesion.key: o.topk for o in evaluate(model, data, chain, k=1, engine="reference")}
    assert fast.keys() == slow.keys() and all((fast[k] == slow[k]).all() for k in fast)


def test_estimator_pieces():
    orders = permutation_orders(4, 0, 6, seed=0, sampling="antithetic")
    assert (orders[1] == orders[0][::-1]).all() and sorted(orders[2]) == [0, 1, 2, 3]
    assert (permutation_orders(4, 3, 6, seed=0, sampling="antithetic") == orders[3:]).all()  # slices agree: resumable

    chain = np.array([[[10.0], [7.0], [7.0], [1.0], [0.0]]])
    contrib = chain_contributions(np.array([[2, 0, 3, 1]]), chain)
    assert contrib[0, :, 0].tolist() == [0.0, 1.0, 3.0, 6.0]
    _, se = mean_and_se(np.array([[1.0], [3.0], [2.0], [2.0]]), group=2)
    assert se[0] == pytest.approx(0.0)  # pair means 2 and 2
    # exact values of a 2-player game with v given per bitmask: unanimity game (both needed)
    table = np.array([[1.0], [0.0], [0.0], [0.0]])  # lesioning either kills it
    assert exact_shapley(table)[:, 0].tolist() == pytest.approx([0.5, 0.5])
    assert exact_interaction(table, 0, 1)[0] == pytest.approx(1.0)  # synergy


def test_players_and_refusals(tmp_path):
    model = toy_network()
    assert [p.key for p in players_of(model, "hidden;out", group="layer")] == ["hidden:0-4", "out:0-3"]
    assert coalition(players_of(model, "hidden"), [3, 1]).key == "hidden:1,3"
    with pytest.raises(LesionError, match="pairs"):
        shapley(model, toy_data(), "hidden", tmp_path / "a", pairs=[("hidden:1", "hidden:9")])
    with pytest.raises(LesionError, match="at least 2"):
        shapley(model, toy_data(), "hidden:1", tmp_path / "b")
    with pytest.raises(LesionError, match="tolerance"):
        shapley(model, toy_data(), "hidden", tmp_path / "c", tolerance=0)
    with pytest.raises(LesionError, match="share units"):
        shapley(model, toy_data(), [Lesion((("hidden", (0, 1)),)), Lesion((("hidden", (1,)),))], tmp_path / "e")
    players = [Lesion((("hidden", (0, 1)),)), Lesion((("hidden", (2,)),)), Lesion((("out", (3,)),))]
    groups = shapley(model, toy_data(), players, tmp_path / "d", exact=True)
    assert groups.players == ["hidden:0-1", "hidden:2", "out:3"]
    assert groups.table()["value"].sum() == pytest.approx(groups.values.query("`class` == -1")["value"].sum())


def test_command_writes_values_interactions_and_figure(tmp_path):
    """`lesion shapley` as a user runs it (a subprocess), exact on 4 units of a digits MLP."""
    import subprocess
    import sys

    import pandas as pd
    import torch

    from lesion.models import meyes2019_mlp

    torch.manual_seed(0)
    ckpt = tmp_path / "mlp.pt"
    torch.save(meyes2019_mlp(in_features=64).state_dict(), ckpt)
    out = tmp_path / "run"
    args = ["-m", "meyes2019-mlp", "--model-arg", "in_features=64", "-c", ckpt, "-d", "digits", "-l", "fc1:0-3",
            "--exact", "--pair", "fc1:0,fc1:1", "-o", out]
    proc = subprocess.run([sys.executable, "-m", "lesion", "shapley", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "exact (every coalition)" in proc.stdout and "interaction fc1:0 × fc1:1" in proc.stdout
    values = pd.read_csv(out / "shapley.csv")
    overall = values[(values["class"] == -1) & (values["metric"] == "top1")]
    run_counts = Run(out).table("top1").loc[["intact", "fc1:0-3"], "all"]
    assert overall["value"].sum() == pytest.approx(run_counts["intact"] - run_counts["fc1:0-3"])
    assert (out / "interactions.csv").is_file() and (out / "figures" / "shapley.png").is_file()
    bad = subprocess.run([sys.executable, "-m", "lesion", "shapley", *map(str, args[:-4]), "--pair", "fc1:0", "-o", out],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--pair" in bad.stderr


def test_study_file_runs_shapley_and_improve(tmp_path):
    """`[analyses.shapley]` and `[analyses.improve]` of a study file: tables in the study, runs beside them."""
    import lesion

    settings = {
        "name": "tiny-shapley",
        "model": {"name": "meyes2019-mlp", "args": {"in_features": 64}, "train": {"epochs": 2, "lr": 0.05, "batch_size": 32}},
        "data": {"name": "digits", "limit": 120},
        "plans": [{"kind": "single", "layers": "fc2:0-3"}],
        "engine": {"batch_size": 7, "memory": "64k", "autocast": "bf16", "float32_check": 2},
        "analyses": {
            "shapley": {"layers": "fc2:0-3", "exact": True, "pairs": ["fc2:0,fc2:1"]},
            "improve": {"layers": "fc2", "max_size": 1},
        },
    }
    for name in ("shapley", "improve"):  # Ray shards sweeps; these analyses run here: refused before anything runs
        ray = {**settings, "engine": {"backend": "ray"}, "analyses": {name: settings["analyses"][name]}}
        with pytest.raises(LesionError, match=rf"analyses\.{name} runs in this process.*backend = 'local'"):
            lesion.run_study(ray, tmp_path / "ray")
        assert not (tmp_path / "ray").exists()
    with pytest.raises(LesionError, match=r"analyses\.shapley\.permutatons: unknown key \(closest: 'permutations'\)"):
        lesion.run_study({**settings, "analyses": {"shapley": {"layers": "fc2", "permutatons": 5}}}, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    result = lesion.run_study(settings, tmp_path / "study")
    values = result.analyses["shapley"]
    overall = values[(values["class"] == -1) & (values["metric"] == "top1")]
    table = Run(tmp_path / "study" / "shapley").table("top1")
    assert overall["value"].sum() == pytest.approx(table.loc["intact", "all"] - table.loc["fc2:0-3", "all"])
    assert len(result.analyses["shapley-interactions"]) == 11
    classes = result.analyses["improve-classes"]
    assert len(classes) == 11 and set(classes["objective"]) == {"overall"}
    val = Run(tmp_path / "study" / "improve" / "validation")
    assert val.meta("dataset")["name"].startswith("digits/train:validation")
    assert (tmp_path / "study" / "tables" / "shapley.csv").is_file()
    # the study's [engine] reached both analyses: only a bf16 sweep re-checks lesions in float32
    for run in ("shapley", "improve/validation", "improve/test"):
        assert "intact" in Run(tmp_path / "study" / run).meta("float32_check")


def test_per_sample_draws_come_in_chunks_that_fit_in_memory(tmp_path, monkeypatch):
    import lesion.search._shapley as module

    model, data = toy_network(), toy_data()
    whole = shapley(model, data, "hidden", tmp_path / "whole", permutations=10, seed=2, sampling="per-sample")
    monkeypatch.setattr(module, "DRAW_BYTES", 8 * len(data) * 6 * 3)  # 3 draws' orders per chunk
    chunked = shapley(model, data, "hidden", tmp_path / "chunked", permutations=10, seed=2, sampling="per-sample")
    assert len(Run(tmp_path / "chunked").meta("shapley:draw-chunks")) == 4
    assert len(Run(tmp_path / "whole").meta("shapley:draw-chunks")) == 1
    assert np.allclose(whole.values[["value", "se"]], chunked.values[["value", "se"]])
