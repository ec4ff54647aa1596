"""The `lesion` command: thin wrappers that parse, call the library and print."""

from __future__ import annotations

import re
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from lesion._errors import LesionError

app = typer.Typer(
    help="Lesion (ablation) studies of PyTorch networks: silence units, measure what the network can no longer do.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Datasets on disk: where they are looked up, and fetching them.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err = Console(stderr=True)

ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="Zoo name (meyes2019-mlp, meyes2020-cnn, vgg19_bn, ...) or 'package.module:factory'. Default: the one recorded in --checkpoint."),
]
CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", "-c", help="Weights: a lesion checkpoint (from `lesion train`) or a state dict. Loaded with weights_only=True.")]
DataOpt = Annotated[str, typer.Option("--data", "-d", help="Dataset: digits (embedded), mnist, fashion-mnist, kmnist, cifar10, folder.")]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="Where dataset files are (default: $LESION_DATA_DIR).")]
NormalizeOpt = Annotated[Optional[str], typer.Option("--normalize", help="unit ([0,1]), half (N(0.5,0.5), the 2020 CNN's) or standard.")]


class PlanKind(str, Enum):
    single = "single"
    pairs = "pairs"


class Method(str, Enum):
    zero = "zero"
    mean = "mean"


class ExportFormat(str, Enum):
    csv = "csv"
    parquet = "parquet"


def parse_bytes(text: str | None) -> int | None:
    """``"2G"`` -> 2147483648; ``None`` stays None."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)i?[bB]?\s*", text)
    if not match:
        raise LesionError(f"--memory: expected a size like 512M or 2G, got {text!r}")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def main() -> None:
    """Console entry point: library errors print one clear line and exit 2."""
    try:
        app()
    except LesionError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


@app.command()
def layers(
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    include: Annotated[Optional[list[str]], typer.Option(help="Extra module names to list as layers (e.g. a ReLU after a conv).")] = None,
) -> None:
    """List every lesionable layer (Linear, Conv1d/2d/3d, and modules you --include) with its unit count.

    Example: lesion layers --model meyes2020-cnn
    """
    import lesion
    from lesion.models import load_model

    net = load_model(model, checkpoint)
    table = Table("layer", "type", "units", title=f"lesionable layers of {model or checkpoint}")
    for layer in lesion.layers(net, include=include or ()):
        table.add_row(layer.name, layer.kind, str(layer.n_units))
    console.print(table)


@app.command()
def sweep(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (created; rerun into it to resume).")],
    select: Annotated[str, typer.Option("--layers", "-l", help="Units to lesion: 'fc1', 'fc1:0-9', 'conv1:*;conv2:3,7', 'features.*'.")],
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    data: DataOpt = "digits",
    data_dir: DataDirOpt = None,
    normalize: NormalizeOpt = None,
    plan: Annotated[PlanKind, typer.Option(help="single: each unit alone; pairs: every pair within a layer.")] = PlanKind.single,
    method: Annotated[Method, typer.Option(help="zero: output 0 (= incoming weights and bias zeroed); mean: output replaced by its mean over the evaluation set.")] = Method.zero,
    engine: Annotated[str, typer.Option(help="auto, fast or reference (one full forward per lesion).")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Samples per forward pass.")] = 256,
    memory: Annotated[Optional[str], typer.Option(help="Memory budget of the fast engine, e.g. 2G (default: automatic).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Evaluate on the first N samples only.")] = None,
) -> None:
    """Lesion the selected units (singly or in pairs), evaluate on the test split, store every outcome.

    Example: lesion sweep -m meyes2019-mlp -c net.pt -d mnist -l fc1 --plan pairs -o runs/pairs
    """
    import lesion
    from lesion.data import load_dataset
    from lesion.models import load_model

    net = load_model(model, checkpoint)
    split = load_dataset(data, data_dir, normalize=normalize).test.head(limit)
    make = lesion.single if plan is PlanKind.single else lesion.pairs
    run = lesion.sweep(
        net, split, make(net, select, method.value), out, model_name=model or str(checkpoint),
        engine=engine, batch_size=batch_size, memory=parse_bytes(memory), progress=True,
    )
    _print_summary(run)


def _print_summary(run: "lesion.Run", top: int = 5) -> None:  # type: ignore[name-defined]  # noqa: F821
    from lesion.studies._summary import run_summary

    summary = run_summary(run, top=top)
    console.print(summary.text, highlight=False)


@app.command()
def summary(run_dir: Annotated[Path, typer.Argument(help="A run directory.")], top: int = 5) -> None:
    """Print a run's intact accuracy, its most damaging lesions and its largest class gain."""
    from lesion.store import Run

    _print_summary(Run(run_dir), top)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    format: Annotated[ExportFormat, typer.Option("--format", "-f")] = ExportFormat.csv,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: RUN/export).")] = None,
) -> None:
    """Write the run's tidy tables (lesions; metrics: one row per lesion × class × metric) as CSV or Parquet."""
    from lesion.store import Run

    for path in Run(run_dir).export(out or run_dir / "export", format.value):
        console.print(str(path))


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory for the demo study.")] = Path("runs/demo"),
    seed: Annotated[int, typer.Option(help="Seed of the network's initialisation and training order.")] = 0,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 30,
) -> None:
    """A complete small lesion study on scikit-learn's digits, no download, under a minute.

    Trains the Meyes 2019 MLP shape for 8x8 inputs (64-20-10-10, no biases, ReLU), lesions every
    hidden unit singly and every pair of the first hidden layer, prints a summary and writes figures.
    """
    from lesion.studies.demo import run_demo

    result = run_demo(out, seed=seed, epochs=epochs, progress=True)
    console.print(result.summary.text, highlight=False)
    for path in result.figures:
        console.print(f"wrote {path}")


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="mnist, fashion-mnist or kmnist.")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where to put the files (DIR/NAME/).")],
) -> None:
    """Download a dataset's raw IDX files from the official mirror and check their MD5 (needs a network)."""
    from lesion.data import fetch

    got = fetch(name, data_dir)
    console.print(f"{len(got)} file(s) downloaded" if got else "all files already present and verified")


@data_app.command("check")
def data_check(
    name: Annotated[str, typer.Argument(help="digits, mnist, fashion-mnist, kmnist, cifar10.")],
    data_dir: DataDirOpt = None,
) -> None:
    """Load a dataset (checking every file) and print its splits and classes."""
    from lesion.data import load_dataset

    ds = load_dataset(name, data_dir)
    for split in (ds.test, ds.train):
        if split is not None:
            console.print(f"{split.name}: {len(split)} samples, input {tuple(split.input_shape)}, {split.n_classes} classes")
    console.print("classes: " + ", ".join(ds.class_names))
