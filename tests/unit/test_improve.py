"""`lesion.search.improve`: chosen on the training split's validation part only, reported once on test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures.search_runs import E, toy_split
from lesion import LesionError
from lesion.data import Split, digits
from lesion.search import improve, training_part, validation_split
from lesion.store import Run
from lesion.testing import toy_network


def _train() -> Split:
    """Every validation draw favours lesioning hidden:4 (it fixes the confusing class-2 samples e2+e3)
    and punishes hidden:0 (the class-0 samples e0 need it)."""
    return toy_split("toy/train", [(E[0], 0, 10), (E[2] + E[3], 2, 10), (torch.zeros(4), 3, 5)])


def _test() -> Split:
    """Test disagrees by construction: lesioning hidden:0 fixes 6 samples (e0 labelled 3); lesioning
    hidden:4 breaks 4 (e3 labelled 0, won by hidden:4's vote for class 0) and fixes none."""
    return toy_split("toy/test-disagreeing", [(E[0], 3, 6), (E[2], 2, 4), (E[3], 0, 4)])


def test_choice_is_made_on_validation_never_on_test(tmp_path):
    result = improve(toy_network(), _train(), _test(), "hidden", tmp_path / "imp", validation=0.4, seed=3)
    # a search that looked at test would pick hidden:0 (+6 samples there); validation says hidden:4
    assert result.lesion.key == "hidden:4"
    overall = result.classes.set_index("class").loc[-1]
    assert overall["val_change"] == pytest.approx(4 / 10)  # 4 of the 10 validation samples are the confusing ones
    assert overall["test_change"] == pytest.approx(-4 / 14)  # and on test the lesion hurts: the gain did not hold
    c0 = result.classes.set_index("class").loc[0]
    assert (c0["lost"], c0["gained"]) == (4, 0)
    assert c0["p"] == pytest.approx(2 * 0.5**4)  # exact McNemar, b = 4, c = 0
    assert result.held == (0, 1)  # class 2 gained on validation, not on test
    # the test split was evaluated for the intact network and the chosen lesion only
    test_run = Run(tmp_path / "imp" / "test")
    assert set(test_run.lesions()["key"]) == {"intact", "hidden:4"}
    assert test_run.meta("dataset")["name"] == "toy/test-disagreeing"
    val_run = Run(tmp_path / "imp" / "validation")
    assert val_run.meta("dataset")["name"] == "toy/train:validation[0.4,seed=3]"
    assert val_run.meta("dataset")["n"] == 10


def test_validation_part_is_seeded_stratified_and_the_training_part_its_complement():
    train = digits().train
    a, b, c = validation_split(train, 0.2, 0), validation_split(train, 0.2, 0), validation_split(train, 0.2, 1)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    rest = training_part(train, 0.2, 0)
    rows = {tuple(r) for r in a.inputs.flatten(1).tolist()}
    assert len(rest) + len(a) == len(train)
    assert not any(tuple(r) in rows for r in rest.inputs.flatten(1).tolist())  # no validation sample is trained on
    full = np.bincount(train.labels.numpy()) / len(train)
    part = np.bincount(a.labels.numpy()) / len(a)
    assert np.abs(full - part).max() < 0.01
    with pytest.raises(LesionError, match="validation"):
        validation_split(train, 1.5)


def test_class_objective_respects_the_tolerance(tmp_path):
    # validation where hidden:4 fixes class 2 but breaks class 0 (e3 labelled 0)
    train = toy_split("toy/train2", [(E[3], 0, 10), (E[2] + E[3], 2, 10), (torch.zeros(4), 3, 5)])
    strict = improve(toy_network(), train, _test(), "hidden", tmp_path / "strict", target=2, validation=0.4)
    assert strict.lesion.key == "intact"  # any gain for class 2 costs class 0 everything
    assert strict.classes["test_change"].isna().all()  # nothing chosen: test is not evaluated
    assert not (tmp_path / "strict" / "test").exists()
    loose = improve(toy_network(), train, _test(), "hidden", tmp_path / "loose", target=2, tolerance=1.0, validation=0.4)
    assert loose.lesion.key == "hidden:4"
    row = loose.classes.set_index("class").loc[2]
    assert row["val_change"] == pytest.approx(1.0)


def test_greedy_adds_units_while_they_help_and_resumes(tmp_path):
    # e3 labelled 3 is fixed by lesioning hidden:4; e0 + e3 labelled 3 only by lesioning hidden:0 and 4 together
    train = toy_split("toy/train3", [(E[3], 3, 10), (E[0] + E[3], 3, 10), (E[1], 1, 10)])
    first = improve(toy_network(), train, _test(), "hidden", tmp_path / "g", validation=0.5, beam=2)
    assert first.lesion.key == "hidden:0,4"
    steps = first.steps
    best = steps.loc[steps.groupby("step")["score"].idxmax()].set_index("step")
    assert best.loc[1, "lesion"] == "hidden:4" and best.loc[2, "lesion"] == "hidden:0,4"
    assert best.loc[2, "score"] == pytest.approx(1.0)  # every validation sample right
    again = improve(toy_network(), train, _test(), "hidden", tmp_path / "g", validation=0.5, beam=2)
    assert again.lesion.key == first.lesion.key
    assert again.steps.equals(first.steps)
    # another objective into the same directory reuses the outcomes: step 1 adds no lesion
    before = set(Run(tmp_path / "g" / "validation").lesions()["key"])
    single = improve(toy_network(), train, _test(), "hidden", tmp_path / "g", validation=0.5, target=3, max_size=1)
    assert single.lesion.key == "hidden:4"
    assert set(Run(tmp_path / "g" / "validation").lesions()["key"]) == before
    with pytest.raises(LesionError, match="different dataset"):  # another validation part is another run
        improve(toy_network(), train, _test(), "hidden", tmp_path / "g", validation=0.4, beam=2)


def test_command_on_a_population_writes_the_tables(tmp_path):
    """`lesion improve` as a user runs it (a subprocess) on two digits MLPs."""
    import subprocess
    import sys

    import pandas as pd

    from lesion.models import meyes2019_mlp

    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths += ["-c", tmp_path / f"net{seed}.pt"]
        torch.save(meyes2019_mlp(in_features=64).state_dict(), paths[-1])
    args = ["improve", "-m", "meyes2019-mlp", "--model-arg", "in_features=64", *paths, "-d", "digits", "-l", "fc2",
            "--max-size", "2", "-o", tmp_path / "out"]
    proc = subprocess.run([sys.executable, "-m", "lesion", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "out" / "improve.csv")
    assert set(table["network"]) == {"net0", "net1"} and len(table) == 2 * 11
    assert "validation gains that held on test" in proc.stdout
    for name in ("net0", "net1"):
        steps = pd.read_csv(tmp_path / "out" / name / "steps.csv")
        assert steps["step"].max() <= 2
        assert Run(tmp_path / "out" / name / "validation").meta("dataset")["name"].startswith("digits/train:validation")


def test_engine_options_reach_every_sweep(tmp_path):
    """``options=`` (one EngineOptions) is what the sweeps run with: under bf16 autocast both runs hold
    the float32 re-check that only an autocast sweep writes (the toy's values are exact in bf16: no flips)."""
    from lesion.engine import EngineOptions

    result = improve(toy_network(), _train(), _test(), "hidden", tmp_path / "b", validation=0.4, seed=3,
                     options=EngineOptions(engine="reference", batch_size=3, autocast="bf16"))
    assert result.lesion.key == "hidden:4"
    for name in ("validation", "test"):
        checked = Run(tmp_path / "b" / name).meta("float32_check")
        assert checked and "intact" in checked and set(checked.values()) == {0}
    with pytest.raises(LesionError, match="options"):
        improve(toy_network(), _train(), _test(), "hidden", tmp_path / "c", options={"engine": "reference"})  # type: ignore[arg-type]
