"""Every command of the CLI under misuse: exit 2, one `error:` line naming the option, nothing written.

The cases live in ``misuse_cases.py``; each runs in-process through `lesion.cli.run` (the function
the `lesion` command calls), and a few run as a real subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from misuse_cases import CASES, fill, make_workspace

from lesion.cli import run


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_workspace(tmp_path_factory.mktemp("misuse"))


def snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under ``root``: files with (size, mtime), folders with None."""
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None for p in root.rglob("*")
    }


@pytest.mark.parametrize(("case", "args", "names"), CASES, ids=[c[0] for c in CASES])
def test_misuse_is_one_clear_error_and_writes_nothing(
    workspace: dict[str, str], capsys: pytest.CaptureFixture[str], case: str, args: list[str], names: str
) -> None:
    root = Path(workspace["dir"])
    before = snapshot(root)
    status = run(fill(args, workspace))
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert status == 2, captured.err
    assert "Traceback" not in captured.err and len(errors) == 1, captured.err
    assert names in errors[0], errors[0]
    assert snapshot(root) == before, "the command changed the disk"


def test_usage_errors_exit_2_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["sweep", "--limit", "abc", "-l", "fc1", "-o", "x"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert run(["reproduce", "meyes2020-cnn", "--dataset", "mnist", "-o", "x"]) == 2  # -d/--data, as everywhere
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--dataset" in err and "--data" in err


def test_an_internal_error_is_one_line_unless_debug(
    workspace: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import lesion.store._run as run_module

    def broken(self: object, plan: object = None) -> None:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(run_module.Run, "lesions", broken)
    assert run(["summary", workspace["run"]]) == 1
    err = capsys.readouterr().err
    assert "internal error (RuntimeError: disk on fire)" in err and "rerun with --debug" in err
    assert "Traceback" not in err and "second line" not in err
    assert run(["--debug", "summary", workspace["run"]]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_the_command_itself_exits_2_with_one_line(workspace: dict[str, str]) -> None:
    """The console entry point, as a user runs it."""
    for case in ("sweep-model-arg-unknown", "train-seed-range-huge"):
        args = next(a for c, a, _ in CASES if c == case)
        proc = subprocess.run([sys.executable, "-m", "lesion", *fill(args, workspace)], capture_output=True, text=True)
        assert proc.returncode == 2 and proc.stderr.startswith("error:") and len(proc.stderr.splitlines()) == 1, proc.stderr


def test_estimate_honours_its_selection(workspace: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    import pandas as pd

    out = Path(workspace["dir"]) / "estimate.csv"
    assert run(["estimate", "-m", "meyes2019-mlp", "-c", workspace["mlp64"], "--model-arg", "in_features=64",
                "-d", "digits", "-l", "fc1:3,5;fc2:0", "-o", str(out)]) == 0
    table = pd.read_csv(out)
    assert sorted(set(table["lesion"])) == ["fc1:3", "fc1:5", "fc2:0"]
    assert sorted(table[table["class"] == "overall"]["rank"]) in ([1, 2, 3], [1, 1, 3], [1, 2, 2], [1, 1, 1])
    out.unlink()


def test_random_init_is_explicit_and_reproducible(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lesion.store import Run

    args = ["sweep", "-m", "meyes2019-mlp", "--model-arg", "in_features=64", "-d", "digits", "-l", "fc2:0-1",
            "--limit", "40", "--random-init", "-o", str(tmp_path / "run")]
    assert run(args) == 0
    assert run(args) == 0  # the same random weights (seed 0): the run resumes
    assert Run(tmp_path / "run").lesions()["done"].all()


def test_sweep_plan_fraction(workspace: dict[str, str], tmp_path: Path) -> None:
    from lesion.store import Run

    out = tmp_path / "fraction"
    assert run(["sweep", "-m", "meyes2019-mlp", "-c", workspace["mlp64"], "--model-arg", "in_features=64", "-d", "digits",
                "-l", "fc1", "--limit", "40", "--plan", "fraction", "--fractions", "0.1,0.5", "--draws", "3", "-o", str(out)]) == 0
    result = Run(out)
    sizes = sorted(result.lesions("fraction")["size"])
    assert sizes == [2, 2, 2, 10, 10, 10] and result.meta("plan:fraction")["by"] == "random"
    result.close()
