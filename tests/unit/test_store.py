"""The results database: resume after SIGKILL, refusal of foreign runs, no partial rows on bad input."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
import torch

import lesion
from fixtures.rundb import count_outcomes, db_rows
from lesion import LesionError
from lesion.data import digits
from lesion.models import meyes2019_mlp
from lesion.testing import toy_data, toy_network

SCRIPT = textwrap.dedent(
    """
    import sys, time, torch, lesion
    from lesion.data import digits
    from lesion.models import meyes2019_mlp
    torch.manual_seed(0)
    model = meyes2019_mlp(in_features=64)
    model.out.register_forward_hook(lambda m, i, o: time.sleep(0.01))  # slow enough to be killed mid-way
    lesion.sweep(model, digits().test, [lesion.single(model, "fc1;fc2"), lesion.pairs(model, "fc2")],
                 sys.argv[1], engine="reference", batch_size=64)
    """
)
def test_killed_run_resumes_to_the_same_database(tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT)
    killed, full = tmp_path / "killed", tmp_path / "full"
    proc = subprocess.Popen([sys.executable, str(script), str(killed)])
    deadline = time.time() + 60
    while count_outcomes(killed) < 6 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = count_outcomes(killed)
    total = 1 + 30 + 45
    assert 6 <= partial < total, "the run must be killed mid-way"
    subprocess.run([sys.executable, str(script), str(killed)], check=True)
    subprocess.run([sys.executable, str(script), str(full)], check=True)
    assert db_rows(killed) == db_rows(full)
    assert count_outcomes(killed) == total


def test_rerun_skips_finished_lesions_and_adds_new_plans(tmp_path):
    model, data = toy_network(), toy_data()
    lesion.sweep(model, data, lesion.single(model, "hidden"), tmp_path, engine="reference")
    before = db_rows(tmp_path)
    with pytest.raises(LesionError, match="holds no plan 'pairs'"):  # a new plan only when asked for
        lesion.sweep(model, data, [lesion.single(model, "hidden"), lesion.pairs(model, "hidden")], tmp_path)
    assert db_rows(tmp_path) == before
    run = lesion.sweep(model, data, [lesion.single(model, "hidden"), lesion.pairs(model, "hidden")], tmp_path,
                       engine="reference", extend=True)
    after = db_rows(tmp_path)
    assert after["outcomes"][: len(before["outcomes"])] == before["outcomes"]
    assert len(run.lesions()) == 1 + 5 + 10 and run.lesions()["done"].all()


def test_a_run_of_another_model_data_or_config_is_refused(tmp_path):
    model, data = toy_network(), toy_data()
    lesion.sweep(model, data, lesion.single(model, "hidden"), tmp_path, engine="reference")
    before = db_rows(tmp_path)
    other = toy_network()
    with torch.no_grad():
        other.out.bias[3] = 0.25
    with pytest.raises(LesionError, match="different model"):
        lesion.sweep(other, data, lesion.single(other, "hidden"), tmp_path)
    with pytest.raises(LesionError, match="different dataset"):
        lesion.sweep(model, data.head(10), lesion.single(model, "hidden"), tmp_path)
    with pytest.raises(LesionError, match="different config"):
        lesion.sweep(model, data, lesion.single(model, "hidden"), tmp_path, k=2)
    assert db_rows(tmp_path) == before


def test_foreign_and_unwritable_directories_are_refused(tmp_path):
    model, data = toy_network(), toy_data()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(LesionError, match="not a lesion run"):
        lesion.sweep(model, data, lesion.single(model, "hidden"), foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(LesionError, match="is a file"):
        lesion.sweep(model, data, lesion.single(model, "hidden"), a_file)
    with pytest.raises(LesionError, match="not writable"):  # a path below a file cannot be created, even by root
        lesion.sweep(model, data, lesion.single(model, "hidden"), a_file / "run")
    if os.geteuid() != 0:  # root can write into a read-only directory
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(LesionError, match="not writable"):
            lesion.sweep(model, data, lesion.single(model, "hidden"), locked / "run")


def test_bad_input_leaves_no_run_behind(tmp_path):
    model = meyes2019_mlp()  # expects 784 inputs
    data = digits().test  # 8x8 = 64 inputs
    out = tmp_path / "run"
    with pytest.raises(LesionError, match=r"inputs of shape \(1, 8, 8\) do not fit the model"):
        lesion.sweep(model, data, lesion.single(model, "fc1"), out)
    toy = toy_network()
    with pytest.raises(LesionError, match="unknown layer"):
        lesion.sweep(toy, toy_data(), [lesion.Plan("p", (lesion.Lesion((("hiden", (1,)),)),))], out)
    with pytest.raises(LesionError, match="out of range"):
        lesion.sweep(toy, toy_data(), [lesion.Plan("p", (lesion.Lesion((("hidden", (9,)),)),))], out)
    with pytest.raises(LesionError, match="empty"):
        lesion.Plan("p", ())
    assert not out.exists()


def test_export_csv_and_parquet_are_the_tidy_table(tmp_path):
    model, data = toy_network(), toy_data()
    run = lesion.sweep(model, data, lesion.single(model, "hidden"), tmp_path / "run", engine="reference")
    paths = run.export(tmp_path / "csv", "csv") + run.export(tmp_path / "pq", "parquet")
    csv = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    pq = pd.read_parquet(tmp_path / "pq" / "metrics.parquet")
    assert len(paths) == 4 and len(csv) == len(pq) == 6 * 5 * 5  # lesions x (4 classes + all) x metrics
    assert list(csv.columns) == ["lesion", "plan", "layers", "size", "class", "class_name", "metric", "value"]
    row = pq.query("lesion == 'hidden:0' and class_name == 'c0' and metric == 'top1'")["value"].item()
    assert row == 0.0


def test_outcomes_round_trip_through_the_compact_encoding(tmp_path):
    model, data = toy_network(), toy_data()
    run = lesion.sweep(model, data, lesion.single(model, "hidden"), tmp_path, engine="reference")
    outcomes = {o.lesion.key: o.topk for o in lesion.evaluate(model, data, list(lesion.single(model, "hidden")),
                                                               engine="reference")}
    for key, topk in outcomes.items():
        assert (run.topk(key) == topk).all()
