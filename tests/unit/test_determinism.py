"""The README's promise: the same seed gives the same checkpoint bytes, in two fresh processes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path


def test_same_seed_same_checkpoint_bytes_across_processes(tmp_path: Path) -> None:
    digests = []
    for name in ("a", "b"):
        out = tmp_path / name
        proc = subprocess.run(
            [sys.executable, "-m", "lesion", "train", "meyes2019-mlp", "--data", "digits", "--model-arg", "in_features=64",
             "--seeds", "0", "--epochs", "2", "--threads", "1", "--out", str(out)],
            capture_output=True, text=True,
        )
        assert proc.returncode == 0, proc.stderr
        digests.append(hashlib.sha256((out / "seed-000.pt").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
