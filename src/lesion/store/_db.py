"""The run directory and its SQLite results database.

Tables (all keyed by integers assigned in plan order, so two runs of the same plans are equal row
for row):

- ``meta(key, value)``: JSON values: format, config, model and dataset fingerprints, versions.
- ``arrays(name, dtype, shape, data)``: small numpy arrays (the labels, random draws, ...).
- ``lesions(id, key, plan, method, layers, size)``: every lesion of every plan, registered up front.
- ``outcomes(lesion_id, topk, near_ties)``: the per-sample top-k, stored XOR the intact network's
  (the intact network's own: XOR 0) as a bit mask of the N samples that differ followed by their
  XOR rows (uint8, or uint16 past 256 classes), zlib-compressed (level 1): a lesion that changes few
  samples takes a few bytes beyond its N/8-byte mask.
- ``metrics(lesion_id, counts)``: int32 (4, n_classes + 1) counts of samples right at top-1, right
  at top-k, lost and gained per class (last column: all); the accuracies follow exactly from the
  labels (:func:`lesion.metrics.metrics_from_counts`).

Outcomes are committed in batches (:meth:`RunDB.put_outcomes`), each batch, with its metrics, in one
transaction, so a killed run resumes without gaps or duplicates.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lesion._errors import LesionError
from lesion._lesion import Lesion
from lesion.store._lock import LOCK_NAME

FORMAT = "lesion-run/2"
DB_NAME = "results.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS arrays(name TEXT PRIMARY KEY, dtype TEXT NOT NULL, shape TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS lesions(
  id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, plan TEXT NOT NULL,
  method TEXT NOT NULL, layers TEXT NOT NULL, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outcomes(
  lesion_id INTEGER PRIMARY KEY REFERENCES lesions(id), topk BLOB NOT NULL, near_ties INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS metrics(lesion_id INTEGER PRIMARY KEY REFERENCES lesions(id), counts BLOB NOT NULL);
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
            raise LesionError(
                f"{self.file} has format {fmt!r}; this version of lesion reads {FORMAT!r} only: "
                "rerun the sweep into a new --out (or read it with the lesion version that wrote it)"
            )

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

    def put_outcomes(self, keys: Sequence[str], tops: np.ndarray, near_ties: Sequence[int], counts: np.ndarray) -> None:
        """Commit R outcomes and their metrics in one transaction.

        ``tops`` (R, N, k) top-k predictions; ``counts`` (R, 4, n_classes + 1) from
        :func:`lesion.metrics.correct_counts`. ``"intact"`` must be committed alone, before any lesion.
        """
        coded = tops.astype(self._dtype())
        if list(keys) != ["intact"]:
            coded ^= self._intact_topk().astype(coded.dtype)
        changed = coded[:, :, 0] != 0  # (R, N); k column passes: far faster than .any(axis=2)
        for j in range(1, coded.shape[2]):
            changed |= coded[:, :, j] != 0
        masks = np.packbits(changed, axis=1)
        blobs = [zlib.compress(masks[i].tobytes() + coded[i][changed[i]].tobytes(), 1) for i in range(len(coded))]
        counts32 = np.ascontiguousarray(counts, dtype="<i4")
        with self.transaction() as con:
            stored = con.executemany(
                "INSERT INTO outcomes SELECT id, ?, ? FROM lesions WHERE key = ?",
                [(blob, int(ties), key) for blob, ties, key in zip(blobs, near_ties, keys, strict=True)],
            ).rowcount
            con.executemany(
                "INSERT INTO metrics SELECT id, ? FROM lesions WHERE key = ?",
                [(c.tobytes(), key) for c, key in zip(counts32, keys, strict=True)],
            )
            if stored != len(keys):  # a key that is not registered selects no row: refuse the whole batch
                raise LesionError(f"put_outcomes: {len(keys) - stored} of {len(keys)} keys are not registered lesions of this run")

    def topk(self, key: str) -> np.ndarray:
        """The stored (N, k) top-k matrix of a lesion (int64)."""
        row = self.con.execute(
            "SELECT o.topk FROM outcomes o JOIN lesions l ON l.id = o.lesion_id WHERE l.key=?", (key,)
        ).fetchone()
        if row is None:
            raise LesionError(f"run {str(self.dir)!r} has no outcome for lesion {key!r}")
        n, k = self.get_meta("dataset")["n"], self.get_meta("config")["k"]
        dtype = self._dtype()
        raw = zlib.decompress(row[0])
        n_mask = (n + 7) // 8
        changed = np.unpackbits(np.frombuffer(raw, np.uint8, n_mask), count=n).astype(bool)
        coded = np.zeros((n, k), dtype=dtype)
        coded[changed] = np.frombuffer(raw, dtype, offset=n_mask).reshape(-1, k)
        if key != "intact":
            coded ^= self._intact_topk().astype(dtype)
        return coded.astype(np.int64)

    def iter_counts(self, plan: str | None = None, chunk: int = 4096) -> Iterator[tuple[list[tuple[str, str, str, int]], np.ndarray]]:
        """The stored counts of every finished lesion (of ``plan``), in lesion order, ``chunk`` lesions at a
        time: ([(key, plan, layers, size)], int64 counts (r, 4, n_classes + 1))."""
        width = self.get_meta("dataset")["n_classes"] + 1
        query = "SELECT l.key, l.plan, l.layers, l.size, m.counts FROM metrics m JOIN lesions l ON l.id = m.lesion_id"
        cursor = self.con.execute(query + (" WHERE l.plan = ?" if plan is not None else "") + " ORDER BY m.lesion_id",
                                  () if plan is None else (plan,))
        while rows := cursor.fetchmany(chunk):
            counts = np.frombuffer(b"".join(r[4] for r in rows), "<i4").reshape(len(rows), 4, width).astype(np.int64)
            yield [r[:4] for r in rows], counts

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
