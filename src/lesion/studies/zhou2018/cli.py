"""`lesion reproduce zhou2018`: class-specific importance, training variants and random rotation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lesion.studies._engine import EngineConfig


def command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Study directory (created; rerun into it to resume).")],
    dataset: Annotated[str, typer.Option("--dataset", help="fashion-mnist, mnist or digits.")] = "fashion-mnist",
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where the IDX files are (default: $LESION_DATA_DIR).")] = None,
    small: Annotated[bool, typer.Option("--small", help="The small size (tests, smoke runs) instead of the default.")] = False,
    variant: Annotated[list[str] | None, typer.Option("--variant", help="plain, bn, dropout, bn+dropout (repeat; default all).")] = None,
    architecture: Annotated[list[str] | None, typer.Option(
        "--architecture", help="cnn (the 2020 CNN), vgg (a small VGG-11) (repeat; default: the size's, cnn only on digits).")] = None,
    seeds: Annotated[str | None, typer.Option(help="Seeds, e.g. 0-2 (default: the size's).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default: the size's).")] = None,
    engine: EngineConfig | None = None,
) -> None:
    """Reproduce Zhou et al. (2018): single-unit lesions of the 2020 CNN and a small VGG-11 in four training variants, class selectivity and L1 as predictors of overall and class-specific importance, and a random rotation of the representation.

    Example: lesion reproduce zhou2018 --dataset fashion-mnist --data-dir ../shared/datasets --out runs/zhou2018
    """
    from rich.console import Console

    from lesion.cli._common import parse_seeds
    from lesion.studies._variants import VARIANTS
    from lesion.studies.zhou2018 import run_zhou2018

    result = run_zhou2018(
        out, dataset=dataset, data_dir=data_dir, size="small" if small else "default", variants=tuple(variant or VARIANTS),
        architectures=tuple(architecture) if architecture else None,
        seeds=parse_seeds(seeds) if seeds else None, epochs=epochs, engine=engine, progress=True,
    )
    Console().print(f"wrote {result.summary_path} and {len(result.figures)} figures under {result.out / 'figures'}", highlight=False)
