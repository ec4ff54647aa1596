"""Recovery training of a lesioned network (Meyes et al. 2019, §3.3 and §4.4).

The lesion stays in place while the network retrains: it is applied with :func:`lesioned` around
every training epoch and passed to the evaluator, so the lesioned units' outputs are exactly 0
throughout and their incoming weights receive no gradient. Every module that comes *before* the
(first) lesioned layer in ``model.named_modules()`` order — its ancestors (the containers holding
it) excepted — is frozen: its parameters get ``requires_grad_(False)`` and it stays in eval mode,
so batch-norm running statistics and dropout before the lesion do not change. For
Sequential-style networks (the papers' MLP and CNN, VGG) module order is data-flow order, so this
is "every layer above the lesion". The lesioned layer itself and everything after it train.

Training always works on a ``copy.deepcopy`` of the caller's model, which is never modified. The
recovered copy's parameters do not contain the lesion: evaluate it with the lesion applied
(``lesioned(recovered, lesion)`` or ``evaluate(recovered, split, [lesion])``).

Accuracies in the histories are fractions in [0, 1]; ``top5`` is top-``min(5, n_classes)``.
"""

from __future__ import annotations

import copy
import json
import pickle
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from lesion._errors import LesionError, check_int, closest
from lesion._files import atomic_write
from lesion._lesion import INTACT, Lesion, check_lesion, lesioned
from lesion._progress import progress_bar
from lesion._units import Layer, layers
from lesion.data import Dataset, Split
from lesion.engine import default_k, evaluate
from lesion.metrics import class_metrics
from lesion.models import model_fingerprint
from lesion.plans._fraction import fraction as fraction_plan
from lesion.plans._fraction import group_size
from lesion.train._train import (
    _atomic_save,
    check_seed,
    check_sgd,
    cpu_state,
    plain,
    seeded,
    train_epoch,
)

FREEZE = ("before", "none")
RECOVERY_FORMAT = "lesion-recovery/1"


@dataclass(frozen=True, eq=False)
class Recovery:
    """A recovered network.

    Attributes
    ----------
    model : nn.Module
        The retrained copy, in eval mode. Its weights do not contain the lesion: apply it to
        evaluate (``lesioned(model, lesion)``).
    lesion : Lesion
    history : tuple of dict
        One row per epoch, epoch 0 being the lesioned network before retraining: ``epoch``,
        ``loss`` and ``train_acc`` (None at epoch 0), ``top1``, ``top5`` (overall test accuracy),
        ``class_top1``, ``class_top5`` (lists, one per class), ``seconds``.
    """

    model: nn.Module
    lesion: Lesion
    history: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class RecoveryCurve:
    """One instance of :func:`recover_instances`: the lesion and its history (rows as in :class:`Recovery`)."""

    lesion: Lesion
    history: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Iteration:
    """One iteration of :func:`recover_iterative`.

    Attributes
    ----------
    index : int
        1, 2, …
    draw : tuple of int
        The units drawn this iteration (some may already have been dead).
    dead : tuple of int
        Every unit lesioned so far (the union of all draws).
    dead_fraction : float
        ``len(dead) / n_units``.
    history : tuple of dict
        Rows as in :class:`Recovery`; epoch 0 is the network just after this iteration's lesion.
    """

    index: int
    draw: tuple[int, ...]
    dead: tuple[int, ...]
    dead_fraction: float
    history: tuple[dict[str, Any], ...]


@dataclass(frozen=True, eq=False)
class IterativeRecovery:
    """Result of :func:`recover_iterative`.

    Attributes
    ----------
    model : nn.Module
        The network after the last iteration, in eval mode (apply ``lesion`` to evaluate it).
    lesion : Lesion
        The last iteration's lesion: every dead unit.
    baseline : dict
        The intact network's ``top1``, ``top5``, ``class_top1``, ``class_top5``.
    iterations : tuple of Iteration
    """

    model: nn.Module
    lesion: Lesion
    baseline: dict[str, Any]
    iterations: tuple[Iteration, ...]


