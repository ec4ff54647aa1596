"""Training networks from scratch, keeping the initial weights, and populations of seeds.

Training is the papers' recipe: stochastic gradient descent with momentum on the cross-entropy
loss; Adam and plain SGD (``momentum=0``) are variants, and so is training on labels of which a
seeded fraction is randomised (:func:`corrupt_labels`, Morcos et al. 2018). Everything random is seeded: ``torch.manual_seed(seed)`` before the model is built (its
initial weights) and for any randomness inside the forward pass (dropout), and a separate
``torch.Generator().manual_seed(seed)`` for the order of the training samples. On CPU the same
seed gives bit-identical weights. The caller's global RNG state is left as it was.

The data stay in memory as tensors and each batch is gathered with one index of a permutation
(:meth:`Split.batches`): no DataLoader, no per-sample work, so tiny networks train at the speed
of their matrix products.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lesion._errors import LesionError, check_int, closest
from lesion._lesion import INTACT
from lesion._progress import progress_bar
from lesion.data import Dataset, Split
from lesion.engine import evaluate
from lesion.models import CHECKPOINT_FORMAT, build_model, load_checkpoint

#: Hyper-parameters of the papers' networks. The 2019 paper trains its MLP for 100 epochs
#: (94.64 % on MNIST) without naming the optimiser settings; SGD lr 0.01, momentum 0.9,
#: batch 64 is our choice. The 2020 CNN: lr 0.001, momentum 0.9, batch 64, 100 epochs (stated).
PRESETS: dict[str, dict[str, Any]] = {
    "meyes2019-mlp": {"epochs": 100, "lr": 0.01, "momentum": 0.9, "batch_size": 64},
    "meyes2020-cnn": {"epochs": 100, "lr": 0.001, "momentum": 0.9, "batch_size": 64},
}

POPULATION_FORMAT = "lesion-population/1"
POPULATION_FILE = "population.json"
EVAL_BATCH_SIZE = 1024
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class EpochStats:
    """Mean training loss and training accuracy (in [0, 1]) of one epoch, from its own forward passes."""

    loss: float
    accuracy: float


def train_model(
    model_name: str,
    dataset: Dataset,
    *,
    seed: int,
    epochs: int,
    lr: float,
    momentum: float,
    batch_size: int,
    model_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
    eval_every_epoch: bool = True,
    device: str = "cpu",
    optimizer: str = "sgd",
    label_noise: float = 0.0,
    label_noise_seed: int = 0,
) -> dict[str, Any]:
    """Train a fresh zoo model on ``dataset.train`` and return a lesion checkpoint.

    Parameters
    ----------
    model_name : str
        Zoo name (``meyes2019-mlp``) or ``package.module:factory``.
    dataset : Dataset
        Needs a ``train`` split; top-1 accuracy is measured on ``test``.
    seed : int
        Seeds the initial weights, dropout and the shuffling of the training samples.
    epochs, lr, momentum, batch_size
        SGD with momentum on the cross-entropy loss (see :data:`PRESETS` for the papers' values).
    model_kwargs : mapping, optional
        Factory arguments (plain JSON-able values), e.g. ``{"in_features": 64}``.
    progress : bool, default=False
        Show a bar over all batches of all epochs.
    eval_every_epoch : bool, default=True
        Measure test accuracy after every epoch; otherwise only after the last (``None`` before).
    device : str, default="cpu"
        Where to train. The weights are initialised on the CPU, so they do not depend on it.
    optimizer : {"sgd", "adam"}, default="sgd"
        ``sgd``: SGD with ``momentum`` (0: plain SGD); ``adam``: Adam with torch's default betas
        (``momentum`` must then be 0).
    label_noise : float, default=0.0
        Fraction of the training labels replaced before training (:func:`corrupt_labels`, seeded by
        ``label_noise_seed``); train accuracies in ``history`` are against the labels trained on.
    label_noise_seed : int, default=0

    Returns
    -------
    dict
        ``format``, ``model``, ``model_kwargs``, ``initial`` and ``trained`` (state dicts on the
        CPU), ``config`` (every hyper-parameter plus the dataset name and the sha256 fingerprints
        of both splits), ``history`` (one row per epoch: ``epoch``, ``loss``, ``train_acc``,
        ``test_acc``; no wall-clock times, so the same seed gives the same bytes) and ``environment`` (torch version, device). Plain types and
        tensors only: it saves with ``torch.save`` and loads with ``torch.load(weights_only=True)``.
    """
    config = training_config(
        model_name, dataset, seed=seed, epochs=epochs, lr=lr, momentum=momentum,
        batch_size=batch_size, model_kwargs=model_kwargs, optimizer=optimizer, label_noise=label_noise,
        label_noise_seed=label_noise_seed,
    )
    return _train(config, dataset, progress=progress, eval_every_epoch=eval_every_epoch, device=device)


def training_config(
    model_name: str,
    dataset: Dataset,
    *,
    seed: int | None,
    epochs: int,
    lr: float,
    momentum: float,
    batch_size: int,
    model_kwargs: Mapping[str, Any] | None = None,
    fingerprints: tuple[str, str] | None = None,
    optimizer: str = "sgd",
    label_noise: float = 0.0,
    label_noise_seed: int = 0,
) -> dict[str, Any]:
    """The checked configuration of a training run (``seed=None``: that of a population).

    ``fingerprints`` (train, test) skips hashing the splits again. A ``label_noise`` > 0 adds the
    key ``label_noise`` (``fraction``, ``seed``, ``replacement``); the default recipe's config has
    exactly the keys it had before variants existed, so earlier checkpoints still match it.
    """
    if seed is not None:
        check_seed(seed)
    check_sgd(epochs=epochs, lr=lr, momentum=momentum, batch_size=batch_size)
    check_optimizer(optimizer, momentum)
    check_label_noise(label_noise, label_noise_seed)
    if dataset.train is None:
        raise LesionError(f"dataset {dataset.name!r} has no train split: training needs one")
    train_fp, test_fp = fingerprints or (dataset.train.fingerprint(), dataset.test.fingerprint())
    config = {
        "model": model_name,
        "model_kwargs": dict(model_kwargs or {}),
        "seed": seed,
        "epochs": int(epochs),
        "lr": float(lr),
        "momentum": float(momentum),
        "batch_size": int(batch_size),
        "optimizer": optimizer,
        "loss": "cross_entropy",
        "dataset": dataset.name,
        "train_fingerprint": train_fp,
        "test_fingerprint": test_fp,
        "train_size": len(dataset.train),
        "test_size": len(dataset.test),
    }
    try:
        plain(config)
    except (TypeError, ValueError):
        raise LesionError(
            f"model_kwargs must hold plain values (numbers, strings, lists), got {config['model_kwargs']!r}"
        ) from None
    if label_noise:
        config["label_noise"] = {"fraction": float(label_noise), "seed": int(label_noise_seed), "replacement": "uniform"}
    if seed is None:
        del config["seed"]
    return config


def variant(config: Mapping[str, Any]) -> dict[str, Any]:
    """The training variant of a checkpoint's ``config``: what Zhou/Morcos-style studies compare.

    Returns ``batch_norm``, ``dropout`` (from ``model_kwargs``), ``optimizer``, ``lr``,
    ``momentum`` and ``label_noise`` (fraction, 0 when absent), all plain values.

    >>> variant({"model_kwargs": {"dropout": 0.5}, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9})["dropout"]
    0.5
    """
    kwargs = config.get("model_kwargs", {})
    noise = config.get("label_noise") or {}
    return {
        "batch_norm": bool(kwargs.get("batch_norm", False)),
        "dropout": float(kwargs.get("dropout", 0.0)),
        "optimizer": str(config.get("optimizer", "sgd")),
        "lr": float(config["lr"]),
        "momentum": float(config["momentum"]),
        "label_noise": float(noise.get("fraction", 0.0)),
    }


def corrupt_labels(labels: torch.Tensor, fraction: float, n_classes: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Randomise exactly ``round(fraction·N)`` labels (Morcos et al. 2018's "randomised labels").

    The samples are drawn without replacement with ``numpy.random.default_rng(seed)``; each gets a
    label drawn *uniformly from all* ``n_classes`` classes from the same stream, so it keeps its
    true label with probability 1/n_classes (as in Morcos et al.; ``fraction=1`` gives labels
    independent of the inputs). Rounding is half-to-even (numpy's ``round``).

    Parameters
    ----------
    labels : Tensor of shape (N,), int64
    fraction : float in [0, 1]
    n_classes : int
    seed : int

    Returns
    -------
    (Tensor of shape (N,), ndarray of int64 of shape (round(fraction·N),))
        The new labels (a copy) and the sorted indices of the samples whose label was redrawn.

    >>> new, idx = corrupt_labels(torch.zeros(10, dtype=torch.int64), 0.3, 5, seed=0)
    >>> len(idx), bool((new[[i for i in range(10) if i not in idx]] == 0).all())
    (3, True)
    """
    check_label_noise(fraction, seed)
    check_int("n_classes", n_classes, 2)
    rng = np.random.default_rng(seed)
    n = len(labels)
    chosen = np.sort(rng.choice(n, size=round(fraction * n), replace=False))
    new = labels.clone()
    new[torch.from_numpy(chosen)] = torch.from_numpy(rng.integers(0, n_classes, size=len(chosen))).to(labels.dtype)
    return new, chosen.astype(np.int64)


def check_optimizer(optimizer: Any, momentum: float) -> None:
    """Raise `LesionError` unless ``optimizer`` is known and ``momentum`` applies to it."""
    if optimizer not in OPTIMIZERS:
        raise LesionError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}{closest(str(optimizer), OPTIMIZERS)}")
    if optimizer == "adam" and momentum != 0:
        raise LesionError(f"momentum applies to optimizer 'sgd' only; give momentum=0 with 'adam', got {momentum!r}")


