"""One writer per run directory: a second writer is refused; the lock of a dead process is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import lesion
from lesion import LesionError
from lesion.cli import run
from lesion.store._lock import LOCK_NAME, DirLock, holder
from lesion.testing import toy_data, toy_network

HOLD = "import sys, time; from lesion.store._lock import DirLock; l = DirLock(sys.argv[1]); l.acquire(); print('locked', flush=True); time.sleep(600)"


@pytest.fixture
def held(tmp_path: Path):
    """A run directory whose lock another live process holds; yields (directory, process)."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    yield out, proc
    proc.kill()
    proc.wait()


def test_a_second_writer_is_refused_with_the_holder_named(held, capsys: pytest.CaptureFixture[str]) -> None:
    out, proc = held
    model, data = toy_network(), toy_data()
    with pytest.raises(LesionError, match=f"being written by process {proc.pid} on host"):
        lesion.sweep(model, data, lesion.single(model, "hidden"), out)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written
    assert holder(out)["pid"] == proc.pid
    status = run(["sweep", "-m", "meyes2019-mlp", "--model-arg", "in_features=64", "--random-init", "-d", "digits",
                  "-l", "fc2:0", "--limit", "20", "-o", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: --out:") and str(proc.pid) in err and "one writer at a time" in err


def test_the_lock_of_a_killed_process_is_taken_over(held) -> None:
    out, proc = held
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid  # the stale file is still there
    assert holder(out) is None
    model, data = toy_network(), toy_data()
    result = lesion.sweep(model, data, lesion.single(model, "hidden"), out)
    assert result.lesions()["done"].all()
    assert not (out / LOCK_NAME).exists()  # released at the end


def test_the_lock_file_names_pid_host_and_start(tmp_path: Path) -> None:
    with DirLock(tmp_path / "d") as lock:
        info = json.loads(lock.file.read_text())
        assert info["pid"] == os.getpid() and info["host"] and info["started"].endswith("+00:00")
        with pytest.raises(LesionError, match="one writer at a time"):  # even from this process
            DirLock(tmp_path / "d").acquire()
    assert holder(tmp_path / "d") is None
