"""`lesion improve`: lesions that raise accuracy, chosen on the training split's validation part, tested once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from lesion._errors import LesionError
from lesion.cli._app import app
from lesion.cli._common import (
    DataDirOpt,
    DataOpt,
    Method,
    ModelArgOpt,
    ModelOpt,
    NormalizeOpt,
    check_fit,
    check_out_dir,
    console,
    load_data,
    load_net,
    local_engine,
    with_engine_options,
)
from lesion.studies._engine import EngineConfig

if TYPE_CHECKING:
    import pandas as pd

    from lesion.search import ImproveResult


@app.command()
@with_engine_options
def improve(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder: one sub-folder per checkpoint with runs validation/ and test/ (rerun to resume).")],
    select: Annotated[str, typer.Option("--layers", "-l", help="Candidate units: 'fc1;fc2', 'conv3'.")],
    checkpoint: Annotated[list[Path], typer.Option("--checkpoint", "-c", help="A trained network; repeat for a population.")],
    model: ModelOpt = None,
    model_arg: ModelArgOpt = None,
    data: DataOpt = "digits",
    data_dir: DataDirOpt = None,
    normalize: NormalizeOpt = None,
    target: Annotated[int | None, typer.Option(help="Maximise this class's top-1 (default: overall top-1).")] = None,
    tolerance: Annotated[float, typer.Option(help="With --target: the largest drop any other class may take (accuracy, e.g. 0.005).")] = 0.0,
    validation: Annotated[float, typer.Option(help="Fraction of the TRAINING split held out to choose on (seeded, stratified).")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the validation split.")] = 0,
    beam: Annotated[int, typer.Option(help="Lesions kept per greedy step (1: plain greedy).")] = 1,
    max_size: Annotated[int | None, typer.Option(help="At most this many units lesioned together.")] = None,
    group: Annotated[str, typer.Option(help="unit or layer: what one candidate is.")] = "unit",
    method: Annotated[Method, typer.Option(help="zero or mean.")] = Method.zero,
    engine: EngineConfig | None = None,
) -> None:
    """Greedy forward selection of units whose lesion raises accuracy — chosen on validation, tested once.

    The search sees only a seeded validation part of the dataset's TRAINING split (every candidate of
    a step in one batched sweep); the chosen lesion is then evaluated once on the test split and
    compared with the intact network per class (exact McNemar, Benjamini-Hochberg). Writes
    OUT/<checkpoint>/classes.csv and steps.csv, and OUT/improve.csv for all checkpoints.

    Example: lesion improve -c runs/mlp/seed-000.pt -c runs/mlp/seed-001.pt -d mnist -l "fc1;fc2" -o runs/improve
    """
    import pandas as pd

    import lesion

    engine = local_engine(engine, "improve", "improve's greedy steps each sweep a few lesions chosen from the previous step's outcomes, in this process")
    check_out_dir(out)
    dataset = load_data(data, data_dir, normalize)
    if dataset.train is None:
        raise LesionError(f"--data {data}: this dataset has no training split here, and improve may choose on training data only")
    stems = [c.stem for c in checkpoint]
    if len(set(stems)) != len(stems):
        raise LesionError(f"--checkpoint: file names must differ (each gets OUT/<name>), got {stems}")
    nets = {path: load_net(model, path, model_arg, device=engine.device) for path in checkpoint}
    for net in nets.values():
        check_fit(net, dataset.test)
    tables = []
    for path, net in nets.items():
        result = lesion.improve(
            net, dataset.train, dataset.test, select, out / path.stem, target=target, tolerance=tolerance,
            validation=validation, seed=seed, beam=beam, max_size=max_size, group=group, method=method.value,
            model_name=model or str(path), options=engine.options(), progress=True,
        )
        result.classes.to_csv(out / path.stem / "classes.csv", index=False)
        result.steps.to_csv(out / path.stem / "steps.csv", index=False)
        tables.append(result.classes.assign(network=path.stem, lesion=result.lesion.key, objective=result.objective))
        _print_network(path.stem, result)
    table = pd.concat(tables, ignore_index=True)
    table.to_csv(out / "improve.csv", index=False)
    _print_population(table)
    console.print(f"wrote {out / 'improve.csv'}")


def _print_network(name: str, result: ImproveResult) -> None:
    if not result.lesion.size:
        console.print(f"{name}: no lesion beat the intact network on validation ({result.objective}); test not evaluated")
        return
    view = Table("class", "val change (pp)", "test change (pp)", "lost", "gained", "McNemar p", "BH q", "held",
                 title=f"{name}: chosen {result.lesion.key} ({result.objective}, chosen on validation)")
    for _, row in result.classes.iterrows():
        held = "" if row["held"] is None or row["held"] != row["held"] else ("yes" if row["held"] else "no")
        q = "" if row["q"] != row["q"] else f"{row['q']:.3g}"
        view.add_row(row["class_name"], f"{100 * row['val_change']:+.2f}", f"{100 * row['test_change']:+.2f}",
                     str(row["lost"]), str(row["gained"]), f"{row['p']:.3g}", q, held)
    console.print(view)


def _print_population(df: pd.DataFrame) -> None:
    """How often the validation gains held on test, and whether any lesion helped a class hurting none."""
    per_class = df[(df["class"] >= 0) & df["held"].notna()]
    tested = df[df["test_change"].notna() & (df["class"] >= 0)]
    clean = [
        name for name, rows in tested.groupby("network")
        if (rows["test_change"] > 0).any() and not (rows["test_change"] < 0).any()
    ]
    significant = [
        name for name, rows in tested.groupby("network")
        if ((rows["gained"] > rows["lost"]) & (rows["q"] <= 0.05)).any() and not ((rows["lost"] > rows["gained"]) & (rows["q"] <= 0.05)).any()
    ]
    networks = df["network"].nunique()
    console.print(
        f"validation gains that held on test: {int(per_class['held'].astype(bool).sum())} of {len(per_class)} (class × network); "
        f"networks whose chosen lesion raised some class and lowered none on test: {len(clean)} of {networks}; "
        f"with a significant gain (BH q <= 0.05) and no significant loss: {len(significant)} of {networks}"
    )