def check_label_noise(fraction: Any, seed: Any) -> None:
    """Raise `LesionError` unless ``fraction`` is in [0, 1] and ``seed`` an integer >= 0."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise LesionError(f"label_noise must be a fraction in [0, 1] (0.2 for 20 % of the labels), got {fraction!r}")
    check_int("label_noise_seed", seed, 0)


def plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples become lists), for comparing configs from any source."""
    return json.loads(json.dumps(value, sort_keys=True))


#: Seeds are 32-bit: numpy's and torch's generators both take them.
MAX_SEED = 2**32 - 1


def check_seed(seed: Any) -> None:
    """Raise `LesionError` unless ``seed`` is an integer in 0..2**32-1."""
    check_int("seed", seed, 0, MAX_SEED)


def check_sgd(*, epochs: int, lr: float, momentum: float, batch_size: int) -> None:
    """Raise `LesionError` unless the SGD hyper-parameters are usable."""
    check_int("epochs", epochs, 1)
    check_int("batch_size", batch_size, 1)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise LesionError(f"lr must be a number > 0, got {lr!r}")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise LesionError(f"momentum must be a number in [0, 1), got {momentum!r}")


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG for the block; the caller's RNG state is restored afterwards."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``model.state_dict()``."""
    return {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}


