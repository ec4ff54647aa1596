"""Study files (`lesion run`, `lesion.run_study`): the schema's messages, nothing written before validation,
the analyses against independent truths, resumption."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import lesion
from lesion import LesionError, evaluate
from lesion.cli import app

TINY = {
    "name": "tiny",
    "model": {"name": "meyes2019-mlp", "args": {"in_features": 64}, "train": {"epochs": 2, "lr": 0.05, "batch_size": 32}},
    "data": {"name": "digits", "limit": 120},
    "plans": [
        {"kind": "single", "layers": "fc2"},
        {"kind": "pairs", "layers": "fc2:0-3"},
        {"kind": "fraction", "layers": "fc1;fc2", "fractions": [0.5], "draws": 3},
    ],
    "analyses": {"attributes": True, "correlations": True, "activations": {"fc2": "relu2"}},
}


def with_changes(settings: dict, **sections: dict) -> dict:
    return {**settings, **{key: {**settings.get(key, {}), **value} for key, value in sections.items()}}


def test_an_unknown_key_names_its_path_and_the_closest_key_and_nothing_is_written(tmp_path):
    settings = {**TINY, "plans": [TINY["plans"][0], {"kind": "fraction", "layers": "fc1", "fractons": [0.5]}]}
    with pytest.raises(LesionError, match=r"plans\[1\]\.fractons: unknown key \(closest: 'fractions'\)"):
        lesion.run_study(settings, tmp_path / "out")
    with pytest.raises(LesionError, match=r"engine\.batch_size: Input should be greater than or equal to 1, got 0"):
        lesion.run_study(with_changes(TINY, engine={"batch_size": 0}), tmp_path / "out")
    with pytest.raises(LesionError, match=r"^model: .*give name"):
        lesion.run_study({**TINY, "model": {}}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_bad_layer_or_a_bad_cumulative_plan_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(LesionError, match="fc9"):
        lesion.run_study({**TINY, "plans": [{"kind": "single", "layers": "fc9"}]}, tmp_path / "out")
    no_attribute = {**TINY, "plans": [{"kind": "cumulative", "layers": "fc1", "order": "descending"}]}
    with pytest.raises(LesionError, match="needs one"):
        lesion.run_study(no_attribute, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_cumulative_plan_lesions_the_curves_of_lesion_cumulative(tmp_path):
    from lesion.models import load_model

    plans = [
        {"kind": "cumulative", "layers": "fc2", "step": 3, "seeds": [0, 1], "name": "random"},
        {"kind": "cumulative", "layers": "fc2", "step": 5, "order": "descending", "attribute": "l2", "name": "by-l2"},
    ]
    result = lesion.run_study({**TINY, "plans": plans, "analyses": {}}, tmp_path / "out")
    run = lesion.Run(result.out / "lesions")
    model = load_model(checkpoint=result.out / "model.pt")
    random = lesion.cumulative(model, "fc2", step=3, seeds=(0, 1), name="random")
    norms = {"fc2": model.fc2.weight.detach().norm(dim=1).numpy()}
    ranked = lesion.cumulative(model, "fc2", step=5, seeds=(), attributes={"l2": norms}, name="by-l2")
    stored = run.lesions()
    assert set(stored["key"]) == {"intact", *random.keys, *ranked.keys}  # a lesion in both plans is stored once
    assert set(stored[stored["plan"] == "random"]["key"]) == set(random.keys)
    assert stored["done"].all()


def test_lesion_run_exits_2_with_the_message(tmp_path):
    study = tmp_path / "study.toml"
    study.write_text('[model]\nname = "meyes2019-mlp"\n\n[[plans]]\nkind = "single"\nlayer = "fc1"\n')
    proc = subprocess.run([sys.executable, "-m", "lesion", "run", str(study)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "plans[0].layer: unknown key (closest: 'layers')" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_study_file_runs_every_analysis_resumes_and_refuses_other_settings(tmp_path):
    out = tmp_path / "study"
    result = lesion.run_study(TINY, out)
    model = lesion.load_model(checkpoint=out / "model.pt").eval()
    split = lesion.load_dataset("digits").test.head(120)

    # effects: each lesion's accuracy and lost / gained counts against the reference engine
    effects = result.analyses["effects"]
    key = "fc2:3"
    intact, lesioned = evaluate(model, split, [lesion.Lesion(()), lesion.Lesion.from_key(key)], engine="reference")
    right_before = intact.topk[:, 0] == split.labels.numpy()
    right_after = lesioned.topk[:, 0] == split.labels.numpy()
    row = effects[(effects["lesion"] == key) & (effects["class"] == -1)].iloc[0]
    assert row["top1"] == pytest.approx(right_after.mean())
    assert (row["lost"], row["gained"]) == ((right_before & ~right_after).sum(), (~right_before & right_after).sum())
    assert {"mcnemar_p", "bh_q", "bh_reject"} <= set(effects.columns)

    # pairs: synergy is the pair's change minus the singles' (overall, pp)
    pairs = result.analyses["pairs-pairs"]
    overall = effects[effects["class"] == -1].set_index("lesion")["change_pp"]
    first = pairs[pairs["class"] == -1].iloc[0]
    a, b = first["unit_a"], first["unit_b"]
    assert first["synergy"] == pytest.approx(overall[first["lesion"]] - overall[a] - overall[b])

    # depth: each layer's mean change over its random draws
    depth = result.analyses["depth-fraction-random"]
    assert set(depth["layer"]) == {"fc1", "fc2"} and (depth["n_draws"] == 3).all()
    assert {"attributes", "correlations", "aes-single"} <= set(result.analyses)
    for name in result.analyses:
        assert (out / "tables" / f"{name}.csv").is_file() and (out / "tables" / f"{name}.parquet").is_file()
    for paths in result.figures.values():
        assert [p.suffix for p in paths] == [".png", ".svg"]
    assert "bars-intact" in result.figures and any(name.startswith("depth-") for name in result.figures)
    summary = result.summary_path.read_text()
    assert "Intact network: top-1" in summary and "## Wall time per stage" in summary

    # a rerun resumes: nothing retrained or re-swept, the same numbers
    sweep_time = json.loads((out / "timings.json").read_text())["sweep"]
    again = lesion.run_study(TINY, out)
    pd.testing.assert_frame_equal(again.analyses["effects"], effects)
    assert again.timings["train"] == result.timings["train"] and again.timings["sweep"] >= sweep_time
    with pytest.raises(LesionError, match=r"differs in \['seed'\]"):
        lesion.run_study({**TINY, "seed": 1}, out)


@pytest.mark.slow
def test_lesion_run_takes_the_engine_options(tmp_path):
    study = tmp_path / "study.toml"
    study.write_text(
        '[model]\nname = "meyes2019-mlp"\nargs = { in_features = 64 }\ntrain = { epochs = 1 }\n'
        '[data]\nlimit = 50\n[[plans]]\nkind = "single"\nlayers = "fc2"\n[engine]\nbatch_size = 16\n'
    )
    ran = CliRunner().invoke(app, ["run", str(study), "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet"])
    assert ran.exit_code == 0, ran.output
    assert "Intact network: top-1" in ran.output
    assert (tmp_path / "out" / "report.html").stat().st_size > 100_000  # lesion run writes the report too
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "batch_size 16" in summary and "device cpu" in summary
    assert np.isfinite(pd.read_csv(tmp_path / "out" / "tables" / "effects.csv")["top1"]).all()
