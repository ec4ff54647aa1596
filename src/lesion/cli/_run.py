"""Commands on one model and one run: layers, sweep, estimate, summary, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lesion.cli._app import app
from lesion.cli._common import (
    Autocast,
    CheckpointOpt,
    DataDirOpt,
    DataOpt,
    DeviceOpt,
    ExportFormat,
    Method,
    ModelArgOpt,
    ModelOpt,
    NormalizeOpt,
    PlanKind,
    console,
    model_and_split,
    parse_bytes,
    parse_kwargs,
    print_summary,
)


@app.command()
def layers(
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    model_arg: ModelArgOpt = None,
    include: Annotated[list[str] | None, typer.Option(help="Extra module names to list as layers (e.g. a ReLU after a conv).")] = None,
) -> None:
    """List every lesionable layer (Linear, Conv1d/2d/3d, and modules you --include) with its unit count.

    Example: lesion layers --model meyes2020-cnn
    """
    import lesion
    from lesion.models import load_model

    net = load_model(model, checkpoint, **parse_kwargs(model_arg))
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
    step: Annotated[int, typer.Option(help="--plan cumulative: units added per step (random orders, seeds 0-2).")] = 1,
) -> None:
    """Lesion the selected units (singly or in pairs), evaluate on the test split, store every outcome.

    Example: lesion sweep -m meyes2019-mlp -c net.pt -d mnist -l fc1 --plan pairs -o runs/pairs

    On a GPU: lesion sweep -m vgg19_bn -c vgg.pt -d folder ... --device cuda --autocast bf16 --channels-last
    """
    import lesion

    net, split = model_and_split(model, checkpoint, model_arg, data, data_dir, normalize, limit, device)
    make = {PlanKind.single: lesion.single, PlanKind.pairs: lesion.pairs}.get(plan)
    made = make(net, select, method.value) if make else lesion.cumulative(net, select, step=step, method=method.value)
    run = lesion.sweep(
        net, split, made, out, model_name=model or str(checkpoint),
        engine=engine, batch_size=batch_size, memory=parse_bytes(memory), progress=True,
        autocast=autocast.value if autocast else None, float32_check=float32_check,
        channels_last=channels_last, compile=compile,
    )
    print_summary(run)


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

    net, split = model_and_split(model, checkpoint, model_arg, data, data_dir, normalize, limit, device)
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

    print_summary(Run(run_dir), top)


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
