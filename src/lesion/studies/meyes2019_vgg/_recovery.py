"""Recovery training of the VGG study (Meyes et al. 2019, §3.3 and §4.4, Figures 18 and 19).

Both protocols come from :mod:`lesion.train`: the lesion stays in place, every module before
the lesioned layer is frozen (batch-norm statistics included) and the rest trains on the train
split; top-1 / top-5, overall and per class, are measured after every epoch.

- ``instances``: several instances, each a different random group of ``fraction`` of the
  layer's filters, each retrained for ``epochs`` epochs from the same trained network.
- ``iterative``: lesion a random ``fraction`` (with replacement across iterations), retrain
  until at least ``min_epochs`` epochs and top-5 improved by less than ``min_delta`` pp over the
  last ``patience`` epochs, repeat; the dead fraction grows slowly.

:func:`run_recovery` writes ``recovery.json`` (config, intact baseline, every history),
``history.csv`` (one row per run and epoch) and ``classes.csv`` (one row per run, epoch and
class) into its folder; rerunning into it reads them back (the iterative protocol also resumes
from its per-iteration checkpoints in ``checkpoints/``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from lesion._errors import LesionError, closest
from lesion._lesion import INTACT
from lesion._units import layers
from lesion.data import Dataset

PROTOCOLS = ("instances", "iterative")
RECOVERY_FILE = "recovery.json"


@dataclass(frozen=True)
class RecoveryResult:
    """Recovery training of one layer under one protocol.

    Attributes
    ----------
    layer : str
    protocol : {"instances", "iterative"}
    baseline : dict
        The intact network's ``top1``, ``top5`` (fractions), ``class_top1``, ``class_top5``.
    history : DataFrame
        One row per (run, epoch): ``layer``, ``protocol``, ``run`` (instance 0, 1, … or
        iteration 1, 2, …), ``epoch`` (0: just lesioned), ``step`` (epochs trained so far in
        the run sequence: the epoch for instances, cumulative over iterations), ``n_dead``,
        ``dead_fraction``, ``top1``, ``top5``, ``loss``, ``train_acc``, ``seconds``.
    classes : DataFrame
        One row per (run, epoch, class): ``layer``, ``protocol``, ``run``, ``epoch``, ``class``,
        ``top1``, ``top5``.
    folder : Path
        Where ``recovery.json``, ``history.csv`` and ``classes.csv`` are.
    """

    layer: str
    protocol: str
    baseline: dict[str, Any]
    history: pd.DataFrame
    classes: pd.DataFrame
    folder: Path


def run_recovery(
    model: nn.Module,
    dataset: Dataset,
    layer: str,
    protocol: str,
    out: str | Path,
    *,
    fraction: float = 0.25,
    instances: int = 5,
    epochs: int = 5,
    min_epochs: int = 5,
    patience: int = 2,
    min_delta: float = 0.05,
    max_epochs: int = 20,
    max_iterations: int = 6,
    seed: int = 0,
    lr: float = 0.001,
    momentum: float = 0.9,
    batch_size: int = 64,
    progress: bool = False,
) -> RecoveryResult:
    """Recover ``model`` from lesions of ``layer`` under one protocol; write the histories to ``out``.

    Parameters
    ----------
    model : nn.Module
        Never modified.
    dataset : Dataset
        Trains on ``train``, measures on ``test``.
    layer : str
        A lesionable layer (the conv ``features.N``: the paper's lesion point).
    protocol : {"instances", "iterative"}
    out : path
        Folder for ``recovery.json``, ``history.csv``, ``classes.csv`` (and ``checkpoints/``).
    fraction : float, default=0.25
        Proportion of the layer's filters lesioned per instance / iteration.
    instances, epochs
        For ``instances``: how many groups, and epochs each.
    min_epochs, patience, min_delta, max_epochs, max_iterations
        For ``iterative``: the stopping rule (``min_delta`` in pp of top-5) and limits.
    seed : int, default=0
    lr, momentum, batch_size
        SGD of the recovery training (the paper does not state them; 0.001, 0.9, 64 are ours).
    progress : bool, default=False

    Returns
    -------
    RecoveryResult
    """
    if protocol not in PROTOCOLS:
        raise LesionError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}{closest(str(protocol), PROTOCOLS)}")
    n_units = _n_units(model, layer)
    sgd = {"lr": lr, "momentum": momentum, "batch_size": batch_size, "seed": seed, "progress": progress}
    config = {
        "layer": layer, "protocol": protocol, "fraction": fraction, "seed": seed, "lr": lr, "momentum": momentum,
        "batch_size": batch_size, "dataset": dataset.name, "train_size": len(dataset.train) if dataset.train else 0,
        "test_size": len(dataset.test),
        **({"instances": instances, "epochs": epochs} if protocol == "instances" else {
            "min_epochs": min_epochs, "patience": patience, "min_delta": min_delta,
            "max_epochs": max_epochs, "max_iterations": max_iterations,
        }),
    }
    folder = Path(out)
    record = _read_record(folder, config)
    if record is None:
        if protocol == "instances":
            record = _instances(model, dataset, layer, n_units, fraction, instances, epochs, sgd)
        else:
            record = _iterative(
                model, dataset, layer, folder, fraction, min_epochs, patience, min_delta, max_epochs, max_iterations, sgd
            )
        record["config"] = config
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RECOVERY_FILE).write_text(json.dumps(record, indent=1))
    history, classes = history_tables(layer, protocol, record["runs"], dataset.class_names)
    history.to_csv(folder / "history.csv", index=False)
    classes.to_csv(folder / "classes.csv", index=False)
    return RecoveryResult(layer, protocol, record["baseline"], history, classes, folder)


def _n_units(model: nn.Module, layer: str) -> int:
    known = {item.name: item.n_units for item in layers(model)}
    if layer not in known:
        raise LesionError(f"layer must be a lesionable layer of the model, got {layer!r}{closest(str(layer), known)}")
    return known[layer]


def _read_record(folder: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The stored record of an earlier run with the same config, or None; another config is refused."""
    path = folder / RECOVERY_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("config") != json.loads(json.dumps(config)):
        raise LesionError(f"{str(folder)!r} holds a recovery with another config ({record.get('config')}); use another folder")
    return record


def _instances(
    model: nn.Module, dataset: Dataset, layer: str, n_units: int, fraction: float, instances: int, epochs: int,
    sgd: dict[str, Any],
) -> dict[str, Any]:
    from lesion.train import recover_instances
    from lesion.train._recover import _test_metrics

    curves = recover_instances(model, layer, dataset, fraction=fraction, instances=instances, epochs=epochs, **sgd)
    runs = [
        {"run": i, "units": list(curve.lesion.units[0][1]), "dead_fraction": curve.lesion.size / n_units, "history": list(curve.history)}
        for i, curve in enumerate(curves)
    ]
    return {"baseline": _test_metrics(model, INTACT, dataset.test, 512), "runs": runs}


def _iterative(
    model: nn.Module, dataset: Dataset, layer: str, folder: Path, fraction: float, min_epochs: int, patience: int,
    min_delta: float, max_epochs: int, max_iterations: int, sgd: dict[str, Any],
) -> dict[str, Any]:
    from lesion.train import recover_iterative

    result = recover_iterative(
        model, layer, dataset, fraction=fraction, min_epochs=min_epochs, patience=patience, min_delta=min_delta,
        max_epochs=max_epochs, max_iterations=max_iterations, out_dir=folder / "checkpoints", **sgd,
    )
    runs = [
        {"run": it.index, "units": list(it.dead), "dead_fraction": it.dead_fraction, "history": list(it.history)}
        for it in result.iterations
    ]
    return {"baseline": result.baseline, "runs": runs}


def history_tables(
    layer: str, protocol: str, runs: Sequence[dict[str, Any]], class_names: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tidy overall and per-class tables of the histories of ``runs`` (see :class:`RecoveryResult`)."""
    overall, per_class = [], []
    step = 0
    for run in runs:
        start = step if protocol == "iterative" else 0
        for row in run["history"]:
            step = start + row["epoch"]
            key = {"layer": layer, "protocol": protocol, "run": run["run"], "epoch": row["epoch"]}
            overall.append(
                {
                    **key, "step": step, "n_dead": len(run["units"]), "dead_fraction": run["dead_fraction"],
                    "top1": row["top1"], "top5": row["top5"], "loss": row["loss"], "train_acc": row["train_acc"],
                    "seconds": row["seconds"],
                }
            )
            per_class += [
                {**key, "class": name, "top1": t1, "top5": t5}
                for name, t1, t5 in zip(class_names, row["class_top1"], row["class_top5"], strict=True)
            ]
    return pd.DataFrame(overall), pd.DataFrame(per_class)
