"""`lesion shapley`: Shapley values of units by sampled chains of cumulative lesions (or exactly)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lesion._errors import LesionError
from lesion.cli._app import app
from lesion.cli._common import (
    CheckpointOpt,
    DataDirOpt,
    DataOpt,
    Method,
    ModelArgOpt,
    ModelOpt,
    NormalizeOpt,
    console,
    local_engine,
    model_and_split,
    with_engine_options,
)
from lesion.studies._engine import EngineConfig


@app.command()
@with_engine_options
def shapley(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (created; rerun into it to add permutations).")],
    select: Annotated[str, typer.Option("--layers", "-l", help="The players' units: 'fc1', 'fc1:0-9', 'conv1;conv2'.")],
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    model_arg: ModelArgOpt = None,
    data: DataOpt = "digits",
    data_dir: DataDirOpt = None,
    normalize: NormalizeOpt = None,
    group: Annotated[str, typer.Option(help="unit: one player per unit; layer: one player per layer of --layers.")] = "unit",
    method: Annotated[Method, typer.Option(help="zero or mean (mean over the evaluation split).")] = Method.zero,
    permutations: Annotated[int, typer.Option(help="Budget: at most this many sampled orders (per-sample: draws) in all, resumed ones included.")] = 100,
    tolerance: Annotated[float | None, typer.Option(help="Stop once every standard error of overall top-1 (and of the loss) is below this, e.g. 0.002.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sequence of orders (part of the run's identity).")] = 0,
    sampling: Annotated[str, typer.Option(help="plain (independent orders), antithetic (each order and its reverse: usually a smaller standard error) or per-sample (each draw one order per sample: far smaller standard errors; one layer's units, no --pair).")] = "plain",
    exact: Annotated[bool, typer.Option(help="Enumerate all 2^n coalitions (n <= 16): exact values.")] = False,
    pair: Annotated[list[str] | None, typer.Option(help="Pair of players for the interaction index, e.g. 'fc1:3,fc1:7'. Repeatable.")] = None,
    loss: Annotated[bool, typer.Option(help="Also the cross-entropy (one full forward pass per coalition: slower).")] = False,
    top: Annotated[int, typer.Option(help="Players to print.")] = 20,
    limit: Annotated[int | None, typer.Option(help="Evaluate on the first N samples only.")] = None,
    engine: EngineConfig | None = None,
) -> None:
    """Shapley values of units for overall and per-class top-1 accuracy, with standard errors.

    Each sampled order of the players is a chain of cumulative lesions, evaluated by the batched
    engine; values are the average drop of the metric when a player is lesioned, over orders. Writes
    RUN/shapley.csv, RUN/interactions.csv (with --pair) and RUN/figures/shapley.png (Shapley ± SE
    beside leave-one-out).

    Example: lesion shapley -c runs/mlp/seed-000.pt -d mnist -l fc1 --tolerance 0.003 --pair fc1:3,fc1:7 -o runs/shap
    """
    import lesion
    from lesion.plots._shapley import plot_shapley

    engine = local_engine(engine, "shapley", "shapley evaluates its chains of coalitions in this process, many per pass")
    net, split = model_and_split(model, checkpoint, model_arg, data, data_dir, normalize, limit, engine.device)
    result = lesion.shapley(
        net, split, select, out, group=group, method=method.value, permutations=permutations, tolerance=tolerance,
        seed=seed, sampling=sampling, exact=exact, pairs=[_parse_pair(p) for p in pair or []], loss=loss,
        model_name=model or str(checkpoint), options=engine.options(), progress=True,
    )
    result.values.to_csv(out / "shapley.csv", index=False)
    how = "exact (every coalition)" if result.exact else f"{result.permutations} sampled orders"
    view = Table("player", "Shapley top-1 (pp)", "± SE", "leave-one-out (pp)", *(["Shapley loss"] if loss else []),
                 title=f"Shapley values, {how}: the drop in overall top-1 when the player is lesioned")
    losses = result.table("loss").set_index("player")["value"] if loss else None
    for _, row in result.table().head(top).iterrows():
        cells = [row["player"], f"{100 * row['value']:+.2f}", f"{100 * row['se']:.2f}", f"{100 * row['single']:+.2f}"]
        view.add_row(*cells, *([f"{losses[row['player']]:+.4f}"] if losses is not None else []))
    console.print(view)
    if pair:
        result.interactions.to_csv(out / "interactions.csv", index=False)
        for _, row in result.interactions[result.interactions["class"] == -1].iterrows():
            console.print(
                f"interaction {row['player_a']} × {row['player_b']} ({row['metric']}): {row['value']:+.4f} ± {row['se']:.4f} "
                f"(the pair alone: {row['pair']:+.4f}; > 0 synergy, < 0 redundancy)"
            )
    figure = plot_shapley(result.table(), out / "figures" / "shapley.png")
    console.print(f"wrote {out / 'shapley.csv'}, {figure}")


def _parse_pair(text: str) -> tuple[str, str]:
    """``"fc1:3,fc1:7"`` -> ("fc1:3", "fc1:7")."""
    parts = [p.strip() for p in text.replace(" ", "").split(",") if p.strip()]
    if len(parts) != 2 or not all(":" in p for p in parts):
        raise LesionError(f"--pair: expected two players like 'fc1:3,fc1:7', got {text!r}")
    return parts[0], parts[1]
