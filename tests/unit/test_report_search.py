"""The report's Shapley and improve views: the embedded numbers are the stored results (the page is tested in tests/browser/)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fixtures.search_runs import NAMES, improve_folder, shapley_run
from lesion.report import write_report
from lesion.stats import mcnemar_exact
from lesion.store import Run


def _data_block(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="lesion-data">(.*?)</script>', html, re.S)
    assert match is not None
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def shap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shapley_run(tmp_path_factory.mktemp("shapley") / "run")


@pytest.fixture(scope="module")
def imp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return improve_folder(tmp_path_factory.mktemp("improve") / "imp")


def test_shapley_view_embeds_the_stored_values(shap: Path, tmp_path: Path) -> None:
    html = write_report(shap, tmp_path / "r.html").read_text(encoding="utf-8")
    data = _data_block(html)
    assert len(data["runs"]) == 1 and len(data["shapley"]) == 1 and data["improve"] == []
    view = data["shapley"][0]
    run = Run(shap)
    assert view["ok"] and view["players"] == run.config["shapley"]["players"] == [f"hidden:{i}" for i in range(5)]
    assert view["permutations"] == run.meta("shapley:permutations") == 20 and not view["exact"]
    assert view["sampling"] == "plain" and view["seed"] == 0
    stored = pd.read_csv(shap / "shapley.csv")
    columns = {(c["metric"], c["class"]): c for c in view["columns"]}
    assert len(columns) == len(run.class_names) + 2 and view["columns"][0]["class"] == -1  # overall top-1 first, the loss last
    assert view["columns"][-1]["metric"] == "loss" and view["columns"][-1]["unit"] == "nats"
    for (metric, cls), rows in stored.groupby(["metric", "class"]):
        rows = rows.set_index("player").loc[view["players"]]
        col = columns[metric, cls]
        scale, digits = (100, 1e-4) if metric == "top1" else (1, 1e-6)
        assert col["unit"] == ("pp" if metric == "top1" else "nats")
        for field in ("value", "se", "single"):
            assert col[field] == pytest.approx(scale * rows[field].to_numpy(), abs=digits), (metric, cls, field)
    # the leave-one-out effects are the run's single lesions; the values are not all equal to them (a sampled estimate)
    top1 = run.table("top1")
    overall = columns["top1", -1]
    assert overall["single"] == pytest.approx(100 * (top1.loc["intact", "all"] - top1.loc[view["players"], "all"]).to_numpy(), abs=1e-4)
    assert overall["value"] != pytest.approx(overall["single"])
    assert overall["se"][1] > 0 and view["achieved_se"] == pytest.approx(max(overall["se"]), abs=1e-4)
    # the pair: interaction index, its SE and the pair's own synergy (intact - a - b + ab, from the run)
    inter = pd.read_csv(shap / "interactions.csv").set_index(["metric", "class"])
    assert view["pairs"]["a"] == ["hidden:1"] and view["pairs"]["b"] == ["hidden:2"]
    pair = view["pairs"]["columns"][0]
    assert pair["value"] == pytest.approx([100 * inter.loc[("top1", -1), "value"]], abs=1e-4)
    own = top1.loc["intact", "all"] - top1.loc["hidden:1", "all"] - top1.loc["hidden:2", "all"] + top1.loc["hidden:1-2", "all"]
    assert pair["pair"] == pytest.approx([100 * own], abs=1e-4)
    assert 'href="#shapley/0"' in html and "Shapley values" in html
    # no --tolerance: the page names the budget the sampling ran to
    assert view["target_se"] is None and view["budget"] == 20 and "none (budget of 20 orders)" in html
    run.close()


def test_shapley_view_refuses_a_table_of_another_run(shap: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("results.sqlite", "interactions.csv"):
        (copy / name).write_bytes((shap / name).read_bytes())
    stored = pd.read_csv(shap / "shapley.csv")
    stored.loc[(stored["player"] == "hidden:0") & (stored["class"] == -1), "single"] += 0.01
    stored.to_csv(copy / "shapley.csv", index=False)
    view = _data_block(write_report(copy).read_text(encoding="utf-8"))["shapley"][0]
    assert not view["ok"] and view["columns"] == []
    assert "leave-one-out effects differ" in view["notes"][0]
    stored.drop(columns="se").to_csv(copy / "shapley.csv", index=False)
    view = _data_block(write_report(copy).read_text(encoding="utf-8"))["shapley"][0]
    assert not view["ok"] and "lacks the columns ['se']" in view["notes"][0]
    (copy / "shapley.csv").unlink()  # the library alone stores no values: the view says where they come from
    view = _data_block(write_report(copy).read_text(encoding="utf-8"))["shapley"][0]
    assert not view["ok"] and "No stored Shapley values" in view["notes"][0]


def test_exact_shapley_view(tmp_path: Path) -> None:
    from lesion.search import shapley
    from lesion.testing import toy_data, toy_network

    out = tmp_path / "exact"
    shapley(toy_network(), toy_data(), "hidden", out, exact=True).values.to_csv(out / "shapley.csv", index=False)
    html = write_report(out).read_text(encoding="utf-8")
    view = _data_block(html)["shapley"][0]
    assert view["exact"] and view["permutations"] == 0 and view["achieved_se"] == 0
    # the hand-worked values of tests/unit/test_shapley.py: 4/14, 2/14, 2/14, 3/14, -1/14 of overall top-1
    assert view["columns"][0]["value"] == pytest.approx([100 * v / 14 for v in (4, 2, 2, 3, -1)], abs=1e-4)
    assert "exact (every coalition)" in html and "--tolerance" not in html


def test_improve_view_embeds_the_stored_effects(imp: Path, tmp_path: Path) -> None:
    html = write_report(imp, tmp_path / "r.html").read_text(encoding="utf-8")
    data = _data_block(html)
    assert len(data["improve"]) == 1 and data["shapley"] == [] and len(data["runs"]) == 2  # validation/ and test/
    view = data["improve"][0]
    assert view["ok"] and view["chosen"] == "hidden:4" and view["size"] == 1
    assert view["validation"] == {"name": "toy/train:validation[0.4,seed=3]", "n": 10, "fraction": 0.4, "seed": 3}
    assert view["test"] == {"name": "toy/test-disagreeing", "n": 14}
    stored = pd.read_csv(imp / "classes.csv")
    classes = view["classes"]
    assert classes["name"] == list(stored["class_name"]) and classes["cls"][0] == -1
    for col in ("val_change", "test_change", "val_intact", "test_lesion"):
        expected = [None if np.isnan(v) else pytest.approx(100 * v, abs=1e-3) for v in stored[col]]
        assert classes[col] == expected, col
    # per class, recomputed from the test run's per-sample outcomes
    test_run = Run(imp / "test")
    before, after = test_run.correct("intact")[0], test_run.correct("hidden:4")[0]
    labels = test_run.labels
    for c, name in enumerate(NAMES):
        row = classes["name"].index(name)
        lost, gained = int((before & ~after)[labels == c].sum()), int((~before & after)[labels == c].sum())
        assert (classes["lost"][row], classes["gained"][row]) == (lost, gained)
        assert classes["p"][row] == pytest.approx(float(mcnemar_exact(lost, gained)), rel=1e-3)
    assert classes["test_change"][0] == pytest.approx(100 * (after.mean() - before.mean()), abs=1e-3)
    # class c2 gained on validation and did not on test; c0 showed no gain on validation
    assert classes["held"][classes["name"].index("c2")] == 0 and classes["held"][classes["name"].index("c0")] is None
    assert view["held"] == [0, 1]
    steps = pd.read_csv(imp / "steps.csv")
    assert view["steps"]["lesion"] == list(steps["lesion"]) and view["steps"]["score"] == pytest.approx(list(100 * steps["score"]), abs=1e-3)
    assert "Split discipline" in html and "Reported once on test" in html and 'href="#improve/0"' in html
    test_run.close()


def test_improve_population_and_a_table_of_other_runs(imp: Path, tmp_path: Path) -> None:
    """`lesion improve`'s OUT (one folder per network and improve.csv): one view per network; a table that
    disagrees with the runs is not shown."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(imp, out / "net0", ignore=shutil.ignore_patterns("report.html"))
    shutil.copytree(imp, out / "net1", ignore=shutil.ignore_patterns("report.html"))
    classes = pd.read_csv(imp / "classes.csv")
    pd.concat([classes.assign(network=n, lesion="hidden:4", objective="overall") for n in ("net0", "net1")]).to_csv(out / "improve.csv", index=False)
    wrong = classes.copy()
    wrong.loc[wrong["class"] == -1, "test_change"] += 0.05
    wrong.to_csv(out / "net1" / "classes.csv", index=False)
    data = _data_block(write_report(out).read_text(encoding="utf-8"))
    views = {v["label"]: v for v in data["improve"]}
    assert set(views) == {"net0", "net1"} and len(data["runs"]) == 4
    assert views["net0"]["ok"] and views["net0"]["objective"] == "overall"
    assert not views["net1"]["ok"] and "test change differs" in views["net1"]["notes"][0]
    shutil.copytree(out / "net0", out / "net2")
    pd.concat([classes.assign(network=n, lesion="hidden:4", objective="overall") for n in ("net0", "net1", "net2")]).to_csv(out / "improve.csv", index=False)
    html = write_report(out).read_text(encoding="utf-8")
    assert re.search(r"Over the 2 networks of this folder: validation gains that held on test in\s*<b[^>]*>0 of 2</b>", html)


