"""`lesion demo`: a complete small study on the embedded digits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lesion.cli._app import app
from lesion.cli._common import console


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory for the demo study.")] = Path("runs/demo"),
    seed: Annotated[int, typer.Option(help="Seed of the network's initialisation and training order.")] = 0,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 30,
) -> None:
    """A complete small lesion study on scikit-learn's digits, no download, under a minute.

    Trains the Meyes 2019 MLP shape for 8x8 inputs (64-20-10-10, no biases, ReLU), lesions every
    hidden unit singly and every pair of the first hidden layer, prints a summary and writes figures,
    tables and summary.md: the study of examples/digits.toml.
    """
    from lesion.studies.demo import run_demo

    result = run_demo(out, seed=seed, epochs=epochs, progress=True)
    console.print(result.summary.text, highlight=False, soft_wrap=True)
    for paths in result.figures.values():
        console.print(f"wrote {paths[0]}")
    console.print(f"wrote {result.summary_path}")
