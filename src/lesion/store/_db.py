"""The run directory and its SQLite results database.

Tables (all keyed by integers assigned in plan order, so two runs of the same plans are equal row
for row):

- ``meta(key, value)``: JSON values: format, config, model and dataset fingerprints, versions.
- ``arrays(name, dtype, shape, data)``: small numpy arrays (the labels, random draws, ...).
- ``lesions(id, key, plan, method, layers, size)``: every lesion of every plan, registered up front.
- ``outcomes(lesion_id, topk, near_ties)``: the per-sample top-k, zlib-compressed; a lesion's
  matrix is stored XOR the intact network's, so the unchanged samples compress to almost nothing.
- ``metrics(lesion_id, class, metric, value)``: per-class (class -1: overall) n, top1, topk, lost, gained.

Each lesion's outcome and metrics are committed in one transaction, so a killed run resumes without
gaps or duplicates.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lesion._errors import LesionError
from lesion._lesion import Lesion
from lesion.metrics import METRICS
from lesion.store._lock import LOCK_NAME

FORMAT = "lesion-run/1"
DB_NAME = "results.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS arrays(name TEXT PRIMARY KEY, dtype TEXT NOT NULL, shape TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS lesions(
  id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, plan TEXT NOT NULL,
  method TEXT NOT NULL, layers TEXT NOT NULL, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outcomes(
  lesion_id INTEGER PRIMARY KEY REFERENCES lesions(id), topk BLOB NOT NULL, near_ties INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS metrics(
  lesion_id INTEGER NOT NULL REFERENCES lesions(id), class INTEGER NOT NULL, metric TEXT NOT NULL, value REAL,
  PRIMARY KEY(lesion_id, class, metric)) WITHOUT ROWID;
"""