def test_study_with_shapley_and_improve_gets_both_views(tmp_path: Path) -> None:
    """`[analyses.shapley]` and `[analyses.improve]` of a study file: the views read the study's tables."""
    import lesion

    settings = {
        "name": "tiny-views",
        "model": {"name": "meyes2019-mlp", "args": {"in_features": 64}, "train": {"epochs": 2, "lr": 0.05, "batch_size": 32}},
        "data": {"name": "digits", "limit": 120},
        "plans": [{"kind": "single", "layers": "fc2:0-3"}],
        "analyses": {
            "shapley": {"layers": "fc2:0-3", "permutations": 10, "pairs": ["fc2:0,fc2:1"]},
            "improve": {"layers": "fc2", "max_size": 1},
        },
    }
    torch.manual_seed(0)
    result = lesion.run_study(settings, tmp_path / "study")
    data = _data_block(write_report(tmp_path / "study").read_text(encoding="utf-8"))
    assert data["study"] and [v["label"] for v in data["shapley"]] == ["shapley"] and [v["label"] for v in data["improve"]] == ["improve"]
    view = data["shapley"][0]
    assert view["ok"] and view["permutations"] == 10
    values = result.analyses["shapley"]
    overall = values[(values["metric"] == "top1") & (values["class"] == -1)].set_index("player").loc[view["players"]]
    assert view["columns"][0]["value"] == pytest.approx(100 * overall["value"].to_numpy(), abs=1e-4)
    assert len(view["pairs"]["a"]) == 1
    chosen = result.analyses["improve-classes"]
    better = data["improve"][0]
    assert better["ok"] and better["chosen"] == chosen["lesion"].iloc[0] and better["objective"] == "overall"
    assert better["classes"]["val_change"][0] == pytest.approx(100 * chosen.set_index("class").loc[-1, "val_change"], abs=1e-3)
    assert data["runs"][data["shapley"][0]["run"]]["complete"]["done"] >= 4
