"""`lesion reproduce meyes2020-cnn`: the whole Meyes et al. (2020) study in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lesion.studies._engine import EngineConfig


def command(
    dataset: Annotated[str, typer.Option("--dataset", help="mnist, fashion-mnist or kmnist (KMNIST's train images are not available here: use --checkpoint).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Study directory (created; rerun into it to resume).")],
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where the IDX files are (default: $LESION_DATA_DIR).")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", "-c", help="A trained meyes2020-cnn; default: train one with the paper's settings.")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs (the paper: 100; SGD lr 0.001, momentum 0.9, batch 64).")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of training, the random draws, the embedded subset and UMAP.")] = 0,
    draws: Annotated[int, typer.Option(help="Random draws per layer and fraction.")] = 100,
    fraction: Annotated[list[float] | None, typer.Option("--fraction", help="Proportion of each layer lesioned; repeat for several (default 0.5).")] = None,
    embed_samples: Annotated[int, typer.Option("--embed-samples", help="Test images embedded by UMAP (horizontal and vertical reductions).")] = 2000,
    limit: Annotated[int | None, typer.Option(help="Evaluate on the first N test images only.")] = None,
    train_limit: Annotated[int | None, typer.Option("--train-limit", help="Train on the first N training images only.")] = None,
    width: Annotated[int, typer.Option(help="Channels per conv layer (the paper: 64).")] = 64,
    engine: EngineConfig | None = None,
) -> None:
    """Reproduce Meyes et al. (2020): layer lesions, AS / AES selectivity, activation-space embeddings.

    Trains the 2020 CNN (or loads --checkpoint), lesions 50 % of each layer in random draws and every unit alone, captures all 17,280 neurons' activations, embeds samples and neurons with UMAP, and writes every figure (PNG + SVG) and summary.md with the paper's numbers beside ours.

    Example: lesion reproduce meyes2020-cnn --dataset fashion-mnist --data-dir ../shared/datasets --out runs/fmnist
    """
    from rich.console import Console

    from lesion.studies.meyes2020_cnn._stages import run_meyes2020_cnn

    result = run_meyes2020_cnn(
        out, dataset=dataset, data_dir=data_dir, checkpoint=checkpoint, epochs=epochs, seed=seed, draws=draws,
        fractions=tuple(fraction or (0.5,)), embed_samples=embed_samples, limit=limit, train_limit=train_limit,
        width=width, engine=engine, progress=True,
    )
    console = Console()
    console.print(
        f"{result.dataset}: top-1 {100 * result.accuracy:.2f} %; Spearman error vs drop "
        f"r = {result.error_vs_drop.spearman_r:.2f} (p = {result.error_vs_drop.spearman_p:.2f}); "
        f"AS-count vs NH r = {result.as_vs_nh.pearson_r:.2f}, AES-count vs NH r = {result.aes_vs_nh.pearson_r:.2f}",
        highlight=False,
    )
    console.print(f"wrote {result.summary_path} and {len(result.figures)} figures under {result.out / 'figures'}")
