"""The study scaffold: claiming, stage timings across resumes, caches, tables, figures, the registry, engine options."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lesion import LesionError
from lesion._files import atomic_write
from lesion.studies import STUDIES, study_command
from lesion.studies._engine import EngineConfig
from lesion.studies._study import StudyDir, StudyResult


def test_claim_writes_identity_and_refuses_other_settings_or_foreign_directories(tmp_path):
    StudyDir(tmp_path / "s", "toy", {"seed": 0}).claim()
    assert json.loads((tmp_path / "s" / "study.json").read_text()) == {"seed": 0}
    StudyDir(tmp_path / "s", "toy", {"seed": 0}).claim()  # the same settings resume
    with pytest.raises(LesionError, match=r"differs in \['seed'\]"):
        StudyDir(tmp_path / "s", "toy", {"seed": 1}).claim()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("not a study")
    with pytest.raises(LesionError, match=r"holds no study\.json"):
        StudyDir(tmp_path / "other", "toy", {}).claim()


def test_nothing_is_written_before_claim(tmp_path):
    study = StudyDir(tmp_path / "s", "toy", {})
    with pytest.raises(LesionError, match="before claim"):
        study.write_table("t", pd.DataFrame({"a": [1]}))
    assert not (tmp_path / "s").exists()


def test_stage_times_persist_and_accumulate_across_resumes(tmp_path):
    first = StudyDir(tmp_path, "toy", {}).claim()
    with pytest.raises(KeyboardInterrupt), first.stage("sweep", resumable=True):
        raise KeyboardInterrupt  # an interrupted sweep keeps the time it ran
    with first.stage("figures"):
        pass
    first.timings["figures"] = 5.0  # pretend the figures took 5 s
    with first.stage("figures"):  # a second block of the same run adds
        pass
    stored = json.loads((tmp_path / "timings.json").read_text())
    assert set(stored) == {"sweep", "figures"} and stored["figures"] >= 5.0

    second = StudyDir(tmp_path, "toy", {}).claim()
    second.timings["sweep"] = 10.0
    with second.stage("sweep", resumable=True):
        pass
    with second.stage("figures"):  # recomputed: this run's time replaces the stored one
        pass
    with second.stage("train", cached=True):
        pass
    second.timings["train"] = 7.0
    with second.stage("train", cached=True):  # read from its cache: the earlier time stays
        pass
    assert second.timings["sweep"] >= 10.0 and second.timings["figures"] < 5.0 and second.timings["train"] == 7.0


def test_cached_outputs_are_computed_once(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.arange(3.0)

    for _ in range(2):
        study = StudyDir(tmp_path, "toy", {}).claim()
        np.testing.assert_array_equal(study.cached("embedding", "emb.npy", compute), np.arange(3.0))
        maps = study.cached("maps", "maps.npz", lambda: {"a": np.ones(2)})
        np.testing.assert_array_equal(maps["a"], np.ones(2))
    assert len(calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npy", "maps.npz", "study.json", "timings.json"]
    with pytest.raises(LesionError, match="needs save= and load="):
        study.cached("x", "x.bin", lambda: b"")


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = atomic_write(tmp_path / "a.csv", lambda p: p.write_text("old"))

    def fail(path):
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, fail)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]


def test_tables_figures_summary_and_result_fields(tmp_path):
    import matplotlib.pyplot as plt

    study = StudyDir(tmp_path, "toy", {}).claim()
    frame = pd.DataFrame({"class": [0, "all"], "drop": [1.5, 2.0]})  # a mixed column is written as text
    study.write_table("drops", frame)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "tables" / "drops.parquet"), frame.astype({"class": str}))
    figure, _ = plt.subplots()
    files = study.save_figure("fig1", figure, title="one")
    assert [p.suffix for p in files] == [".png", ".svg"] and all(p.stat().st_size > 0 for p in files)
    assert not plt.fignum_exists(figure.number)  # closed
    study.write_summary("# toy\n")
    result = StudyResult(**study.files())
    assert result.tables == {"drops": tmp_path / "tables" / "drops.csv"} and result.figures["fig1"] == files
    assert result.summary_path is not None and result.summary_path.read_text() == "# toy\n"


def test_registry_names_packages_with_a_command():
    for name in STUDIES:
        assert callable(study_command(name).command)
    with pytest.raises(LesionError, match="closest: 'meyes2019-mlp'"):
        study_command("meyes2019-mpl")


def test_engine_config_parses_sizes_and_names_the_bad_setting():
    assert EngineConfig.of(memory="2G").memory == 2 * 2**30
    with pytest.raises(LesionError, match=r"engine\.autocast: .*'bf16' or 'fp16'.*got 'fp8'"):
        EngineConfig.of(autocast="fp8")
    with pytest.raises(LesionError, match=r"engine\.batch_sise: unknown key \(closest: 'batch_size'\)"):
        EngineConfig.of(batch_sise=4)


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_every_study_command_takes_the_engine_options_through_one_config(name, tmp_path):
    from typer.testing import CliRunner

    from lesion.cli import app

    shown = CliRunner().invoke(app, ["reproduce", name, "--help"], terminal_width=200)
    for option in ("--device", "--autocast", "--channels-last", "--batch-size", "--memory", "--engine"):
        assert option in shown.output, option
    required = ["--dataset", "mnist"] if name == "meyes2020-cnn" else []
    bad = CliRunner().invoke(app, ["reproduce", name, *required, "--out", str(tmp_path / "out"), "--memory", "lots"])
    assert isinstance(bad.exception, LesionError) and "engine.memory" in str(bad.exception)
    assert not (tmp_path / "out").exists()
