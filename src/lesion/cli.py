"""The `lesion` command: thin wrappers that parse, call the library and print."""

from __future__ import annotations

import ctypes
import os
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

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
reproduce_app = typer.Typer(
    help="Reproduce a paper's study in one command: train (or load), lesion, analyse, draw, summary.md.",
    no_args_is_help=True,
)
app.add_typer(reproduce_app, name="reproduce")
console = Console()
err = Console(stderr=True)

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Zoo name (meyes2019-mlp, meyes2020-cnn, vgg19_bn, ...) or 'package.module:factory'. Default: the one recorded in --checkpoint."),
]
CheckpointOpt = Annotated[Path | None, typer.Option("--checkpoint", "-c", help="Weights: a lesion checkpoint (from `lesion train`) or a state dict. Loaded with weights_only=True.")]
DataOpt = Annotated[str, typer.Option("--data", "-d", help="Dataset: digits (embedded), mnist, fashion-mnist, kmnist, cifar10, folder.")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Where dataset files are (default: $LESION_DATA_DIR).")]
ModelArgOpt = Annotated[
    list[str] | None,
    typer.Option("--model-arg", help="Model factory argument KEY=VALUE (JSON value), e.g. in_features=64. Repeatable."),
]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda or mps: where the model runs (batches follow it).")]
NormalizeOpt = Annotated[str | None, typer.Option("--normalize", help="unit ([0,1]), half (N(0.5,0.5), the 2020 CNN's) or standard.")]


class PlanKind(str, Enum):
    single = "single"
    pairs = "pairs"


class Method(str, Enum):
    zero = "zero"
    mean = "mean"


class Autocast(str, Enum):
    bf16 = "bf16"
    fp16 = "fp16"


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


def tune_malloc() -> bool:
    """Let glibc keep large freed blocks (what ``GLIBC_TUNABLES`` does in the Makefile); True if set.

    The engine allocates and frees tens of MB per chunk of lesions; by default glibc returns each such
    block to the system and the next one page-faults back in (7 % of the 2020 CNN sweep here).
    """
    if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def main() -> None:
    """Console entry point: library errors print one clear line and exit 2."""
    tune_malloc()
    try:
        app()
    except LesionError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


@app.command()
def layers(
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    model_arg: ModelArgOpt = None,
    include: Annotated[list[str] | None, typer.Option(help="Extra module names to list as layers (e.g. a ReLU after a conv).")] = None,
    data: Annotated[str | None, typer.Option("--data", "-d", help="Probe with two test samples of this dataset (default: an input made from the model's first layer).")] = None,
    data_dir: DataDirOpt = None,
    normalize: NormalizeOpt = None,
) -> None:
    """List every lesionable layer that runs (Linear, Conv1d/2d/3d, MultiheadAttention heads, and modules you --include) with its unit count.

    One probe forward keeps only the modules the model actually calls. Example: lesion layers --model meyes2020-cnn
    """
    import lesion
    from lesion._units import example_input
    from lesion.models import load_model

    net = load_model(model, checkpoint, **parse_kwargs(model_arg))
    example = example_input(net)
    if data is not None:
        from lesion.data import load_dataset

        example = next(load_dataset(data, data_dir, normalize=normalize, train=False).test.batches(2))[0]
    try:
        found = lesion.layers(net, include=include or (), example=example) if example is not None else None
    except LesionError:
        if data is not None:
            raise
        found = None
    table = Table("layer", "type", "units", title=f"lesionable layers of {model or checkpoint}")
    for layer in found if found is not None else lesion.layers(net, include=include or (), probe=False):
        table.add_row(layer.name, layer.kind, str(layer.n_units))
    console.print(table)
    if found is None:
        console.print(
            "Listed without a probe forward: no input that fits could be made from the model's first layer (a "
            "convolution takes any size); pass --data to probe. A lesion of a layer that does not run is refused when applied."
        )


def check_device(device: str) -> None:
    """Raise `LesionError` unless ``device`` (cpu, cuda, mps) is available here."""
    import torch

    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(device, False):
        usable = [name for name, ok in available.items() if ok]
        raise LesionError(f"--device: expected one of {usable} (available here), got {device!r}")


def _model_and_split(
    model: str | None,
    checkpoint: Path | None,
    model_arg: list[str] | None,
    data: str,
    data_dir: Path | None,
    normalize: str | None,
    limit: int | None,
    device: str = "cpu",
) -> tuple[Any, Any]:
    """The model in eval mode on ``device`` and the first ``limit`` samples of the dataset's test split."""
    from lesion.data import load_dataset
    from lesion.models import load_model

    check_device(device)
    net = load_model(model, checkpoint, **parse_kwargs(model_arg)).to(device)
    return net, load_dataset(data, data_dir, normalize=normalize, train=False).test.head(limit)


@app.command()
def sweep(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (created; rerun into it to resume).")],
    select: Annotated[str, typer.Option("--layers", "-l", help="Units to lesion: 'fc1', 'fc1:0-9', 'conv1:*;conv2:3,7', 'features.*'.")],
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    model_arg: ModelArgOpt = None,
    data: DataOpt = "digits",
    data_dir: DataDirOpt = None,
    normalize: NormalizeOpt = None,
    plan: Annotated[PlanKind, typer.Option(help="single: each unit alone; pairs: every pair within a layer.")] = PlanKind.single,
    method: Annotated[Method, typer.Option(help="zero: output 0 (= incoming weights and bias zeroed); mean: output replaced by its mean over the evaluation set.")] = Method.zero,
    engine: Annotated[str, typer.Option(help="auto, fast or reference (one full forward per lesion).")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Samples per forward pass.")] = 256,
    memory: Annotated[str | None, typer.Option(help="Memory budget of the fast engine, e.g. 2G (default: automatic).")] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate on the first N samples only.")] = None,
    device: DeviceOpt = "cpu",
    autocast: Annotated[
        Autocast | None,
        typer.Option(help="Evaluate in bf16 or fp16 (torch.autocast) instead of float32. The intact network and "
                     "--float32-check lesions are re-evaluated in float32 and the differing predictions counted."),
    ] = None,
    float32_check: Annotated[int, typer.Option(help="With --autocast: lesions (spread over the plan) re-evaluated in float32.")] = 16,
    channels_last: Annotated[bool, typer.Option(help="Fast engine: channels-last inputs (faster convolutions on GPUs).")] = False,
    compile: Annotated[bool, typer.Option(help="Fast engine: torch.compile the network after each cut (pays off on long GPU sweeps).")] = False,
) -> None:
    """Lesion the selected units (singly or in pairs), evaluate on the test split, store every outcome.

    Example: lesion sweep -m meyes2019-mlp -c net.pt -d mnist -l fc1 --plan pairs -o runs/pairs

    On a GPU: lesion sweep -m vgg19_bn -c vgg.pt -d folder ... --device cuda --autocast bf16 --channels-last
    """
    import lesion

    net, split = _model_and_split(model, checkpoint, model_arg, data, data_dir, normalize, limit, device)
    make = lesion.single if plan is PlanKind.single else lesion.pairs
    run = lesion.sweep(
        net, split, make(net, select, method.value), out, model_name=model or str(checkpoint),
        engine=engine, batch_size=batch_size, memory=parse_bytes(memory), progress=True,
        autocast=autocast.value if autocast else None, float32_check=float32_check,
        channels_last=channels_last, compile=compile,
    )
    _print_summary(run)


def _print_summary(run: lesion.Run, top: int = 5) -> None:  # type: ignore[name-defined]  # noqa: F821
    from lesion.studies._summary import run_summary

    summary = run_summary(run, top=top)
    console.print(summary.text, highlight=False, soft_wrap=True)


@app.command()
def estimate(
    select: Annotated[str, typer.Option("--layers", "-l", help="Layers whose units are estimated, e.g. 'fc1;fc2' (all units of each).")],
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    model_arg: ModelArgOpt = None,
    data: DataOpt = "digits",
    data_dir: DataDirOpt = None,
    normalize: NormalizeOpt = None,
    method: Annotated[Method, typer.Option(help="zero or mean (mean over the evaluation split).")] = Method.zero,
    batch_size: Annotated[int, typer.Option(help="Samples per forward/backward pass.")] = 256,
    limit: Annotated[int | None, typer.Option(help="Estimate on the first N samples only.")] = None,
    top: Annotated[int, typer.Option(help="Rows of the ranking to print.")] = 10,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the tidy estimate table here (.csv or .parquet).")] = None,
    device: DeviceOpt = "cpu",
) -> None:
    """First-order ESTIMATES of every single-unit lesion's effect, from one forward and backward pass.

    activation x gradient (zero) or (mean - activation) x gradient (mean), turned into estimated
    per-class accuracy changes and a ranking. Estimates, not measurements: confirm with `lesion sweep`.

    Example: lesion estimate -c runs/demo/model.pt -d digits -l "fc1;fc2"
    """
    import lesion

    net, split = _model_and_split(model, checkpoint, model_arg, data, data_dir, normalize, limit, device)
    names = list(lesion.select(lesion.layers(net), select))
    means = lesion.unit_means(net, names, split.batches(batch_size)) if method is Method.mean else None
    table = lesion.estimate(net, split, names, method=method.value, means=means, batch_size=batch_size)
    overall = table[table["class"] == "overall"].sort_values("rank")
    view = Table("rank", "lesion", "estimated top-1 change (pp)", title="first-order ESTIMATES (not measured)")
    for _, row in overall.head(top).iterrows():
        view.add_row(str(row["rank"]), row["lesion"], f"{100 * row['change']:+.2f}")
    console.print(view)
    if out is not None:
        table.to_parquet(out, index=False) if out.suffix == ".parquet" else table.to_csv(out, index=False)
        console.print(f"wrote {out}")


@app.command()
def summary(run_dir: Annotated[Path, typer.Argument(help="A run directory.")], top: int = 5) -> None:
    """Print a run's intact accuracy, its most damaging lesions and its largest class gain."""
    from lesion.store import Run

    _print_summary(Run(run_dir), top)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    format: Annotated[ExportFormat, typer.Option("--format", "-f")] = ExportFormat.csv,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: RUN/export).")] = None,
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
    console.print(result.summary.text, highlight=False, soft_wrap=True)
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


def parse_seeds(text: str) -> list[int]:
    """``"0-19"`` -> [0, ..., 19]; ``"0,3,5-6"`` -> [0, 3, 5, 6]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise LesionError(f"--seeds: expected e.g. '0-19' or '0,3,5', got {text!r}") from None
    return seeds


def parse_kwargs(items: list[str] | None) -> dict[str, Any]:
    """``["in_features=64", "hidden=[20,10]"]`` -> {"in_features": 64, "hidden": [20, 10]} (JSON values)."""
    import json

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LesionError(f"--model-arg: expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="Zoo name (meyes2019-mlp, meyes2020-cnn, vgg11_bn, ...) or 'package.module:factory'.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Population directory: one checkpoint per seed + population.json.")],
    data: DataOpt = "mnist",
    data_dir: DataDirOpt = None,
    normalize: NormalizeOpt = None,
    seeds: Annotated[str, typer.Option(help="Seeds, e.g. 0-19 (one network each).")] = "0",
    epochs: Annotated[int | None, typer.Option(help="Default: the paper's (100).")] = None,
    lr: Annotated[float | None, typer.Option(help="SGD learning rate. Default: the paper's.")] = None,
    momentum: Annotated[float | None, typer.Option(help="SGD momentum. Default: 0.9.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Default: 64.")] = None,
    model_arg: ModelArgOpt = None,
    threads: Annotated[int, typer.Option(help="torch threads (0: torch's default). Tiny networks train fastest on 1.")] = 0,
    workers: Annotated[int, typer.Option(help="Seeds trained at once, one process and one thread each (e.g. one per core).")] = 1,
    device: DeviceOpt = "cpu",
) -> None:
    """Train one network per seed with SGD + momentum on the cross-entropy loss (the papers' recipe).

    Each checkpoint holds the initial and trained weights, the config and per-epoch accuracies;
    the same seed gives the same bytes on CPU. Rerun into the same --out to resume.

    Example: lesion train meyes2019-mlp --data mnist --data-dir ../shared/datasets --seeds 0-19 --epochs 100 --out runs/pop
    """
    import contextlib

    from lesion._threads import torch_threads
    from lesion.data import load_dataset
    from lesion.train import PRESETS, train_population

    check_device(device)
    preset = PRESETS.get(model, {"epochs": 10, "lr": 0.01, "momentum": 0.9, "batch_size": 64})
    hparams: dict[str, Any] = {
        "epochs": epochs if epochs is not None else preset["epochs"],
        "lr": lr if lr is not None else preset["lr"],
        "momentum": momentum if momentum is not None else preset["momentum"],
        "batch_size": batch_size if batch_size is not None else preset["batch_size"],
    }
    dataset = load_dataset(data, data_dir, normalize=normalize)
    with torch_threads(threads) if threads else contextlib.nullcontext():
        paths = train_population(
            model, dataset, parse_seeds(seeds), out, model_kwargs=parse_kwargs(model_arg), progress=True,
            workers=workers, device=device, **hparams,
        )
    import json

    manifest = json.loads((out / "population.json").read_text())
    table = Table("seed", "file", "test top-1", title=f"{model} on {data}: {hparams}")
    for seed, info in manifest["seeds"].items():
        table.add_row(seed, info["file"], f"{100 * info['test_acc']:.2f} %")
    console.print(table)
    console.print(f"{len(paths)} checkpoint(s) in {out}")


def _register_studies() -> None:
    """The studies' commands live beside their studies (each imports only typer at import time)."""
    from lesion.studies import cli_meyes2019_mlp, cli_meyes2019_vgg, cli_meyes2020_cnn

    reproduce_app.command("meyes2019-mlp")(cli_meyes2019_mlp.command)
    reproduce_app.command("meyes2019-vgg")(cli_meyes2019_vgg.command)
    reproduce_app.command("meyes2020-cnn")(cli_meyes2020_cnn.command)
    app.command("recover")(cli_meyes2019_vgg.recover_command)


_register_studies()