def should_stop(top5_history: Sequence[float], min_epochs: int, patience: int, min_delta: float) -> bool:
    """The paper's early-stopping rule for recovery training.

    Parameters
    ----------
    top5_history : sequence of float
        Top-5 accuracy **in percent** after epoch 0 (before retraining), 1, 2, …
    min_epochs : int
        Never stop before this many epochs have been trained.
    patience : int
        The window, in epochs, over which improvement is measured.
    min_delta : float
        Stop when the best accuracy of the last ``patience`` epochs exceeds the accuracy just
        before them by less than this many percentage points.

    Examples
    --------
    >>> should_stop([50, 90, 91, 91.02, 91.03, 91.04], min_epochs=5, patience=2, min_delta=0.05)
    True
    >>> should_stop([50, 90, 91, 91.02, 91.03, 91.04], min_epochs=6, patience=2, min_delta=0.05)
    False
    """
    epochs = len(top5_history) - 1
    if epochs < max(min_epochs, patience):
        return False
    window = top5_history[-patience:]
    return max(window) - top5_history[-patience - 1] < min_delta


def recover(
    model: nn.Module,
    lesion: Lesion,
    dataset: Dataset,
    *,
    epochs: int,
    lr: float,
    momentum: float,
    batch_size: int,
    seed: int,
    eval_batch_size: int = 512,
    progress: bool = False,
    freeze: str = "before",
) -> Recovery:
    """Retrain a copy of ``model`` with ``lesion`` in place on ``dataset.train``.

    Parameters
    ----------
    model : nn.Module
        Never modified.
    lesion : Lesion
        At least one unit; stays applied throughout.
    dataset : Dataset
        Trains on ``train``; top-1/top-5, overall and per class, are measured on ``test`` before
        retraining (epoch 0) and after every epoch.
    epochs, lr, momentum, batch_size
        SGD with momentum on the cross-entropy loss.
    seed : int
        Seeds the order of the training samples and any dropout.
    eval_batch_size : int, default=512
    progress : bool, default=False
    freeze : {"before", "none"}, default="before"
        ``before``: freeze every module before the first lesioned layer (see the module docs).

    Returns
    -------
    Recovery
    """
    check_sgd(epochs=epochs, lr=lr, momentum=momentum, batch_size=batch_size)
    train = _check_recovery(model, lesion, dataset, seed, eval_batch_size, freeze)
    work = copy.deepcopy(model)
    rows = _recovery_epochs(
        work, lesion, dataset, lr=lr, momentum=momentum, batch_size=batch_size, seed=seed,
        eval_batch_size=eval_batch_size, freeze=freeze,
    )
    total = epochs * _n_batches(train, batch_size)
    with progress_bar(total, f"recover {lesion.key}", enabled=progress) as advance, closing(rows):
        history = [next(rows)]
        while len(history) <= epochs:
            history.append(rows.send(advance))
    return Recovery(work.eval(), lesion, tuple(history))


def recover_instances(
    model: nn.Module,
    layer: str,
    dataset: Dataset,
    *,
    fraction: float = 0.25,
    instances: int = 5,
    epochs: int = 5,
    seed: int = 0,
    lr: float = 0.001,
    momentum: float = 0.9,
    batch_size: int = 64,
    eval_batch_size: int = 512,
    progress: bool = False,
    freeze: str = "before",
) -> list[RecoveryCurve]:
    """The paper's Figure 18: several instances, each a different random group of ``layer``, retrained.

    Each instance starts from ``model`` (untouched) with its own random group of
    ``max(1, round(fraction·n))`` units, drawn as by ``fraction(model, layer, fraction, "random",
    seed=seed, draws=instances)``; identical draws count once, so a small layer may give fewer
    instances than asked. Instance ``i`` trains with a seed derived from ``(seed, i)``.

    Returns
    -------
    list of RecoveryCurve, one per distinct group.
    """
    _lesionable(model, layer)
    check_int("instances", instances, 1)
    check_seed(seed)
    plan = fraction_plan(model, [layer], [fraction], "random", seed=seed, draws=instances)
    return [
        RecoveryCurve(
            lesion,
            recover(
                model, lesion, dataset, epochs=epochs, lr=lr, momentum=momentum, batch_size=batch_size,
                seed=derive_seed(seed, i), eval_batch_size=eval_batch_size, progress=progress, freeze=freeze,
            ).history,
        )
        for i, lesion in enumerate(plan)
    ]


