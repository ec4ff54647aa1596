"""`lesion train` and `lesion recover`: populations of networks, and recovery with a lesion in place."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lesion._errors import LesionError, closest
from lesion.cli._app import app
from lesion.cli._common import (
    MAX_SEED,
    DataDirOpt,
    DataOpt,
    DeviceOpt,
    ModelArgOpt,
    NormalizeOpt,
    at_least,
    build_net,
    check_device,
    check_fit,
    check_out_dir,
    console,
    load_data,
    load_net,
    number_in,
    parse_kwargs,
    parse_seeds,
)

#: More torch threads or worker processes than this is a typo, not a machine.
MAX_THREADS = 1024
MAX_WORKERS = 256
#: Recovery instances or iterations: each retrains the network, so more is a typo.
MAX_RUNS = 10_000


def check_sgd_options(*, epochs: int, lr: float, momentum: float, batch_size: int) -> None:
    """Raise `LesionError`, naming the option, unless the SGD settings are usable."""
    at_least("--epochs", epochs, 1)
    at_least("--batch-size", batch_size, 1)
    number_in("--lr", lr, 0, float("inf"), low_open=True)
    number_in("--momentum", momentum, 0, 1, high_open=True)


class Protocol(str, Enum):
    instances = "instances"
    iterative = "iterative"


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
    optimizer: Annotated[str, typer.Option(help="sgd (with --momentum; 0 for plain SGD) or adam (torch's default betas).")] = "sgd",
    batch_norm: Annotated[bool, typer.Option("--batch-norm", help="Variant: batch norm after each hidden layer (meyes2019-mlp, meyes2020-cnn).")] = False,
    dropout: Annotated[float, typer.Option(help="Variant: dropout probability after each hidden fc layer (meyes2019-mlp, meyes2020-cnn).")] = 0.0,
    label_noise: Annotated[float, typer.Option(help="Variant: fraction of training labels replaced by uniformly random ones (Morcos et al. 2018).")] = 0.0,
    label_noise_seed: Annotated[int, typer.Option(help="Seed of the label corruption (the same for every network).")] = 0,
) -> None:
    """Train one network per seed with SGD + momentum on the cross-entropy loss (the papers' recipe) or a variant.

    Variants (--optimizer, --lr, --batch-norm, --dropout, --label-noise) are stored in each
    checkpoint's config, so runs made from it differ in identity.

    Each checkpoint holds the initial and trained weights, the config and per-epoch accuracies;
    the same seed gives the same bytes on CPU. Rerun into the same --out to resume.

    Example: lesion train meyes2019-mlp --data mnist --data-dir ../shared/datasets --seeds 0-19 --epochs 100 --out runs/pop
    """
    import contextlib

    from lesion._threads import torch_threads
    from lesion.store._lock import DirLock
    from lesion.train import OPTIMIZERS, PRESETS, train_population

    check_device(device)
    seed_list = parse_seeds(seeds)
    at_least("--threads", threads, 0, MAX_THREADS)
    at_least("--workers", workers, 1, MAX_WORKERS)
    preset = PRESETS.get(model, {"epochs": 10, "lr": 0.01, "momentum": 0.9, "batch_size": 64})
    default_momentum = 0.0 if optimizer == "adam" else preset["momentum"]
    hparams: dict[str, Any] = {
        "epochs": epochs if epochs is not None else preset["epochs"],
        "lr": lr if lr is not None else preset["lr"],
        "momentum": momentum if momentum is not None else default_momentum,
        "batch_size": batch_size if batch_size is not None else preset["batch_size"],
    }
    check_sgd_options(**hparams)
    if optimizer not in OPTIMIZERS:
        raise LesionError(f"--optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}{closest(optimizer, OPTIMIZERS)}")
    number_in("--dropout", dropout, 0, 1, high_open=True)
    number_in("--label-noise", label_noise, 0, 1)
    at_least("--label-noise-seed", label_noise_seed, 0, MAX_SEED)
    check_out_dir(out)
    variants: dict[str, Any] = {"optimizer": optimizer, "label_noise": label_noise, "label_noise_seed": label_noise_seed}
    kwargs = parse_kwargs(model_arg)
    if batch_norm:
        kwargs["batch_norm"] = True
    if dropout:
        kwargs["dropout"] = dropout
    dataset = load_data(data, data_dir, normalize)
    if dataset.train is None:
        raise LesionError(f"--data: {data!r} has no train split here (its train files are missing); training needs one")
    check_fit(build_net(model, kwargs), dataset.test)
    with DirLock(out, "population directory"), torch_threads(threads) if threads else contextlib.nullcontext():
        paths = train_population(
            model, dataset, seed_list, out, model_kwargs=kwargs, progress=True,
            workers=workers, device=device, **hparams, **variants,
        )
    import json

    manifest = json.loads((out / "population.json").read_text())
    table = Table("seed", "file", "test top-1", title=f"{model} on {data}: {hparams}")
    for seed, info in manifest["seeds"].items():
        table.add_row(seed, info["file"], f"{100 * info['test_acc']:.2f} %")
    console.print(table)
    console.print(f"{len(paths)} checkpoint(s) in {out}")


@app.command("recover")
def recover(
    layer: Annotated[str, typer.Option("--layer", "-l", help="The lesioned conv layer, e.g. features.33 (its output is lesioned).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for recovery.json, history.csv, classes.csv, the figure (rerun to resume).")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Zoo name (vgg19_bn, ...); default: the one recorded in --checkpoint.")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", "-c", help="Weights: a lesion checkpoint or a state dict (weights_only load).")] = None,
    data: Annotated[str, typer.Option("--data", "-d", help="mnist, fashion-mnist, cifar10 or folder (with --train-dir / --val-dir).")] = "fashion-mnist",
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where dataset files are (default: $LESION_DATA_DIR).")] = None,
    train_dir: Annotated[Path | None, typer.Option("--train-dir", help="For --data folder: the train folder.")] = None,
    val_dir: Annotated[Path | None, typer.Option("--val-dir", help="For --data folder: the evaluation folder.")] = None,
    normalize: Annotated[str | None, typer.Option("--normalize", help="unit, half or standard (as the network was trained).")] = None,
    model_arg: Annotated[list[str] | None, typer.Option("--model-arg", help="Model factory argument KEY=VALUE (JSON value). Repeatable.")] = None,
    protocol: Annotated[Protocol, typer.Option(help="instances: several 25 % groups, each retrained; iterative: 25 % with replacement, repeated.")] = Protocol.instances,
    fraction: Annotated[float, typer.Option(help="Proportion of the layer's filters per instance / iteration.")] = 0.25,
    instances: Annotated[int, typer.Option(help="instances: how many groups.")] = 5,
    epochs: Annotated[int, typer.Option(help="instances: epochs each; iterative: minimum epochs per iteration.")] = 5,
    patience: Annotated[int, typer.Option(help="iterative: epochs over which top-5 must improve.")] = 2,
    min_delta: Annotated[float, typer.Option("--min-delta", help="iterative: the improvement, in pp of top-5.")] = 0.05,
    max_epochs: Annotated[int, typer.Option("--max-epochs", help="iterative: epochs per iteration at most.")] = 20,
    max_iterations: Annotated[int, typer.Option("--max-iterations", help="iterative: iterations.")] = 6,
    lr: Annotated[float, typer.Option(help="SGD learning rate.")] = 0.001,
    momentum: Annotated[float, typer.Option(help="SGD momentum.")] = 0.9,
    batch_size: Annotated[int, typer.Option("--batch-size", help="SGD batch size.")] = 64,
    eval_samples: Annotated[int, typer.Option("--eval-samples", help="Seeded random subset of the evaluation split (0: all).")] = 0,
    train_samples: Annotated[int, typer.Option("--train-samples", help="Seeded random subset of the train split (0: all).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the draws, the subsets and the training order.")] = 0,
    threads: Annotated[int, typer.Option(help="torch threads (0: torch's default).")] = 0,
) -> None:
    """Retrain a network with a lesion in one layer kept in place (Meyes et al. 2019, §3.3).

    Every layer before the lesioned one is frozen (batch-norm statistics included); the rest trains
    on the train split; top-1 / top-5, overall and per class, are stored after every epoch.

    Example: lesion recover -m vgg19_bn -c vgg19_bn.pth -d folder --train-dir train --val-dir val -l features.33 --protocol iterative -o runs/rec
    """
    import contextlib

    import lesion
    from lesion._threads import torch_threads
    from lesion.data import Dataset, load_dataset
    from lesion.plots import recovery_figure, save_figure
    from lesion.store._lock import DirLock
    from lesion.train import run_recovery, seeded_subset

    number_in("--fraction", fraction, 0, 1, low_open=True)
    for option, value, low in (
        ("--epochs", epochs, 1), ("--patience", patience, 1), ("--batch-size", batch_size, 1),
        ("--max-epochs", max_epochs, epochs if protocol is Protocol.iterative else 1),
        ("--eval-samples", eval_samples, 0), ("--train-samples", train_samples, 0),
    ):
        at_least(option, value, low)
    at_least("--instances", instances, 1, MAX_RUNS)
    at_least("--max-iterations", max_iterations, 1, MAX_RUNS)
    at_least("--seed", seed, 0, MAX_SEED)
    at_least("--threads", threads, 0, MAX_THREADS)
    number_in("--min-delta", min_delta, 0, float("inf"))
    check_sgd_options(epochs=epochs, lr=lr, momentum=momentum, batch_size=batch_size)
    check_out_dir(out)
    net = load_net(model, checkpoint, model_arg)
    if data == "folder":
        dataset = load_dataset("folder", train_dir=train_dir, val_dir=val_dir)
    else:
        dataset = load_data(data, data_dir, normalize)
    if dataset.train is None:
        raise LesionError(f"--data: {data!r} has no train split here; recovery training needs one")
    check_fit(net, dataset.test)
    chosen = {item.name for item in lesion.layers(net)}
    if layer not in chosen:
        raise LesionError(f"--layer: expected a lesionable layer of the model, got {layer!r}{closest(layer, chosen)}")
    train = seeded_subset(dataset.train, train_samples or None, seed)
    dataset = Dataset(dataset.name, seeded_subset(dataset.test, eval_samples or None, seed), train)
    with DirLock(out, "recovery folder"), torch_threads(threads) if threads else contextlib.nullcontext():
        result = run_recovery(
            net, dataset, layer, protocol.value, out, fraction=fraction, instances=instances, epochs=epochs,
            min_epochs=epochs, patience=patience, min_delta=min_delta, max_epochs=max_epochs,
            max_iterations=max_iterations, seed=seed, lr=lr, momentum=momentum, batch_size=batch_size, progress=True,
        )
    figures = save_figure(recovery_figure([result], protocol.value), out / f"recovery-{protocol.value}", ("png", "svg"))
    last = result.history.groupby("run").tail(1)
    console.print(
        f"{layer}, {protocol.value}: intact top-5 {100 * result.baseline['top5']:.2f} %, after recovery "
        f"{100 * last['top5'].mean():.2f} % (mean of {len(last)} run(s)); wrote {result.folder / 'history.csv'} and "
        + ", ".join(str(p) for p in figures),
        highlight=False,
    )
