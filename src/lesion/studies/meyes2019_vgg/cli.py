"""`lesion reproduce meyes2019-vgg`: the VGG study of Meyes et al. (2019) (registered by `lesion.cli`)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from lesion.studies._engine import EngineConfig


class LesionPoint(str, Enum):
    conv = "conv"
    block = "block"


def command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Study directory (created; rerun into it to resume).")],
    small: Annotated[bool, typer.Option("--small", help="Train a small-input VGG with batch norm on --data and run the whole study on it.")] = False,
    data: Annotated[str, typer.Option("--data", "-d", help="With --small: fashion-mnist or mnist.")] = "fashion-mnist",
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="With --small: where the IDX files are (default: $LESION_DATA_DIR).")] = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="Without --small: a torchvision-format state dict of --model (weights_only load).")] = None,
    train_dir: Annotated[Path | None, typer.Option("--train-dir", help="Without --small: ImageNet-style train folder (class sub-folders); used for recovery.")] = None,
    val_dir: Annotated[Path | None, typer.Option("--val-dir", help="Without --small: ImageNet-style validation folder, evaluated.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Default: vgg11_bn (--small) or vgg19_bn.")] = None,
    fraction: Annotated[list[float] | None, typer.Option("--fraction", help="Proportion of a layer's filters per group; repeat (default 0.01 0.05 0.1 0.25 0.5).")] = None,
    eval_samples: Annotated[int, typer.Option("--eval-samples", help="Seeded random subset of the evaluation split (0: all of it).")] = 1000,
    lesion_point: Annotated[LesionPoint, typer.Option("--lesion-point", help="conv: the conv output (the paper's method; BN's shift survives); block: after BN + ReLU (silent filter).")] = LesionPoint.conv,
    compare_fraction: Annotated[float, typer.Option("--compare-fraction", help="Fraction at which the other lesion point is measured too (0: not measured).")] = 0.10,
    epochs: Annotated[int, typer.Option(help="With --small: training epochs (SGD lr 0.01, momentum 0.9, batch 64).")] = 5,
    width_divisor: Annotated[int, typer.Option("--width-divisor", help="With --small: torchvision's conv widths divided by this.")] = 4,
    train_samples: Annotated[int | None, typer.Option("--train-samples", help="With --small: train on the first N images only.")] = None,
    recovery: Annotated[bool, typer.Option("--recovery/--no-recovery", help="Run both recovery protocols in the two most important layers.")] = True,
    recovery_samples: Annotated[int, typer.Option("--recovery-samples", help="Seeded random subset of the train split for recovery (0: all).")] = 5000,
    instances: Annotated[int, typer.Option(help="Instances of the first recovery protocol (25 % groups).")] = 5,
    recovery_epochs: Annotated[int, typer.Option("--recovery-epochs", help="Epochs per instance; minimum epochs per iteration.")] = 5,
    max_epochs: Annotated[int, typer.Option("--max-epochs", help="Epochs per iteration at most.")] = 20,
    max_iterations: Annotated[int, typer.Option("--max-iterations", help="Iterations of the iterative protocol.")] = 6,
    seed: Annotated[int, typer.Option(help="Seed of training, the subsets and the recovery draws.")] = 0,
    threads: Annotated[int, typer.Option(help="torch threads (0: torch's default).")] = 0,
    engine: EngineConfig | None = None,
) -> None:
    """Reproduce the VGG study of Meyes et al. (2019): filter-group lesions across depth, recovery training.

    Lesions groups of similar filters (1-50 %) in every conv layer, resolves top-1 / top-5 drops by
    depth (mean with lower / upper std, per class), retrains after lesions in the two most important
    layers (instances and iterative), and writes every figure (PNG + SVG) and summary.md.

    Examples: lesion reproduce meyes2019-vgg --small --data fashion-mnist --data-dir ../shared/datasets --out runs/vgg ;
    lesion reproduce meyes2019-vgg --weights vgg19_bn.pth --train-dir imagenet/train --val-dir imagenet/val --out runs/vgg19
    """
    from rich.console import Console

    from lesion.studies.meyes2019_vgg._stages import FRACTIONS, run_meyes2019_vgg

    result = run_meyes2019_vgg(
        out, small=small, data=data, data_dir=data_dir, weights=weights, train_dir=train_dir, val_dir=val_dir,
        model=model, fractions=tuple(fraction or FRACTIONS), eval_samples=eval_samples or None,
        lesion_point=lesion_point.value, compare_fraction=compare_fraction or None, epochs=epochs,
        width_divisor=width_divisor, train_samples=train_samples, recovery=recovery,
        recovery_samples=recovery_samples or None, instances=instances, recovery_epochs=recovery_epochs,
        max_epochs=max_epochs, max_iterations=max_iterations, seed=seed, threads=threads or None, engine=engine,
        progress=True,
    )
    console = Console()
    top = result.ranking.head(2)
    console.print(
        f"intact top-1 {100 * result.accuracy['top1']:.2f} %, top-5 {100 * result.accuracy['top5']:.2f} %; most important "
        "layers: " + ", ".join(f"{row.layer} (-{row.mean:.2f} pp top-1)" for row in top.itertuples()),
        highlight=False,
    )
    console.print(f"wrote {result.summary_path} and {len(result.figures)} figures under {result.out / 'figures'}")
