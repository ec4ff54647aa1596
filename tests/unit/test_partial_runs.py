"""Honest partial runs, resume by content, and refusals that name the differing field."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

import lesion
from lesion.cli import run
from lesion.models import CHECKPOINT_FORMAT, meyes2019_mlp
from lesion.store import Run


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    state = meyes2019_mlp(in_features=64).state_dict()
    path = tmp_path / "net.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": "meyes2019-mlp", "model_kwargs": {"in_features": 64},
                "initial": state, "trained": state}, path)
    return path


def sweep_args(ckpt: str, out: str, *extra: str) -> list[str]:
    return ["sweep", "-c", ckpt, "-d", "digits", "-l", "fc2:0-5", "--limit", "60", "-o", out, *extra]


def test_summary_of_a_run_without_outcomes_says_so(tmp_path: Path, checkpoint: Path, capsys) -> None:
    out = tmp_path / "run"
    assert run(sweep_args(str(checkpoint), str(out))) == 0
    with sqlite3.connect(out / "results.sqlite") as con:  # as if killed before its first outcome
        con.execute("DELETE FROM metrics")
        con.execute("DELETE FROM outcomes")
    capsys.readouterr()
    assert run(["summary", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0 of 7 lesions stored" in printed and "rerun the same command to resume" in printed


def test_interrupt_says_what_is_stored_and_the_rerun_completes(tmp_path: Path, checkpoint: Path, capsys, monkeypatch) -> None:
    import lesion._sweep as sweep_module

    real, calls = sweep_module._Writer.add, []

    def interrupt_on_the_third(self, outcome):  # the intact network and two lesions are stored by then
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, outcome)

    monkeypatch.setattr(sweep_module._Writer, "add", interrupt_on_the_third)
    out = tmp_path / "run"
    assert run(sweep_args(str(checkpoint), str(out))) == 130
    err = capsys.readouterr().err
    assert "interrupted: 3 of 7 lesions stored" in err and "rerun the same command to resume" in err
    assert run(["summary", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("3 of 7 lesions stored") and "Intact network" in printed
    monkeypatch.setattr(sweep_module._Writer, "add", real)
    assert run(sweep_args(str(checkpoint), str(out))) == 0
    assert Run(out).lesions()["done"].all()
    assert "lesions stored" not in capsys.readouterr().out


def test_resume_by_content_not_path(tmp_path: Path, checkpoint: Path, monkeypatch) -> None:
    out = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    assert run(sweep_args("net.pt", "run")) == 0  # relative paths
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run(sweep_args(str(checkpoint), str(out))) == 0  # absolute paths, another directory
    twin = elsewhere / "twin.pt"
    shutil.copy(checkpoint, twin)  # another file with identical weights
    assert run(sweep_args("twin.pt", str(out))) == 0
    assert len(Run(out).lesions()) == 7


def test_a_refusal_names_the_field(tmp_path: Path, checkpoint: Path, capsys) -> None:
    out = tmp_path / "run"
    assert run(sweep_args(str(checkpoint), str(out))) == 0
    capsys.readouterr()
    assert run(sweep_args(str(checkpoint), str(out), "--method", "mean")) == 2
    assert "method: 'mean' here, 'zero' in the run" in capsys.readouterr().err
    assert run([*sweep_args(str(checkpoint), str(out))[:-4], "-l", "fc2:0-7", "--limit", "60", "-o", str(out)]) == 2
    assert "selection: 'fc2:0-7' here, 'fc2:0-5' in the run" in capsys.readouterr().err


def test_extend_adds_the_lesions_and_the_stored_plan_names_them(tmp_path: Path, checkpoint: Path) -> None:
    out = tmp_path / "run"
    assert run(sweep_args(str(checkpoint), str(out))) == 0
    wider = ["sweep", "-c", str(checkpoint), "-d", "digits", "-l", "fc2:4-9", "--limit", "60", "-o", str(out), "--extend"]
    assert run(wider) == 0
    result = Run(out)
    assert len(result.lesions()) == 1 + 10 and result.lesions()["done"].all()
    info = result.meta("plan:single")
    selections = [info["selection"], *(e["selection"] for e in info["extensions"])]
    assert selections == ["fc2:0-5", "fc2:4-9"]
    keys = set(result.lesions("single")["key"])
    assert keys == {f"fc2:{u}" for u in range(10)}  # every stored lesion is in the stored plan
    assert run(wider) == 0  # a rerun of the extension resumes


def test_summary_prints_one_sign(tmp_path: Path, checkpoint: Path, capsys) -> None:
    out = tmp_path / "run"
    assert run(sweep_args(str(checkpoint), str(out))) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  fc2:")]
    assert lines and all(" --" not in line and (" -" in line or " +" in line) for line in lines)
    drops = dict(zip(lesion.Run(out).table("top1").index, lesion.Run(out).table("top1")["all"], strict=True))
    for line in lines:  # the sign is that of the change: + where the lesion improved top-1
        key, value = line.split()[0], float(line.split()[1])
        assert value == pytest.approx(100 * (drops[key] - drops["intact"]), abs=0.006)
