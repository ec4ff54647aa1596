"""`lesion reproduce morcos2018`: cumulative ablation, label noise, generalisation and noise perturbation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lesion.studies._engine import EngineConfig


def command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Study directory (created; rerun into it to resume).")],
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where the IDX files are (default: $LESION_DATA_DIR).")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="One dataset for every architecture (default: MNIST for the MLP, Fashion-MNIST for the CNN).")] = None,
    small: Annotated[bool, typer.Option("--small", help="The small size (tests, smoke runs) instead of the default.")] = False,
    architecture: Annotated[list[str] | None, typer.Option("--architecture", help="mlp, cnn (repeat; default: the size's).")] = None,
    variant: Annotated[list[str] | None, typer.Option("--variant", help="plain, bn, dropout, bn+dropout (repeat; default: the size's).")] = None,
    label_noise: Annotated[list[float] | None, typer.Option("--label-noise", help="Fractions of randomised labels (repeat; default: the size's).")] = None,
    seeds: Annotated[str | None, typer.Option(help="Seeds, e.g. 0-1 (default: the size's).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default: the size's).")] = None,
    engine: EngineConfig | None = None,
) -> None:
    """Reproduce Morcos et al. (2018): networks trained on partly random labels, cumulative ablation curves (random, selectivity and L1 orders; zero and mean), their area against the generalisation gap, and noise perturbation.

    Example: lesion reproduce morcos2018 --data-dir ../shared/datasets --out runs/morcos2018
    """
    from rich.console import Console

    from lesion.cli._common import parse_seeds
    from lesion.studies.morcos2018 import run_morcos2018

    result = run_morcos2018(
        out, size="small" if small else "default", dataset=dataset, data_dir=data_dir, architectures=architecture,
        fractions=label_noise, variants=variant, seeds=parse_seeds(seeds) if seeds else None, epochs=epochs, engine=engine,
        progress=True,
    )
    Console().print(f"wrote {result.summary_path} and {len(result.figures)} figures under {result.out / 'figures'}", highlight=False)