def _train(
    config: dict[str, Any],
    dataset: Dataset,
    *,
    progress: bool,
    eval_every_epoch: bool,
    device: str,
) -> dict[str, Any]:
    train_split = dataset.train
    if train_split is None:  # checked by training_config; this narrows the type
        raise LesionError(f"dataset {dataset.name!r} has no train split: training needs one")
    where = torch.device(device)
    history: list[dict[str, Any]] = []
    with seeded(config["seed"], where):
        model = build_model(config["model"], **config["model_kwargs"])
        initial = cpu_state(model)
        model.to(where)
        optimizer = make_optimizer(model, config)
        noise = config.get("label_noise")
        if noise:
            labels, _ = corrupt_labels(train_split.labels, noise["fraction"], train_split.n_classes, noise["seed"])
            train_split = replace(train_split, name=f"{train_split.name}+noise{noise['fraction']:g}", labels=labels)
        generator = torch.Generator().manual_seed(config["seed"])
        n_batches = -(-len(train_split) // config["batch_size"])
        what = f"train {config['model']} seed {config['seed']}"
        with progress_bar(config["epochs"] * n_batches, what, enabled=progress) as advance:
            for epoch in range(1, config["epochs"] + 1):
                model.train()
                stats = train_epoch(model, train_split, optimizer, config["batch_size"], generator, advance)
                last = epoch == config["epochs"]
                test_acc = accuracy(model, dataset.test) if eval_every_epoch or last else None
                history.append(
                    {
                        "epoch": epoch,
                        "loss": stats.loss,
                        "train_acc": stats.accuracy,
                        "test_acc": test_acc,
                    }
                )
    model.eval()
    return {
        "format": CHECKPOINT_FORMAT,
        "model": config["model"],
        "model_kwargs": config["model_kwargs"],
        "initial": initial,
        "trained": cpu_state(model),
        "config": config,
        "history": history,
        "environment": {"torch": str(torch.__version__), "device": str(where)},
    }


def make_optimizer(model: nn.Module, config: Mapping[str, Any]) -> torch.optim.Optimizer:
    """The optimizer named in ``config`` (``sgd`` with its momentum, or ``adam``) at its ``lr``."""
    if config.get("optimizer", "sgd") == "adam":
        return torch.optim.Adam(model.parameters(), lr=config["lr"])
    return torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])


