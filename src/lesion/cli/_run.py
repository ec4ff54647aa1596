"""Commands on one model and one run: layers, sweep, estimate, summary, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.table import Table

from lesion._errors import LesionError, closest
from lesion.cli._app import app
from lesion.cli._common import (
    MAX_SEED,
    Autocast,
    CheckpointOpt,
    DataDirOpt,
    DataOpt,
    DeviceOpt,
    ExportFormat,
    FractionBy,
    LimitOpt,
    Method,
    ModelArgOpt,
    ModelOpt,
    NormalizeOpt,
    PlanKind,
    RandomInitOpt,
    at_least,
    check_out_dir,
    check_out_file,
    console,
    err,
    load_data,
    load_net,
    model_and_split,
    number_in,
    parse_bytes,
    print_summary,
    test_split,
)


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

    net = load_net(model, checkpoint, model_arg, weights=False)
    example = example_input(net)
    if data is not None:
        example = next(load_data(data, data_dir, normalize, train=False).test.batches(2))[0]
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


@app.command()
def sweep(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (created; rerun into it to resume).")],
    select: Annotated[str, typer.Option("--layers", "-l", help="Units to lesion: 'fc1', 'fc1:0-9', 'conv1:*;conv2:3,7', 'features.*'.")],
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    model_arg: ModelArgOpt = None,
    random_init: RandomInitOpt = False,
    data: DataOpt = "digits",
    data_dir: DataDirOpt = None,
    normalize: NormalizeOpt = None,
    plan: Annotated[PlanKind, typer.Option(help="single: each unit alone; pairs: every pair within a layer; fraction: groups of a proportion of each layer's units (--fractions, --by).")] = PlanKind.single,
    fractions: Annotated[str | None, typer.Option(help="--plan fraction: proportions of each layer's units, e.g. 0.1,0.25,0.5.")] = None,
    by: Annotated[FractionBy, typer.Option(help="--plan fraction: random groups (--draws, --seed) or similar-weight groups (Meyes et al. 2019).")] = FractionBy.random,
    draws: Annotated[int, typer.Option(help="--plan fraction --by random: groups drawn per layer and proportion.")] = 100,
    seed: Annotated[int, typer.Option(help="--plan fraction --by random: seed of the draws.")] = 0,
    method: Annotated[Method, typer.Option(help="zero: output 0 (= incoming weights and bias zeroed); mean: output replaced by its mean over the evaluation set.")] = Method.zero,
    extend: Annotated[bool, typer.Option("--extend", help="Add this plan (or selection) to an existing run that holds another one, instead of refusing.")] = False,
    engine: Annotated[str, typer.Option(help="auto, fast or reference (one full forward per lesion).")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Samples per forward pass.")] = 256,
    memory: Annotated[str | None, typer.Option(help="Memory budget of the fast engine, e.g. 2G (default: automatic).")] = None,
    limit: LimitOpt = None,
    device: DeviceOpt = "cpu",
    autocast: Annotated[
        Autocast | None,
        typer.Option(help="Evaluate in bf16 or fp16 (torch.autocast) instead of float32. The intact network and "
                     "--float32-check lesions are re-evaluated in float32 and the differing predictions counted."),
    ] = None,
    float32_check: Annotated[int, typer.Option(help="With --autocast: lesions (spread over the plan) re-evaluated in float32.")] = 16,
    channels_last: Annotated[bool, typer.Option(help="Fast engine: channels-last inputs (faster convolutions on GPUs).")] = False,
    compile: Annotated[bool, typer.Option(help="Fast engine: torch.compile the network after each cut (pays off on long GPU sweeps).")] = False,
    backend: Annotated[str, typer.Option(help="local, or ray: shards on a Ray cluster (pip install 'lesion[ray]').")] = "local",
    address: Annotated[str | None, typer.Option(help="With --backend ray: the cluster's address (ray start --head prints it; 'auto': this node's).")] = None,
    step: Annotated[int, typer.Option(help="--plan cumulative: units added per step (random orders, seeds 0-2).")] = 1,
) -> None:
    """Lesion the selected units (singly or in pairs), evaluate on the test split, store every outcome.

    Example: lesion sweep -m meyes2019-mlp -c net.pt -d mnist -l fc1 --plan pairs -o runs/pairs

    On a GPU: lesion sweep -m vgg19_bn -c vgg.pt -d folder ... --device cuda --autocast bf16 --channels-last

    A rerun into the same --out resumes; one process at a time writes a run (a second one is refused).

    On a Ray cluster: lesion sweep ... --backend ray --address HEAD:6379
    """
    import lesion
    from lesion.engine import EngineOptions
    from lesion.store._db import check_run_dir

    options = _engine_options(
        engine=engine, device=device, batch_size=batch_size, memory=parse_bytes(memory),
        autocast=autocast.value if autocast else None, float32_check=float32_check,
        channels_last=channels_last, compile=compile, build=EngineOptions,
    )
    from lesion._sweep import BACKENDS

    if backend not in BACKENDS:
        raise LesionError(f"--backend: expected one of {BACKENDS}, got {backend!r}{closest(backend, BACKENDS)}")
    if address is not None and backend != "ray":
        raise LesionError(f"--address: for --backend ray only; got --address {address!r} with --backend {backend}")
    at_least("--limit", limit, 1)
    at_least("--step", step, 1)
    proportions = _fraction_options(plan, fractions, select, draws, seed)
    check_run_dir(out)
    net = load_net(model, checkpoint, model_arg, random_init=random_init, device=device)
    if plan is PlanKind.fraction:
        lesions = lesion.fraction(net, select, proportions, by.value, seed=seed, draws=draws, method=method.value, name="fraction")
    elif plan is PlanKind.cumulative:
        lesions = lesion.cumulative(net, select, step=step, method=method.value)
    else:
        make = lesion.single if plan is PlanKind.single else lesion.pairs
        lesions = make(net, select, method.value)
    split = test_split(net, data, data_dir, normalize, limit)
    try:
        run = lesion.sweep(
            net, split, lesions, out, model_name=model or (checkpoint.name if checkpoint else "custom"),
            options=options, extend=extend, progress=True, backend=backend, address=address,
        )
    except KeyboardInterrupt:
        interrupted(out)
    print_summary(run)


#: More random groups than this per layer and proportion is a typo, not a study.
MAX_DRAWS = 100_000


def _fraction_options(plan: PlanKind, fractions: str | None, select: str, draws: int, seed: int) -> list[float]:
    """The proportions of ``--plan fraction`` (checked with its other options); [] for other plans."""
    if plan is not PlanKind.fraction:
        if fractions is not None:
            raise LesionError(f"--fractions: only for --plan fraction (this is --plan {plan.value})")
        return []
    if fractions is None:
        raise LesionError("--fractions: --plan fraction needs proportions, e.g. --fractions 0.1,0.25,0.5")
    if ":" in select:
        raise LesionError(f"--layers: --plan fraction takes whole layers (e.g. 'fc1;fc2' or 'features.*'), got {select!r}")
    try:
        proportions = [float(part) for part in fractions.split(",")]
    except ValueError:
        raise LesionError(f"--fractions: expected proportions in (0, 1] like 0.1,0.25, got {fractions!r}") from None
    for value in proportions:
        number_in("--fractions", value, 0, 1, low_open=True)
    at_least("--draws", draws, 1, MAX_DRAWS)
    at_least("--seed", seed, 0, MAX_SEED)
    return proportions


def _engine_options(build: Any, **settings: Any) -> Any:
    """``EngineOptions(**settings)``, with a setting's error named as its command-line option."""
    try:
        return build(**settings)
    except LesionError as exc:
        text = str(exc)
        name = text.split(":", 1)[0]
        if name.startswith("--"):
            raise
        raise LesionError(f"--{name.replace('_', '-')}:{text.split(':', 1)[1]}") from None


