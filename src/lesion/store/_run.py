"""`Run`: the read side of a run directory, as tidy pandas DataFrames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesion._errors import LesionError
from lesion.metrics import correct
from lesion.store._db import RunDB

EXPORT_FORMATS = ("csv", "parquet")


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
        (n, top1, topk, lost, gained), value.
        """
        query = (
            "SELECT l.key AS lesion, l.plan, l.layers, l.size, m.class, m.metric, m.value "
            "FROM metrics m JOIN lesions l ON l.id = m.lesion_id"
        )
        conditions, params = [], []
        if plan is not None:
            conditions.append("l.plan = ?")
            params.append(plan)
        if metric is not None:
            conditions.append("m.metric = ?")
            params.append(metric)
        if conditions:
            query += " WHERE " + " AND ".join(conditions)
        df = pd.read_sql_query(query + " ORDER BY l.id, m.metric, m.class", self.db.con, params=params)
        names = dict(enumerate(self.class_names)) | {-1: "all"}
        df.insert(5, "class_name", df["class"].map(names))
        return df

    def table(self, metric: str = "top1", plan: str | None = None) -> pd.DataFrame:
        """Wide view: one row per lesion key, one column per class name plus ``all``."""
        df = self.metrics(plan=plan, metric=metric)
        wide = df.pivot(index="lesion", columns="class_name", values="value")
        order = list(dict.fromkeys(df["lesion"]))
        return wide.loc[order, [*self.class_names, "all"]]

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
        """Write ``lesions`` and ``metrics`` tables as CSV or Parquet files into ``out``; returns the paths."""
        if fmt not in EXPORT_FORMATS:
            raise LesionError(f"format must be one of {EXPORT_FORMATS}, got {fmt!r}")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, df in (("lesions", self.lesions()), ("metrics", self.metrics())):
            path = out / f"{name}.{fmt}"
            if fmt == "csv":
                df.to_csv(path, index=False)
            else:
                df.to_parquet(path, index=False)
            paths.append(path)
        return paths