def train_epoch(
    model: nn.Module,
    split: Split,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
    advance: Callable[[int], None] = lambda n: None,
) -> EpochStats:
    """One pass over ``split`` in the order drawn from ``generator``; the caller sets train/eval modes.

    Loss and accuracy are accumulated on the device and read once at the end, so the loop never
    waits for the accelerator.
    """
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for x, y in split.batches(batch_size, shuffle=True, generator=generator):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        advance(1)
    return EpochStats(float(loss_sum) / len(split), int(correct) / len(split))


def accuracy(model: nn.Module, split: Split) -> float:
    """Top-1 accuracy of the intact ``model`` on ``split``, in [0, 1]."""
    outcome = next(iter(evaluate(model, split, [INTACT], k=1, batch_size=EVAL_BATCH_SIZE)))
    return float(np.mean(outcome.topk[:, 0] == split.labels.numpy()))


def train_population(
    model_name: str,
    dataset: Dataset,
    seeds: Sequence[int],
    out_dir: str | Path,
    *,
    epochs: int,
    lr: float,
    momentum: float,
    batch_size: int,
    model_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
    eval_every_epoch: bool = True,
    device: str = "cpu",
    workers: int = 1,
    optimizer: str = "sgd",
    label_noise: float = 0.0,
    label_noise_seed: int = 0,
) -> list[Path]:
    """Train one network per seed into ``out_dir``; resumable.

    Writes ``out_dir/seed-XXX.pt`` (a checkpoint as :func:`train_model` returns) per seed and
    ``out_dir/population.json`` (the shared config and each seed's final accuracies). A seed whose
    checkpoint already holds the same config is not trained again. Files are written atomically,
    so an interrupted call leaves no half-written checkpoint.

    Parameters
    ----------
    seeds : sequence of int
        Distinct, >= 0.
    out_dir : path
        Created if missing. A directory holding a population with a different config is refused.
    epochs, lr, momentum, batch_size, model_kwargs, progress, eval_every_epoch, device, optimizer, label_noise, label_noise_seed
        As for :func:`train_model` (one ``label_noise_seed`` for every network of the population).
    workers : int, default=1
        Networks trained at once, each in its own process on one torch thread (the bytes equal those
        of a one-thread sequential run in a fresh process). On a 2-core machine ``workers=2`` halves
        a population's time.

    Returns
    -------
    list of Path, one checkpoint per seed, in the order of ``seeds``.
    """
    seeds = list(seeds)
    if not seeds:
        raise LesionError("seeds must name at least one seed, got none")
    for seed in seeds:
        check_seed(seed)
    if len(set(seeds)) != len(seeds):
        raise LesionError(f"seeds must be distinct, got {seeds}")
    check_int("workers", workers, 1)
    common = training_config(
        model_name, dataset, seed=None, epochs=epochs, lr=lr, momentum=momentum,
        batch_size=batch_size, model_kwargs=model_kwargs, optimizer=optimizer, label_noise=label_noise,
        label_noise_seed=label_noise_seed,
    )
    out = Path(out_dir)
    manifest = _read_manifest(out, common)
    paths = [out / f"seed-{seed:03d}.pt" for seed in seeds]
    configs = [{**common, "seed": seed} for seed in seeds]
    todo = [(config, path) for config, path in zip(configs, paths, strict=True) if _finished(path, config) is None]
    if workers > 1 and len(todo) > 1:
        _train_in_processes(todo, dataset, workers, eval_every_epoch, device, progress)
    else:
        for config, path in todo:
            _atomic_save(_train(config, dataset, progress=progress, eval_every_epoch=eval_every_epoch, device=device), path)
    for seed, config, path in zip(seeds, configs, paths, strict=True):
        checkpoint = _finished(path, config)
        final = checkpoint["history"][-1]  # type: ignore[index]
        manifest["seeds"][str(seed)] = {
            "file": path.name,
            "test_acc": final["test_acc"],
            "train_acc": final["train_acc"],
            "loss": final["loss"],
        }
    _atomic_write_text(json.dumps(manifest, indent=2, sort_keys=True), out / POPULATION_FILE)
    return paths


