"""`lesion reproduce meyes2019-mlp`: the 2019 MLP study from one command (registered by `lesion.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lesion.studies._engine import EngineConfig


def command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Study directory (created; rerun into it to resume).")],
    data: Annotated[str, typer.Option("--data", "-d", help="mnist (the paper's), fashion-mnist, or digits (embedded, runs in a minute).")] = "mnist",
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where the dataset files are (default: $LESION_DATA_DIR).")] = None,
    networks: Annotated[int, typer.Option(help="Population size: networks trained with seeds SEED..SEED+N-1.")] = 20,
    epochs: Annotated[int, typer.Option(help="Training epochs per network (SGD, lr 0.01, momentum 0.9, batch 64).")] = 100,
    population: Annotated[Path | None, typer.Option(help="Reuse the checkpoints seed-*.pt of this directory instead of training.")] = None,
    seed: Annotated[int, typer.Option(help="First training seed; also seeds the t-SNE.")] = 0,
    limit: Annotated[int | None, typer.Option(help="Evaluate on the first N test samples only (training uses all).")] = None,
    alpha: Annotated[float, typer.Option(help="False discovery rate of the Benjamini-Hochberg correction.")] = 0.05,
    workers: Annotated[int | None, typer.Option(help="Networks trained at once, one process each (default: one per CPU core).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help="Show progress bars.")] = True,
    engine: EngineConfig | None = None,
) -> None:
    """Meyes et al. (2019): single and pairwise unit lesions of a population of 784-20-10-10 MLPs.

    Trains the population (or reuses --population), lesions every hidden unit and every pair of
    fc1 units in each network, computes unit attributes, correlations, pair synergy and exact
    McNemar tests with Benjamini-Hochberg correction, writes the paper's figures (PNG and SVG),
    tidy tables and OUT/summary.md (the paper's numbers beside ours). Resumable.

    Example: lesion reproduce meyes2019-mlp --data-dir ../shared/datasets --out runs/meyes2019-mlp
    """
    from rich.console import Console

    from lesion.report import markdown_table
    from lesion.studies.meyes2019_mlp._stages import run_meyes2019_mlp

    result = run_meyes2019_mlp(
        out, data=data, data_dir=data_dir, networks=networks, epochs=epochs, population=population,
        seed=seed, limit=limit, alpha=alpha, workers=workers, engine=engine, progress=progress,
    )
    console = Console()
    console.print(markdown_table(result.summary), highlight=False, soft_wrap=True)
    total = sum(result.timings.values())
    console.print(
        f"\n{len(result.figures)} figures in {result.out / 'figures'}; summary in {result.summary_path} "
        f"({total:.0f} s)", highlight=False,
    )