def recover_iterative(
    model: nn.Module,
    layer: str,
    dataset: Dataset,
    *,
    fraction: float = 0.25,
    min_epochs: int = 5,
    patience: int = 2,
    min_delta: float = 0.05,
    max_epochs: int = 20,
    max_iterations: int = 6,
    seed: int = 0,
    lr: float = 0.001,
    momentum: float = 0.9,
    batch_size: int = 64,
    eval_batch_size: int = 512,
    out_dir: str | Path | None = None,
    progress: bool = False,
    freeze: str = "before",
) -> IterativeRecovery:
    """The paper's Figure 19: lesion a random ``fraction`` of ``layer``, recover, repeat.

    Iteration ``i`` draws ``max(1, round(fraction·n))`` of the layer's ``n`` units at random,
    without replacement within the draw but *with* replacement relative to earlier iterations
    (``numpy.random.default_rng([seed, i])``), so the set of dead units — the union of all draws —
    grows slowly. The network, carried over from the previous iteration, retrains with every dead
    unit lesioned until at least ``min_epochs`` epochs have passed and :func:`should_stop` says the
    top-5 accuracy has plateaued (or ``max_epochs`` is reached). Iterations stop after
    ``max_iterations`` or when every unit is dead.

    Parameters
    ----------
    model : nn.Module
        Never modified.
    layer : str
        A lesionable layer of ``model``.
    fraction : float, default=0.25
    min_epochs, patience, min_delta
        The stopping rule of :func:`should_stop`; ``min_delta`` is in percentage points of top-5.
    max_epochs : int, default=20
        Epochs per iteration at most (>= ``min_epochs``).
    max_iterations : int, default=6
        With 25 %, six iterations leave about 18 % of the units alive, as in the paper.
    seed : int, default=0
        Seeds the draws and (derived per iteration) the training order.
    lr, momentum, batch_size, eval_batch_size, progress, freeze
        As for :func:`recover`.
    out_dir : path, optional
        Where to write ``iteration-XXX.pt`` after every iteration: the config, the intact
        baseline, the draw, the dead units, the history and the network's state dict, loadable
        with ``torch.load(weights_only=True)``. Rerunning with the same ``out_dir`` continues after
        the last finished iteration (``max_iterations`` may grow between calls); a directory
        written with a different config is refused.

    Returns
    -------
    IterativeRecovery
    """
    target = _lesionable(model, layer)
    check_int("max_epochs", max_epochs, 1)
    check_sgd(epochs=max_epochs, lr=lr, momentum=momentum, batch_size=batch_size)
    check_int("min_epochs", min_epochs, 1)
    check_int("patience", patience, 1)
    check_int("max_iterations", max_iterations, 1)
    if max_epochs < min_epochs:
        raise LesionError(f"max_epochs must be >= min_epochs ({min_epochs}), got {max_epochs}")
    if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or min_delta < 0:
        raise LesionError(f"min_delta must be a number >= 0 (percentage points), got {min_delta!r}")
    size = group_size(_check_fraction(fraction), target.n_units)
    train = _check_recovery(model, None, dataset, seed, eval_batch_size, freeze)
    config = {
        "layer": layer, "fraction": float(fraction), "group_size": size, "seed": seed,
        "min_epochs": min_epochs, "patience": patience, "min_delta": float(min_delta), "max_epochs": max_epochs,
        "lr": float(lr), "momentum": float(momentum), "batch_size": batch_size, "freeze": freeze,
        "dataset": dataset.name, "train_fingerprint": train.fingerprint(),
        "test_fingerprint": dataset.test.fingerprint(), "model_fingerprint": model_fingerprint(model),
    }
    work = copy.deepcopy(model)
    done, baseline = _resume(Path(out_dir) if out_dir is not None else None, config, work)
    if baseline is None:
        baseline = _test_metrics(work, INTACT, dataset.test, eval_batch_size)
    dead = set(done[-1].dead) if done else set()
    for index in range(len(done) + 1, max_iterations + 1):
        if len(dead) == target.n_units:
            break
        draw = sorted(int(u) for u in np.random.default_rng([seed, index]).choice(target.n_units, size, replace=False))
        dead.update(draw)
        lesion = Lesion(((layer, tuple(dead)),))
        rows = _recovery_epochs(
            work, lesion, dataset, lr=lr, momentum=momentum, batch_size=batch_size,
            seed=derive_seed(seed, index), eval_batch_size=eval_batch_size, freeze=freeze,
        )
        total = max_epochs * _n_batches(train, batch_size)
        with progress_bar(total, f"iteration {index}: {len(dead)} dead", enabled=progress) as advance, closing(rows):
            history = [next(rows)]
            while len(history) <= max_epochs and not should_stop(
                [100 * row["top5"] for row in history], min_epochs, patience, min_delta
            ):
                history.append(rows.send(advance))
        done.append(Iteration(index, tuple(draw), tuple(sorted(dead)), len(dead) / target.n_units, tuple(history)))
        if out_dir is not None:
            _save_iteration(Path(out_dir), config, baseline, done[-1], work)
    final = Lesion(((layer, tuple(sorted(dead))),)) if dead else INTACT
    return IterativeRecovery(work.eval(), final, baseline, tuple(done))


