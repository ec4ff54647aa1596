"""`Run`: the read side of a run directory, as tidy pandas DataFrames."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesion._errors import LesionError, closest
from lesion.metrics import METRICS, class_sizes, correct, metrics_from_counts
from lesion.store._db import RunDB

EXPORT_FORMATS = ("csv", "parquet")
#: Lesions read at a time by the chunked readers.
CHUNK = 4096


class Run:
    """A finished or partial run, read from its directory.

    Examples
    --------
    >>> run = Run("runs/demo")                                   # doctest: +SKIP
    >>> run.metrics(metric="top1").query("`class` == -1")        # doctest: +SKIP
    """

    def __init__(self, path: str | Path) -> None:
        self.db = RunDB(path)
        self.path = self.db.dir
        self._sizes: np.ndarray | None = None

    def close(self) -> None:
        self.db.close()

    def meta(self, key: str) -> Any:
        return self.db.get_meta(key)

    @property
    def config(self) -> dict[str, Any]:
        return self.db.get_meta("config")

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.db.get_meta("dataset")["class_names"])

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 labels of the evaluation split."""
        return self.db.get_array("labels").astype(np.int64)

    def array(self, name: str) -> np.ndarray:
        return self.db.get_array(name)

    def lesions(self, plan: str | None = None) -> pd.DataFrame:
        """One row per lesion: id, key, plan, method, layers, size, done, near_ties."""
        df = pd.read_sql_query(
            "SELECT l.id, l.key, l.plan, l.method, l.layers, l.size, o.lesion_id IS NOT NULL AS done, o.near_ties "
            "FROM lesions l LEFT JOIN outcomes o ON o.lesion_id = l.id ORDER BY l.id",
            self.db.con,
        )
        df["done"] = df["done"].astype(bool)
        return df if plan is None else df[df["plan"] == plan].reset_index(drop=True)

    def metrics(self, plan: str | None = None, metric: str | None = None) -> pd.DataFrame:
        """Tidy table, one row per lesion × class × metric.

        Columns: lesion (key), plan, layers, size, class (-1: overall), class_name, metric
        (n, top1, topk, lost, gained), value. On a large run prefer :meth:`iter_metrics`.
        """
        frames = list(self.iter_metrics(plan, metric))
        return pd.concat(frames, ignore_index=True) if frames else self._tidy([], np.zeros((0, 4, len(self.class_names) + 1)), metric)

    def iter_metrics(self, plan: str | None = None, metric: str | None = None, chunk: int = CHUNK) -> Iterator[pd.DataFrame]:
        """:meth:`metrics` in pieces of ``chunk`` lesions, in lesion order (memory bounded by ``chunk``)."""
        if metric is not None and metric not in METRICS:
            raise LesionError(f"metric must be one of {METRICS}, got {metric!r}{closest(metric, METRICS)}")
        for lesions, counts in self.db.iter_counts(plan, chunk):
            yield self._tidy(lesions, counts, metric)

    def _tidy(self, lesions: list[tuple[str, str, str, int]], counts: np.ndarray, metric: str | None) -> pd.DataFrame:
        """Rows ordered by lesion, metric name, class (-1 first)."""
        names = sorted(METRICS) if metric is None else [metric]
        values = metrics_from_counts(counts, self._class_sizes())
        n_cols = counts.shape[-1]
        order = [n_cols - 1, *range(n_cols - 1)]  # overall first, as class -1 sorts
        block = np.stack([values[name][:, order] for name in names], axis=1)  # (r, metrics, classes)
        per_lesion = len(names) * n_cols
        frame = pd.DataFrame(lesions, columns=["lesion", "plan", "layers", "size"]).loc[np.repeat(np.arange(len(lesions)), per_lesion)]
        frame = frame.reset_index(drop=True)
        classes = np.array([-1, *range(n_cols - 1)])
        frame["class"] = np.tile(classes, len(lesions) * len(names))
        frame["class_name"] = np.tile(np.array(["all", *self.class_names], dtype=object), len(lesions) * len(names))
        frame["metric"] = np.tile(np.repeat(np.array(names, dtype=object), n_cols), len(lesions))
        frame["value"] = block.reshape(-1)
        return frame

    def _class_sizes(self) -> np.ndarray:
        if self._sizes is None:
            self._sizes = class_sizes(self.labels, len(self.class_names))
        return self._sizes

    def table(self, metric: str = "top1", plan: str | None = None) -> pd.DataFrame:
        """Wide view: one row per lesion key, one column per class name plus ``all`` (read in chunks)."""
        if metric not in METRICS:
            raise LesionError(f"metric must be one of {METRICS}, got {metric!r}{closest(metric, METRICS)}")
        keys: list[str] = []
        parts = [np.zeros((0, len(self.class_names) + 1))]
        for lesions, counts in self.db.iter_counts(plan):
            keys.extend(row[0] for row in lesions)
            parts.append(metrics_from_counts(counts, self._class_sizes())[metric])
        columns = pd.Index([*self.class_names, "all"], name="class_name")
        return pd.DataFrame(np.concatenate(parts), index=pd.Index(keys, name="lesion"), columns=columns)

    def float32_check(self) -> pd.DataFrame | None:
        """For a run under autocast: the intact network and the lesions re-evaluated in float32.

        One row per checked lesion (``intact`` first): lesion, n (samples), differ (top-1
        predictions that differ from float32's), fraction. None for a float32 run.
        """
        if not self.config.get("autocast"):
            return None
        checked = self.db.get_meta("float32_check") or {}
        n = len(self.labels)
        order = ["intact", *sorted(set(checked) - {"intact"})] if "intact" in checked else sorted(checked)
        df = pd.DataFrame({"lesion": order, "n": n, "differ": [checked[key] for key in order]})
        df["fraction"] = df["differ"] / n
        return df

    def topk(self, key: str) -> np.ndarray:
        """(N, k) int64 top-k predictions of a lesion (``"intact"`` for the intact network)."""
        return self.db.topk(key)

    def correct(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample (top-1 correct, top-k correct) bool arrays of shape (N,)."""
        return correct(self.topk(key), self.labels)

    def export(self, out: str | Path, fmt: str = "csv") -> list[Path]:
        """Write ``lesions`` and ``metrics`` tables as CSV or Parquet files into ``out`` (chunk by chunk); returns the paths."""
        if fmt not in EXPORT_FORMATS:
            raise LesionError(f"format must be one of {EXPORT_FORMATS}, got {fmt!r}")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"lesions.{fmt}", out / f"metrics.{fmt}"]
        _write_frames(iter([self.lesions()]), paths[0], fmt)
        _write_frames(self.iter_metrics(), paths[1], fmt)
        return paths


def _write_frames(frames: Iterator[pd.DataFrame], path: Path, fmt: str) -> None:
    """Write the frames (same columns) one after another into one CSV or Parquet file."""
    if fmt == "csv":
        first = True
        for frame in frames:
            frame.to_csv(path, index=False, mode="w" if first else "a", header=first)
            first = False
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for frame in frames:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
