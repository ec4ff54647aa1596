"""What the studies share: the identity file of a study directory, stage timings, file hashes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lesion._errors import LesionError


def claim_study(out: Path, study: str, identity: dict[str, Any]) -> None:
    """Write ``out/study.json``, or refuse a directory made with other settings or by something else."""
    path = out / "study.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored != json.loads(json.dumps(identity)):
            differ = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
            raise LesionError(
                f"out {str(out)!r} holds a {study} study with other settings (differs in {differ}); use a new --out"
            )
        return
    if out.is_dir() and any(out.iterdir()):
        raise LesionError(f"out {str(out)!r} is not empty and holds no study.json; choose a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(identity, indent=1))


@dataclass
class StageTimings:
    """Wall seconds per stage, kept in a JSON file; a stage read back from a cache keeps its earlier time."""

    path: Path
    seconds: dict[str, float]

    @classmethod
    def load(cls, path: Path) -> StageTimings:
        return cls(path, json.loads(path.read_text()) if path.is_file() else {})

    @contextmanager
    def stage(self, name: str, cached: bool = False) -> Iterator[None]:
        start = time.perf_counter()
        yield
        if not cached or name not in self.seconds:
            self.seconds[name] = round(time.perf_counter() - start, 1)
            self.path.write_text(json.dumps(self.seconds, indent=1))