def derive_seed(seed: int, *keys: int) -> int:
    """An independent 32-bit seed for ``(seed, *keys)`` (numpy ``SeedSequence``)."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def frozen_modules(model: nn.Module, lesion: Lesion) -> list[nn.Module]:
    """Modules before the first lesioned layer in ``named_modules()`` order, the layer's ancestors excepted."""
    names = [name for name, _ in model.named_modules()]
    first = min(names.index(layer) for layer in lesion.layers)
    parts = names[first].split(".")
    ancestors = {""} | {".".join(parts[:i]) for i in range(1, len(parts))}
    modules = dict(model.named_modules())
    return [modules[name] for name in names[:first] if name not in ancestors]


def _recovery_epochs(
    model: nn.Module,
    lesion: Lesion,
    dataset: Dataset,
    *,
    lr: float,
    momentum: float,
    batch_size: int,
    seed: int,
    eval_batch_size: int,
    freeze: str,
) -> Generator[dict[str, Any], Callable[[int], None], None]:
    """Yield history rows of ``model`` retraining in place: epoch 0 first, then one per epoch sent for.

    Send the progress callback ``advance`` to train the next epoch. Parameters frozen here get
    their ``requires_grad`` back when the generator is closed.
    """
    frozen = frozen_modules(model, lesion) if freeze == "before" else []
    frozen_params = {id(p) for module in frozen for p in module.parameters(recurse=False)}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    trainable = [p for p in model.parameters() if p.requires_grad and id(p) not in frozen_params]
    if not trainable:
        raise LesionError(f"recovery from lesion {lesion.key!r}: no trainable parameters are left after freezing")
    train = _train_split(dataset)
    try:
        for module in frozen:
            module.requires_grad_(False)
        optimizer = torch.optim.SGD(trainable, lr=lr, momentum=momentum)
        generator = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        row = {"epoch": 0, "loss": None, "train_acc": None, **_test_metrics(model, lesion, dataset.test, eval_batch_size)}
        epoch = 0
        while True:
            advance = yield {**row, "seconds": time.perf_counter() - start}
            epoch += 1
            start = time.perf_counter()
            model.train()
            for module in frozen:
                module.eval()
            with seeded(derive_seed(seed, epoch), next(model.parameters()).device), lesioned(model, lesion):
                stats = train_epoch(model, train, optimizer, batch_size, generator, advance)
            metrics = _test_metrics(model, lesion, dataset.test, eval_batch_size)
            row = {"epoch": epoch, "loss": stats.loss, "train_acc": stats.accuracy, **metrics}
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def _train_split(dataset: Dataset) -> Split:
    if dataset.train is None:
        raise LesionError(f"dataset {dataset.name!r} has no train split: recovery training needs one")
    return dataset.train


def _check_recovery(
    model: nn.Module, lesion: Lesion | None, dataset: Dataset, seed: int, eval_batch_size: int, freeze: str
) -> Split:
    """Check what every recovery protocol needs; return the train split."""
    check_seed(seed)
    check_int("eval_batch_size", eval_batch_size, 1)
    if freeze not in FREEZE:
        raise LesionError(f"freeze must be one of {FREEZE}, got {freeze!r}{closest(str(freeze), FREEZE)}")
    if lesion is not None:
        if not lesion.units:
            raise LesionError("recovery needs a lesion of at least one unit, got the intact network")
        check_lesion(model, lesion)
    return _train_split(dataset)


def _lesionable(model: nn.Module, layer: str) -> Layer:
    """The lesionable layer named ``layer`` (exact name, no glob)."""
    known = {item.name: item for item in layers(model)}
    if layer not in known:
        raise LesionError(f"layer must be a lesionable layer of the model, got {layer!r}{closest(str(layer), known)}")
    return known[layer]


def _check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise LesionError(f"fraction must be a proportion in (0, 1] (0.25 for 25 %), got {fraction!r}")
    return float(fraction)