def _train_in_processes(
    todo: list[tuple[dict[str, Any], Path]], dataset: Dataset, workers: int, eval_every_epoch: bool, device: str,
    progress: bool,
) -> None:
    """Train each (config, path) in its own spawned process, ``workers`` at a time, one torch thread each.

    A checkpoint depends only on its config (and the thread count), so the bytes equal those of a
    sequential one-thread run in a fresh process.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    with progress_bar(len(todo), "networks", enabled=progress) as advance, ProcessPoolExecutor(workers, context) as pool:
        futures = [pool.submit(_train_to_file, config, dataset, path, eval_every_epoch, device) for config, path in todo]
        for future in as_completed(futures):
            future.result()
            advance(1)


def _train_to_file(config: dict[str, Any], dataset: Dataset, path: Path, eval_every_epoch: bool, device: str) -> None:
    torch.set_num_threads(1)
    _atomic_save(_train(config, dataset, progress=False, eval_every_epoch=eval_every_epoch, device=device), path)


def _read_manifest(out: Path, common: dict[str, Any]) -> dict[str, Any]:
    """The population manifest of ``out`` (a fresh one if none); refuse a different config."""
    path = out / POPULATION_FILE
    if not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        return {"format": POPULATION_FORMAT, "config": plain(common), "seeds": {}}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict) or not isinstance(manifest.get("seeds"), dict):
        raise LesionError(f"out_dir {str(out)!r}: {POPULATION_FILE} is unreadable; remove it or use another out_dir")
    old = manifest["config"]
    if old != plain(common):
        differ = sorted(k for k in set(old) | set(common) if old.get(k) != plain(common).get(k))
        raise LesionError(
            f"out_dir {str(out)!r} holds a population trained with a different config "
            f"(differs in {differ}); use another out_dir"
        )
    return dict(manifest)


def _finished(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it was trained with ``config``; None if absent or unreadable."""
    if not path.is_file():
        return None
    try:
        checkpoint = load_checkpoint(path)
    except LesionError:
        return None
    if plain(checkpoint.get("config")) != plain(config) or not checkpoint.get("history"):
        raise LesionError(f"checkpoint {str(path)!r} was trained with a different config; remove it or use another out_dir")
    return checkpoint


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
