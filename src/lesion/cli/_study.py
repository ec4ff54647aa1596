"""`lesion run STUDY.toml`: a study of any model from a study file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lesion.cli._app import app
from lesion.cli._common import Autocast, console


@app.command("run")
def run_study_file(
    study: Annotated[Path, typer.Argument(help="The study file (TOML): [model], [data], [[plans]], [engine], [analyses], [report].")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Study directory (default: runs/NAME; rerun into it to resume).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or mps (default: the file's [engine] device).")] = None,
    autocast: Annotated[Autocast | None, typer.Option(help="bf16 or fp16 sweeps (default: the file's).")] = None,
    channels_last: Annotated[bool | None, typer.Option("--channels-last/--no-channels-last", help="Fast engine: channels-last inputs (default: the file's).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help="Show progress bars.")] = True,
) -> None:
    """Run (or resume) the study of a study file: train or load the model, lesion, analyse, draw, summary.md.

    The file is checked first (an unknown key names the closest valid one); nothing is written before.

    Example: lesion run examples/digits.toml --out runs/digits
    """
    from lesion.studies.custom import run_study

    given = {"device": device, "autocast": autocast.value if autocast else None, "channels_last": channels_last}
    result = run_study(study, out, engine={k: v for k, v in given.items() if v is not None}, progress=progress)
    console.print(result.summary.text, highlight=False, soft_wrap=True)
    for note in result.notes:
        console.print(f"skipped: {note}", highlight=False)
    console.print(f"wrote {result.summary_path}, {len(result.tables)} tables and {len(result.figures)} figures under {result.out}")