def versions() -> dict[str, str]:
    import numpy
    import torch

    from lesion._version import __version__

    return {"lesion": __version__, "torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version()}


class RunDB:
    """Read and write access to one run directory's ``results.sqlite``."""

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        self.dir = Path(path)
        self.file = self.dir / DB_NAME
        self._intact: np.ndarray | None = None
        if not create and not self.file.is_file():
            raise LesionError(f"run directory {str(self.dir)!r} holds no {DB_NAME}: not a lesion run")
        if create:
            _prepare_dir(self.dir)
        try:
            self.con = sqlite3.connect(self.file, isolation_level=None)
            self.con.execute("PRAGMA journal_mode=WAL")
            self.con.execute("PRAGMA synchronous=NORMAL")
            if create:
                self.con.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise LesionError(f"run directory {str(self.dir)!r}: cannot open {DB_NAME} for writing ({exc}); choose a writable --out") from None
        fmt = self.get_meta("format") if self._has_meta() else None
        if fmt is None and not create:
            raise LesionError(f"{self.file} is not a lesion results database")
        if fmt is not None and fmt != FORMAT:
            raise LesionError(f"{self.file} has format {fmt!r}; this version of lesion reads {FORMAT!r}")

    def _has_meta(self) -> bool:
        return self.con.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone() is not None

    def close(self) -> None:
        self.con.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.con.execute("BEGIN IMMEDIATE")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        else:
            self.con.execute("COMMIT")

    # -- meta and arrays -------------------------------------------------------------------
    def get_meta(self, key: str) -> Any:
        row = self.con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, con: sqlite3.Connection, key: str, value: Any) -> None:
        con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, sort_keys=True)))

    def put_array(self, con: sqlite3.Connection, name: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        con.execute(
            "INSERT OR REPLACE INTO arrays VALUES (?, ?, ?, ?)",
            (name, array.dtype.str, json.dumps(list(array.shape)), zlib.compress(array.tobytes())),
        )

    def get_array(self, name: str) -> np.ndarray:
        row = self.con.execute("SELECT dtype, shape, data FROM arrays WHERE name=?", (name,)).fetchone()
        if row is None:
            raise LesionError(f"run {str(self.dir)!r} holds no array {name!r}")
        return np.frombuffer(zlib.decompress(row[2]), dtype=np.dtype(row[0])).reshape(json.loads(row[1]))

    def array_names(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT name FROM arrays ORDER BY name")]

    # -- lesions and outcomes --------------------------------------------------------------
    def register(self, plan: str, lesions: Iterable[Lesion]) -> None:
        """Add lesions not yet present, in order, under ``plan`` (one transaction)."""
        with self.transaction() as con:
            con.executemany(
                "INSERT OR IGNORE INTO lesions(key, plan, method, layers, size) VALUES (?, ?, ?, ?, ?)",
                [(les.key, plan, les.method, ",".join(les.layers), les.size) for les in lesions],
            )

    def lesion_ids(self, keys: Iterable[str]) -> dict[str, int]:
        wanted = list(keys)
        found = dict(self.con.execute("SELECT key, id FROM lesions"))
        return {k: found[k] for k in wanted if k in found}

    def done_keys(self) -> set[str]:
        return {r[0] for r in self.con.execute("SELECT l.key FROM lesions l JOIN outcomes o ON o.lesion_id = l.id")}

    def _dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.get_meta("dataset")["n_classes"] <= 256 else np.uint16)

    def put_outcome(
        self, key: str, topk: np.ndarray, near_ties: int, metrics: dict[str, np.ndarray], intact: np.ndarray | None
    ) -> None:
        """Commit one lesion's outcome and metrics in one transaction (``intact``: None for the intact network)."""
        coded = topk.astype(self._dtype())
        if intact is not None:
            coded = coded ^ intact.astype(coded.dtype)
        with self.transaction() as con:
            (lesion_id,) = con.execute("SELECT id FROM lesions WHERE key=?", (key,)).fetchone()
            con.execute("INSERT INTO outcomes VALUES (?, ?, ?)", (lesion_id, zlib.compress(coded.tobytes()), near_ties))
            con.executemany(
                "INSERT INTO metrics VALUES (?, ?, ?, ?)",
                [
                    (lesion_id, c if c < len(values) - 1 else -1, name, None if np.isnan(v) else float(v))
                    for name in METRICS
                    for values in [metrics[name]]
                    for c, v in enumerate(values)
                ],
            )

    def topk(self, key: str) -> np.ndarray:
        """The stored (N, k) top-k matrix of a lesion (int64)."""
        row = self.con.execute(
            "SELECT o.topk FROM outcomes o JOIN lesions l ON l.id = o.lesion_id WHERE l.key=?", (key,)
        ).fetchone()
        if row is None:
            raise LesionError(f"run {str(self.dir)!r} has no outcome for lesion {key!r}")
        n, k = self.get_meta("dataset")["n"], self.get_meta("config")["k"]
        coded = np.frombuffer(zlib.decompress(row[0]), dtype=self._dtype()).reshape(n, k)
        if key != "intact":
            coded = coded ^ self._intact_topk().astype(coded.dtype)
        return coded.astype(np.int64)

    def _intact_topk(self) -> np.ndarray:
        """The intact network's top-k, read once: it is written once, before any lesion's."""
        if self._intact is None:
            self._intact = self.topk("intact")
        return self._intact


def check_run_dir(path: str | Path) -> None:
    """Raise `LesionError` unless ``path`` can become a run directory or is one; writes nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LesionError(f"--out: run directory {str(path)!r} is a file; give a directory path")
    if path.is_dir() and not (path / DB_NAME).is_file() and any(p.name != LOCK_NAME for p in path.iterdir()):
        raise LesionError(
            f"--out: run directory {str(path)!r} is not empty and holds no {DB_NAME}: it is not a lesion run; "
            "choose a new or empty directory"
        )
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise LesionError(f"--out: {str(path)!r} is not writable: {str(existing)!r} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LesionError(f"--out: {str(existing)!r} is not writable; choose a writable directory")


def _prepare_dir(path: Path) -> None:
    check_run_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise LesionError(f"run directory {str(path)!r} is not writable ({exc.strerror}); choose a writable --out") from None
