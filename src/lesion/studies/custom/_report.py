"""Figures and ``summary.md`` of a study file's study."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lesion.plots import ClassOutcomeBars, EmbeddingView, LayerLesionBars
from lesion.report import RunSummary, bullet_list, markdown_table, timings_table
from lesion.store import Run
from lesion.studies._study import StudyDir

if TYPE_CHECKING:
    from lesion.studies.custom._config import StudyFile


def draw_figures(
    study: StudyDir, run: Run, summary: RunSummary, tables: dict[str, pd.DataFrame], embedding: np.ndarray | None
) -> None:
    """Outcome bars of the intact network and the most damaging lesion, a depth profile per fraction plan
    and fraction, and the embedding of the evaluation set when computed."""
    import matplotlib

    matplotlib.use("Agg")
    shown = ["intact", *summary.drops["lesion"].head(1)]
    for key in shown:
        name = f"bars-{key.replace(':', '-')}" if len(key) <= 40 else "bars-most-damaging"
        study.save_figure(name, ClassOutcomeBars.from_run(run, key).plot().figure_)
    for name, effects in tables.items():
        if name.startswith("depth-"):
            for fraction in effects["fraction"].unique():
                bars = LayerLesionBars.from_effects(effects, fraction, title=f"{name[6:]}: {100 * fraction:g} % of each layer")
                study.save_figure(f"{name}-{round(100 * fraction)}pct", bars.plot().figure_)
    if embedding is not None:
        study.save_figure("embedding", EmbeddingView.from_run(run, embedding).plot().figure_)


def write_summary(study: StudyDir, spec: StudyFile, run: Run, summary: RunSummary, notes: list[str]) -> None:
    """``summary.md``: what ran, the headline numbers, the analyses' tables and figures, wall times."""
    plans = run.lesions().groupby("plan", sort=False).size().drop(index="intact", errors="ignore")
    settings = {
        "model": spec.model.name or str(spec.model.checkpoint),
        "data": f"{spec.data.name} ({len(run.labels):,} evaluation samples)",
        "plans": ", ".join(f"{name} ({n:,} lesions)" for name, n in plans.items()),
        "engine": ", ".join(f"{key} {value}" for key, value in spec.engine.model_dump().items() if value not in (None, False)),
    }
    lines = [f"# Study {spec.name}", "", bullet_list(settings), "", "## Headline numbers", "", "```", summary.text, "```", ""]
    worst = summary.drops.head(spec.report.top).assign(drop_pp=lambda d: d["drop_pp"].round(2))
    lines += ["## Most damaging lesions (top-1 drop, pp)", "", markdown_table(worst), ""]
    if notes:
        lines += ["## Skipped", "", *[f"- {note}" for note in notes], ""]
    lines += ["## Tables", "", *[f"- {name}: `{path.relative_to(study.out)}` (+ .parquet)" for name, path in study.tables.items()], ""]
    lines += ["## Figures", "", *[f"- `{paths[0].relative_to(study.out)}` (+ .svg)" for paths in study.figures.values()], ""]
    lines += ["## Wall time per stage", "", timings_table(study.timings), ""]
    study.write_summary("\n".join(lines))