def interrupted(out: Path) -> NoReturn:
    """After Ctrl-C: say what is stored and how to resume, exit 130."""
    from lesion.store import Run

    try:
        lesions = Run(out).lesions()
        stored = f"{int(lesions['done'].sum())} of {len(lesions)} lesions stored in {out}; "
    except LesionError:
        stored = ""
    err.print(f"interrupted: {stored}rerun the same command to resume.", highlight=False, soft_wrap=True)
    raise typer.Exit(130)


@app.command()
def estimate(
    select: Annotated[str, typer.Option("--layers", "-l", help="Units to estimate: 'fc1' (all its units), 'fc1:0-9;fc2'.")],
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    model_arg: ModelArgOpt = None,
    random_init: RandomInitOpt = False,
    data: DataOpt = "digits",
    data_dir: DataDirOpt = None,
    normalize: NormalizeOpt = None,
    method: Annotated[Method, typer.Option(help="zero or mean (mean over the evaluation split).")] = Method.zero,
    batch_size: Annotated[int, typer.Option(help="Samples per forward/backward pass.")] = 256,
    limit: LimitOpt = None,
    top: Annotated[int, typer.Option(help="Rows of the ranking to print (>= 1).")] = 10,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the tidy estimate table here (.csv or .parquet).")] = None,
    device: DeviceOpt = "cpu",
) -> None:
    """First-order ESTIMATES of every selected single-unit lesion's effect, from one forward and backward pass.

    activation x gradient (zero) or (mean - activation) x gradient (mean), turned into estimated
    per-class accuracy changes and a ranking. Estimates, not measurements: confirm with `lesion sweep`.

    Example: lesion estimate -c runs/demo/model.pt -d digits -l "fc1;fc2"
    """
    import lesion

    at_least("--batch-size", batch_size, 1)
    at_least("--limit", limit, 1)
    at_least("--top", top, 1)
    if out is not None:
        check_out_file(out, (".csv", ".parquet"))
    net, split = model_and_split(model, checkpoint, model_arg, data, data_dir, normalize, limit, device, random_init)
    chosen = lesion.select(lesion.layers(net), select)
    means = lesion.unit_means(net, list(chosen), split.batches(batch_size)) if method is Method.mean else None
    table = lesion.estimate(net, split, list(chosen), method=method.value, means=means, batch_size=batch_size)
    wanted = {lesion.Lesion(((name, (unit,)),), method.value).key for name, units in chosen.items() for unit in units}
    table = table[table["lesion"].isin(wanted)].reset_index(drop=True)
    overall = table[table["class"] == "overall"].set_index("lesion")["change"]
    table["rank"] = table["lesion"].map(overall.rank(method="min").astype(int))
    overall_rows = table[table["class"] == "overall"].sort_values("rank", kind="stable")
    view = Table("rank", "lesion", "estimated top-1 change (pp)", title=f"first-order ESTIMATES of {len(overall_rows)} lesions (not measured)")
    for _, row in overall_rows.head(top).iterrows():
        view.add_row(str(row["rank"]), row["lesion"], f"{100 * row['change']:+.2f}")
    console.print(view)
    if out is not None:
        table.to_parquet(out, index=False) if out.suffix == ".parquet" else table.to_csv(out, index=False)
        console.print(f"wrote {out}")


@app.command()
def summary(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    top: Annotated[int, typer.Option(help="How many of the most damaging lesions to list (>= 1).")] = 5,
) -> None:
    """Print a run's intact accuracy, its most damaging lesions and its largest class gain (or how much of it is stored)."""
    from lesion.store import Run

    at_least("--top", top, 1)
    run = Run(run_dir)
    try:
        print_summary(run, top)
    finally:
        run.close()


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    format: Annotated[ExportFormat, typer.Option("--format", "-f")] = ExportFormat.csv,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: RUN/export).")] = None,
) -> None:
    """Write the run's tidy tables (lesions; metrics: one row per lesion × class × metric) as CSV or Parquet."""
    from lesion.store import Run

    folder = out or run_dir / "export"
    check_out_dir(folder)
    run = Run(run_dir)
    try:
        for path in run.export(folder, format.value):
            console.print(str(path))
    finally:
        run.close()
