"""The study scaffold: the directory, its stages, its files and its result, written once for every study.

A study is one package under ``lesion.studies`` plus one line in `lesion.studies.STUDIES`::

    lesion/studies/zhou2018/
        __init__.py   # the public names: run_zhou2018, Zhou2018Result
        _config.py    # the settings, checked (LesionError), and the directory's identity
        _stages.py    # run_zhou2018: check, load, claim, then the stages
        _analysis.py  # pure functions: tables from runs and arrays
        _report.py    # figures and summary.md (lesion.report's markdown helpers)
        cli.py        # command: `lesion reproduce zhou2018` (the engine options are added for it)

    STUDIES = {..., "zhou2018": "lesion.studies.zhou2018"}    # lesion/studies/__init__.py

and a run function of this shape::

    def run_zhou2018(out, *, seed=0, engine=None, progress=False) -> Zhou2018Result:
        config = check_config(seed=seed)                    # bad settings: LesionError, nothing written
        model, data = load_inputs(config)                   # inputs loaded and checked before ...
        study = StudyDir(out, "zhou2018", config).claim()   # ... the directory is claimed
        with study.stage("sweep", resumable=True):
            run = (engine or EngineConfig()).sweep(model, data.test, plans, study.path("lesions"))
        dissection = study.cached("dissection", "dissection.npy", lambda: dissect(model, data))
        study.write_table("units", units)                   # tables/units.csv + .parquet
        study.save_figure("fig1-units", figure)             # figures/fig1-units.png + .svg
        study.write_summary(markdown)                       # summary.md
        return Zhou2018Result(**study.files(), run=run, units=units)

Stages are timed into ``timings.json``: a stage read from its cache keeps the time of the run
that computed it, a resumable stage (a sweep, a population) adds the time of each attempt, and
any other stage (recomputed on every run) holds the time of the latest run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch

from lesion._errors import LesionError
from lesion._files import atomic_write

T = TypeVar("T")
IDENTITY = "study.json"
TIMINGS = "timings.json"
FIGURE_FORMATS = ("png", "svg")


@dataclass(frozen=True, kw_only=True)
class StudyResult:
    """What every study returns (each study's result adds its own fields).

    Attributes
    ----------
    out : Path
        The study directory.
    figures : dict of str -> list of Path
        Each figure's PNG and SVG, by name.
    tables : dict of str -> Path
        Each table's CSV (a Parquet file lies beside it), by name.
    timings : dict of str -> float
        Wall seconds per stage (see `StudyDir.stage`).
    summary_path : Path or None
        ``summary.md``.
    """

    out: Path
    figures: dict[str, list[Path]] = field(default_factory=dict)
    tables: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    summary_path: Path | None = None


class StudyDir:
    """One study's directory: claimed once its inputs are checked; stages, caches, tables, figures, summary.

    Parameters
    ----------
    out : path
        The directory (created by `claim`).
    study : str
        The study's name, for messages.
    identity : mapping
        The settings that make the directory what it is (JSON-serialisable); a directory claimed
        with other settings is refused.
    """

    def __init__(self, out: str | Path, study: str, identity: Mapping[str, Any]) -> None:
        self.out, self.study = Path(out), study
        self.identity: dict[str, Any] = json.loads(json.dumps(dict(identity)))
        self.timings: dict[str, float] = {}
        self.figures: dict[str, list[Path]] = {}
        self.tables: dict[str, Path] = {}
        self.summary_path: Path | None = None
        self._fresh: set[str] = set()
        self._claimed = False

    def claim(self) -> StudyDir:
        """Write ``study.json``, or refuse a directory of other settings or not a study; read earlier timings."""
        path = self.out / IDENTITY
        if path.is_file():
            stored = json.loads(path.read_text())
            if stored != self.identity:
                differ = sorted(k for k in set(stored) | set(self.identity) if stored.get(k) != self.identity.get(k))
                raise LesionError(
                    f"out {str(self.out)!r} holds a {self.study} study with other settings (differs in {differ}); use a new --out"
                )
        elif self.out.is_dir() and any(self.out.iterdir()):
            raise LesionError(f"out {str(self.out)!r} is not empty and holds no {IDENTITY}; choose a new or empty directory")
        else:
            atomic_write(path, lambda p: p.write_text(json.dumps(self.identity, indent=1)))
        timings = self.out / TIMINGS
        self.timings = json.loads(timings.read_text()) if timings.is_file() else {}
        self._claimed = True
        return self

    def path(self, *parts: str) -> Path:
        """A path inside the directory (which must be claimed)."""
        if not self._claimed:
            raise LesionError(f"{self.study}: the study directory is written to before claim() (a bug of the study)")
        return self.out.joinpath(*parts)

    @contextmanager
    def stage(self, name: str, *, cached: bool = False, resumable: bool = False) -> Iterator[None]:
        """Time the block as stage ``name`` into ``timings.json`` (written even if the block fails).

        ``cached``: the block reads the stage's output back; its earlier time is kept.
        ``resumable``: the block continues earlier work (a sweep); its time adds to the stored one.
        Otherwise the stage is recomputed on every run: its first block in this run replaces the
        stored time and later blocks of the same name add to it.
        """
        self.path()
        if not (cached or resumable) and name not in self._fresh:
            self.timings[name] = 0.0
        self._fresh.add(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            if not cached or name not in self.timings:
                self.timings[name] = round(self.timings.get(name, 0.0) + elapsed, 3)
            atomic_write(self.path(TIMINGS), lambda p: p.write_text(json.dumps(self.timings, indent=1)))

    def cached(
        self, stage: str, relative: str | Path, compute: Callable[[], T], *,
        save: Callable[[T, Path], object] | None = None, load: Callable[[Path], T] | None = None,
    ) -> T:
        """The output of ``compute()``, saved at ``relative`` and read back on later runs, timed as ``stage``.

        Files ending in ``.npy``, ``.npz`` (a dict of arrays), ``.csv`` (a DataFrame), ``.json`` and
        ``.pt`` (a checkpoint; loaded with ``weights_only=True``) are saved and loaded by default;
        anything else needs ``save`` and ``load``.
        """
        path = self.path(str(relative))
        saver, loader = _SAVERS.get(path.suffix, (None, None))
        save, load = save or saver, load or loader
        if save is None or load is None:
            raise LesionError(f"{self.study}: cached file {path.name!r} needs save= and load= (no default for {path.suffix!r})")
        with self.stage(stage, cached=path.is_file(), resumable=True):
            if path.is_file():
                return load(path)
            value = compute()
            atomic_write(path, lambda p: save(value, p))
            return value

    def write_table(self, name: str, frame: pd.DataFrame) -> Path:
        """``tables/NAME.csv`` and ``tables/NAME.parquet`` (tidy, no index); returns the CSV."""
        csv = self.path("tables", f"{name}.csv")
        atomic_write(csv, lambda p: frame.to_csv(p, index=False))
        atomic_write(csv.with_suffix(".parquet"), lambda p: _to_parquet(frame, p))
        self.tables[name] = csv
        return csv

    def save_figure(self, name: str, figure: Any, *, title: str | None = None, tight: bool = False) -> list[Path]:
        """``figures/NAME.png`` and ``.svg`` (``title`` above the panels; ``tight``: tight layout); closes it."""
        import matplotlib.pyplot as plt

        if title is not None:
            figure.suptitle(title, fontsize="medium")
        if tight or title is not None:
            figure.tight_layout()
        def save(path: Path) -> None:
            figure.savefig(path, format=path.suffix[1:], dpi=150, bbox_inches="tight")

        files = [atomic_write(self.path("figures", f"{name}.{fmt}"), save) for fmt in FIGURE_FORMATS]
        plt.close(figure)
        self.figures[name] = files
        return files

    def write_summary(self, text: str) -> Path:
        """``summary.md``."""
        self.summary_path = atomic_write(self.path("summary.md"), lambda p: p.write_text(text))
        return self.summary_path

    def files(self) -> dict[str, Any]:
        """The `StudyResult` fields: ``out``, ``figures``, ``tables``, ``timings``, ``summary_path``."""
        return {
            "out": self.out, "figures": dict(self.figures), "tables": dict(self.tables),
            "timings": dict(self.timings), "summary_path": self.summary_path,
        }


def _to_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Parquet of ``frame``; columns mixing types (e.g. class ids and 'all') are written as text."""
    mixed = [c for c in frame.columns if frame[c].dtype == object and frame[c].map(type).nunique() > 1]
    frame.astype({c: str for c in mixed}).to_parquet(path, index=False)


def _save_npz(value: Mapping[str, np.ndarray], path: Path) -> None:
    np.savez(path, **value)  # type: ignore[arg-type]


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as stored:
        return {name: stored[name] for name in stored.files}


_SAVERS: dict[str, tuple[Callable[[Any, Path], object], Callable[[Path], Any]]] = {
    ".npy": (lambda value, p: np.save(p, value), np.load),
    ".npz": (_save_npz, _load_npz),
    ".csv": (lambda frame, p: frame.to_csv(p, index=False), pd.read_csv),
    ".json": (lambda value, p: p.write_text(json.dumps(value, indent=1)), lambda p: json.loads(p.read_text())),
    ".pt": (lambda value, p: torch.save(value, p), lambda p: torch.load(p, weights_only=True)),
}