def _n_batches(split: Split, batch_size: int) -> int:
    return -(-len(split) // batch_size)


def _test_metrics(model: nn.Module, lesion: Lesion, test: Split, batch_size: int) -> dict[str, Any]:
    """Overall and per-class top-1 / top-5 of ``model`` under ``lesion`` on ``test``."""
    outcome = next(iter(evaluate(model, test, [lesion], k=default_k(test.n_classes), batch_size=batch_size)))
    metrics = class_metrics(outcome.topk, test.labels.numpy(), test.n_classes)
    return {
        "top1": float(metrics["top1"][-1]),
        "top5": float(metrics["topk"][-1]),
        "class_top1": metrics["top1"][:-1].tolist(),
        "class_top5": metrics["topk"][:-1].tolist(),
    }


def _iteration_path(out_dir: Path, index: int) -> Path:
    return out_dir / f"iteration-{index:03d}.pt"


def _save_iteration(out_dir: Path, config: dict[str, Any], baseline: dict[str, Any], it: Iteration, model: nn.Module) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "format": RECOVERY_FORMAT,
        "config": config,
        "baseline": baseline,
        "iteration": it.index,
        "draw": list(it.draw),
        "dead": list(it.dead),
        "dead_fraction": it.dead_fraction,
        "history": list(it.history),
        "state": cpu_state(model),
    }
    _atomic_save(record, _iteration_path(out_dir, it.index))


def _load_iteration(path: Path) -> dict[str, Any]:
    try:
        record = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise LesionError(f"recovery checkpoint {str(path)!r} is unreadable ({type(exc).__name__}); remove it to redo that iteration") from None
    if not isinstance(record, dict) or record.get("format") != RECOVERY_FORMAT:
        raise LesionError(f"{str(path)!r} is not a recovery checkpoint ({RECOVERY_FORMAT})")
    return record


def _resume(out_dir: Path | None, config: dict[str, Any], model: nn.Module) -> tuple[list[Iteration], dict[str, Any] | None]:
    """The finished iterations in ``out_dir`` and their baseline; loads the last one's weights into ``model``."""
    done: list[Iteration] = []
    record: dict[str, Any] | None = None
    while out_dir is not None and _iteration_path(out_dir, len(done) + 1).is_file():
        record = _load_iteration(_iteration_path(out_dir, len(done) + 1))
        if plain(record["config"]) != plain(config):
            differ = sorted(k for k in config if plain(record["config"]).get(k) != plain(config)[k])
            raise LesionError(
                f"out_dir {str(out_dir)!r} holds an iterative recovery with a different config "
                f"(differs in {differ}); use another out_dir"
            )
        done.append(
            Iteration(
                len(done) + 1, tuple(record["draw"]), tuple(record["dead"]),
                float(record["dead_fraction"]), tuple(record["history"]),
            )
        )
    if record is None:
        return done, None
    model.load_state_dict(record["state"])
    return done, record["baseline"]


# --- the paper's two recovery protocols, stored in a folder (Meyes et al. 2019, §3.3, §4.4) --------
#
# - ``instances``: several instances, each a different random group of ``fraction`` of the
#   layer's filters, each retrained for ``epochs`` epochs from the same trained network.
# - ``iterative``: lesion a random ``fraction`` (with replacement across iterations), retrain
#   until at least ``min_epochs`` epochs and top-5 improved by less than ``min_delta`` pp over the
#   last ``patience`` epochs, repeat; the dead fraction grows slowly.
#
# `run_recovery` writes ``recovery.json`` (config, intact baseline, every history), ``history.csv``
# (one row per run and epoch) and ``classes.csv`` (one row per run, epoch and class) into its
# folder; rerunning into it reads them back (the iterative protocol also resumes from its
# per-iteration checkpoints in ``checkpoints/``).


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
    n_units = _lesionable(model, layer).n_units
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
        atomic_write(folder / RECOVERY_FILE, lambda p: p.write_text(json.dumps(record, indent=1)))
    history, classes = history_tables(layer, protocol, record["runs"], dataset.class_names)
    atomic_write(folder / "history.csv", lambda p: history.to_csv(p, index=False))
    atomic_write(folder / "classes.csv", lambda p: classes.to_csv(p, index=False))
    return RecoveryResult(layer, protocol, record["baseline"], history, classes, folder)


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


def seeded_subset(split: Split, n: int | None, seed: int) -> Split:
    """A seeded random subset of ``n`` samples in split order (the whole split when n is None or larger)."""
    if n is None or n >= len(split):
        return split
    return split.subset(np.sort(np.random.default_rng(seed).choice(len(split), size=n, replace=False)))
