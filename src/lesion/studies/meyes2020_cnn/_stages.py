"""The study of Meyes et al. (2020), "Under the hood of neural networks", on the 2020 CNN.

``run_meyes2020_cnn(out, dataset=...)`` trains the CNN with the paper's settings (or loads a
checkpoint) and runs every analysis of the paper into the directory ``out``:

1. **Layer lesions** (Section 4.1, Figures 2, A.1, A.2): per layer and fraction, ``draws`` random
   draws of units without replacement (seeded; the draws are stored in the run), the mean change
   of class-specific accuracy per layer, and the Spearman correlation between a class's original
   error and its drop: the drop is the height of the class's stacked bar, the sum over layers of
   the mean changes (the mean over layers gives the same ranks, so the same coefficient).
2. **Selectivity** (Sections 3.2, 4.3): AS of each of the 17,280 neurons (conv1-3 after pooling,
   one neuron per channel and position; fc1, fc2 after ReLU) from class means over the captured
   activations; AES of each of the 1,216 units of conv1-fc2 from its single-unit lesion, a
   kernel's AES shared by all its spatial neurons. ``out`` is not lesioned singly: it is not part
   of the paper's 17,280-neuron population, and lesioning an output unit only removes its class.
   Per class, the number of neurons most selective for it (AS: preferred class; AES: the class
   its unit's lesion affects most), correlated (Pearson) with the class's neighbourhood hit in
   the UMAP embedding of the test images themselves (the ``input`` panel of Figure 3).
3. **Activation spaces** (Section 4.2, Figures 3, 4): horizontal reduction of each layer's
   activations (``out``: log-softmax, the paper's output) for a seeded subset of
   ``embed_samples`` test images, NH (k = 6) per layer, and the same for the network with
   50 % of conv1 lesioned (the first random draw of the plan), with the images it newly
   misclassifies marked.
4. **Neuron populations** (Figures 1, 5, 6, A.7, A.8): vertical reduction of the 17,280 neurons
   over the same samples, coloured by layer, by the activation to one image of a class
   (normalised per layer), by AS and by AES for that class.

Every test image is used (the paper used 9,984 of 10,000: batch 32, last batch dropped).
The run directory holds ``model.pt`` (when trained), ``lesions/`` (the resumable lesion run),
``activations/*.npy`` (memory-mapped captures), ``embeddings/``, ``tables/*.csv``,
``figures/*.{png,svg}``, ``timings.json`` and ``summary.md``. Rerunning into it resumes: the
sweep continues where it stopped and finished captures and embeddings are read back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from lesion._errors import LesionError, check_int, closest
from lesion._files import file_sha256
from lesion._lesion import INTACT, Lesion, lesioned
from lesion.data import Dataset, Split, load_dataset
from lesion.engine._capture import Activations, capture_activations, load_activations
from lesion.models import load_checkpoint, load_model
from lesion.plans import fraction, single
from lesion.stats import (
    Correlation,
    class_changes,
    class_drops,
    layer_effects,
    unit_ablation_selectivity,
)
from lesion.store import Run
from lesion.studies._engine import EngineConfig
from lesion.studies._study import StudyDir, StudyResult
from lesion.studies.meyes2020_cnn import _analysis as analysis
from lesion.studies.meyes2020_cnn._analysis import main_fraction
from lesion.studies.meyes2020_cnn._report import draw_figures, write_summary

STUDY = "meyes2020-cnn"
MODEL = "meyes2020-cnn"
DATASETS = ("mnist", "fashion-mnist", "kmnist")
#: Where each layer's neurons are read: conv layers after pooling, fc layers after ReLU.
CAPTURE_POINTS = {"conv1": "pool1", "conv2": "pool2", "conv3": "pool3", "fc1": "relu4", "fc2": "relu5", "out": "out"}
#: The layers whose neurons form the population (12,544 + 3,136 + 576 + 512 + 512 = 17,280).
NEURON_LAYERS = ("conv1", "conv2", "conv3", "fc1", "fc2")
#: The layers lesioned by random draws.
LESION_LAYERS = (*NEURON_LAYERS, "out")
FRACTION_PLAN = "fraction-random"
SINGLE_PLAN = "single"
NH_NEIGHBOURS = 6


@dataclass(frozen=True, kw_only=True)
class Meyes2020Result(StudyResult):
    """Everything the study computed (besides `StudyResult`'s files and timings); tables are in ``out/tables``.

    Attributes
    ----------
    dataset : str
    config : dict
        The study's settings (also in ``out/study.json``).
    run : Run
        The lesion run (``out/lesions``): plans ``fraction-random`` and ``single``.
    accuracy : float
        Intact top-1 accuracy on the evaluation split.
    layer_effects : DataFrame
        One row per (layer, fraction, class): mean / std of the accuracy change over the draws.
    classes : DataFrame
        One row per class: ``accuracy``, ``error``, ``drop`` (summed per-layer mean drop at the
        main fraction), ``n_as``, ``n_aes`` (+ its negative / positive split), ``nh``.
    error_vs_drop, as_vs_nh, aes_vs_nh : Correlation
        The paper's three correlations over the classes.
    neurons : DataFrame
        One row per neuron: ``column``, ``layer``, ``unit``, ``position``, ``AS``,
        ``preferred_class``, ``aes``, ``aes_scaled``, ``aes_class``, ``aes_sign``.
    units : DataFrame
        One row per single-unit lesion: its AES and class changes summary.
    layer_nh : DataFrame
        ``layer``, ``intact``, ``lesioned``: NH (k = 6) of each panel of Figures 3 and 4.
    shown_lesion : str
        Key of the conv1 lesion of Figure 4.
    shown_changes : Series
        Its class-specific accuracy changes (index: class names and ``all``).
    embed_samples : ndarray of int
        The test images embedded (indices into the evaluation split).
    """

    dataset: str
    config: dict[str, Any]
    run: Run
    accuracy: float
    layer_effects: pd.DataFrame
    classes: pd.DataFrame
    error_vs_drop: Correlation
    as_vs_nh: Correlation
    aes_vs_nh: Correlation
    neurons: pd.DataFrame
    units: pd.DataFrame
    layer_nh: pd.DataFrame
    shown_lesion: str
    shown_changes: pd.Series
    embed_samples: np.ndarray


def run_meyes2020_cnn(
    out: str | Path,
    *,
    dataset: str,
    data_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    epochs: int = 100,
    seed: int = 0,
    draws: int = 100,
    fractions: Sequence[float] = (0.5,),
    embed_samples: int = 2000,
    limit: int | None = None,
    train_limit: int | None = None,
    width: int = 64,
    engine: EngineConfig | None = None,
    progress: bool = False,
) -> Meyes2020Result:
    """Reproduce Meyes et al. (2020) on one dataset; see the module docstring for the stages.

    The inputs are loaded and checked before ``out`` is claimed; a rerun continues the sweep and
    reads finished captures and embeddings back.

    Parameters
    ----------
    out : path
        The study directory (created; rerun into it to resume).
    dataset : {"mnist", "fashion-mnist", "kmnist"}
    data_dir : path, optional
        Where the IDX files are (default ``$LESION_DATA_DIR``).
    checkpoint : path, optional
        A trained ``meyes2020-cnn`` (lesion checkpoint or state dict); default: train one.
    epochs : int, default=100
        Training epochs (the paper's 100; SGD lr 0.001, momentum 0.9, batch 64).
    seed : int, default=0
        Seeds training, the random draws, the embedded subset and UMAP.
    draws : int, default=100
        Random draws per layer and fraction.
    fractions : sequence of float, default=(0.5,)
        Proportions of each layer lesioned (the paper reports 0.5; it also tried 0.1-0.4).
    embed_samples : int, default=2000
        Test images embedded in the horizontal and vertical reductions (a seeded subset).
    limit : int, optional
        Evaluate on the first ``limit`` test images only (for quick runs).
    train_limit : int, optional
        Train on the first ``train_limit`` training images only (for quick runs).
    width : int, default=64
        Channels of each conv layer (the paper's 64).
    engine : EngineConfig, optional
        How the sweep runs (device, precision, memory, batch size); default `EngineConfig()`.
        The captures and embeddings run on the CPU.
    progress : bool, default=False
        Progress bars on stderr.

    Returns
    -------
    Meyes2020Result
    """
    config = _config(dataset, checkpoint, epochs, seed, draws, fractions, embed_samples, limit, train_limit, width)
    data = _dataset(config, data_dir)
    given = None if checkpoint is None else _given_model(checkpoint, config)
    study = StudyDir(out, STUDY, {key: value for key, value in config.items() if key != "embed_samples"}).claim()
    model = given if given is not None else _trained_model(study, data, progress)
    split = data.test.head(limit)
    with study.stage("sweep", resumable=True):
        run = _sweep(model, split, config, study.path("lesions"), engine or EngineConfig(), progress)
    activations = _capture(study, "capture", model, split, "intact.npy", progress=progress)
    with study.stage("selectivity"):
        tables = _selectivity(run, activations, split, config)
    samples = _embed_subset(len(split), config)
    shown = _shown_lesion(run, config)
    labels = split.labels.numpy()[samples]
    intact_maps = study.cached(
        "horizontal reduction", f"embeddings/horizontal-intact-n{len(samples)}.npz",
        lambda: _horizontal(activations.values[samples], activations, split, samples, seed),
    )
    lesioned_activations = _capture(
        study, "horizontal reduction", model, split.subset(torch.as_tensor(samples)), f"lesioned-n{len(samples)}.npy",
        lesion=shown, progress=progress,
    )
    lesioned_maps = study.cached(
        "horizontal reduction", f"embeddings/horizontal-lesioned-n{len(samples)}.npz",
        lambda: _horizontal(lesioned_activations.values, activations, split, samples, seed),
    )
    neuron_map = study.cached("vertical reduction", f"embeddings/vertical-n{len(samples)}.npy", lambda: _vertical(activations, samples, seed))
    layer_nh = _layer_nh(intact_maps, lesioned_maps, labels)
    classes, correlations = _class_table(run, tables, intact_maps, labels, config)
    result = Meyes2020Result(
        out=study.out,
        dataset=dataset,
        config=config,
        run=run,
        accuracy=float(run.table("top1").loc["intact", "all"]),
        layer_effects=tables["effects"],
        classes=classes,
        error_vs_drop=correlations[0],
        as_vs_nh=correlations[1],
        aes_vs_nh=correlations[2],
        neurons=tables["neurons"],
        units=tables["units"],
        layer_nh=layer_nh,
        shown_lesion=shown.key,
        shown_changes=class_changes(run, [shown.key]).iloc[0],
        embed_samples=samples,
    )
    for name in ("layer_effects", "classes", "neurons", "units", "layer_nh"):
        study.write_table(name, getattr(result, name))
    with study.stage("figures"):
        draw_figures(study, result, intact_maps, lesioned_maps, neuron_map, activations, split)
    write_summary(study, result)
    return replace(result, **study.files())


# --- configuration and resumption ---------------------------------------------------------


def _config(
    dataset: str,
    checkpoint: str | Path | None,
    epochs: int,
    seed: int,
    draws: int,
    fractions: Sequence[float],
    embed_samples: int,
    limit: int | None,
    train_limit: int | None,
    width: int,
) -> dict[str, Any]:
    """The checked settings; ``embed_samples`` is not part of the directory's identity (see `_claim`)."""
    if dataset not in DATASETS:
        raise LesionError(f"dataset must be one of {DATASETS}, got {dataset!r}{closest(str(dataset), DATASETS)}")
    for name, value, low in (
        ("epochs", epochs, 1), ("seed", seed, 0), ("draws", draws, 1), ("embed_samples", embed_samples, 10), ("width", width, 1)
    ):
        check_int(name, value, low)
    for name, optional in (("limit", limit), ("train_limit", train_limit)):
        if optional is not None:
            check_int(name, optional, 1)
    fractions = [float(p) for p in fractions]
    if not fractions or any(not 0 < p <= 1 for p in fractions):
        raise LesionError(f"fractions must be proportions in (0, 1] (0.5 for 50 %), got {fractions}")
    return {
        "study": STUDY,
        "dataset": dataset,
        "checkpoint_sha256": None if checkpoint is None else file_sha256(Path(checkpoint), "checkpoint"),
        "epochs": None if checkpoint is not None else epochs,
        "train_limit": None if checkpoint is not None else train_limit,
        "width": width,
        "seed": seed,
        "draws": draws,
        "fractions": fractions,
        "limit": limit,
        "embed_samples": embed_samples,
    }


# --- stages -------------------------------------------------------------------------------


def _dataset(config: dict[str, Any], data_dir: str | Path | None) -> Dataset:
    """The dataset normalised as the paper's (N(0.5, 0.5)); with its train split when training."""
    if config["checkpoint_sha256"] is not None:
        return load_dataset(config["dataset"], data_dir, normalize="half", train=False)
    return _training_data(config["dataset"], data_dir, config["train_limit"])


def _given_model(checkpoint: str | Path, config: dict[str, Any]) -> nn.Module:
    """The CNN of ``checkpoint`` (a lesion checkpoint or a state dict of the given width)."""
    if "model" in load_checkpoint(checkpoint):
        return load_model(checkpoint=checkpoint)
    return load_model(MODEL, checkpoint, width=config["width"])


def _trained_model(study: StudyDir, data: Dataset, progress: bool) -> nn.Module:
    """The CNN trained with the paper's settings, saved as ``model.pt`` (read back on a rerun)."""
    study.cached("train", "model.pt", lambda: _train(data, study.identity, progress))
    return load_model(checkpoint=study.path("model.pt"))


def _training_data(name: str, data_dir: str | Path | None, train_limit: int | None) -> Dataset:
    """The dataset with its train split, or a `LesionError` naming the missing file and ``--checkpoint``."""
    from lesion.data._idx import _MissingFileError

    try:
        data = load_dataset(name, data_dir, normalize="half", require_train=True)
    except _MissingFileError as missing:
        raise LesionError(
            f"{name}: training the CNN needs the train split, which is not available here: {missing} "
            f"To run the study without training, pass --checkpoint FILE (checkpoint=) with a trained {MODEL}."
        ) from None
    train = data.train.head(train_limit) if data.train is not None else None
    return Dataset(data.name, data.test, train)


def _train(data: Dataset, config: dict[str, Any], progress: bool) -> dict[str, Any]:
    from lesion.train import PRESETS, train_model

    preset = PRESETS[MODEL]
    return train_model(
        MODEL, data, seed=config["seed"], epochs=config["epochs"], lr=preset["lr"], momentum=preset["momentum"],
        batch_size=preset["batch_size"], model_kwargs={"width": config["width"]}, progress=progress,
    )


def _sweep(model: nn.Module, split: Split, config: dict[str, Any], path: Path, engine: EngineConfig, progress: bool) -> Run:
    """Random draws of each layer and fraction, and every unit of conv1-fc2 alone."""
    plans = [
        fraction(model, list(LESION_LAYERS), config["fractions"], "random", seed=config["seed"], draws=config["draws"], name=FRACTION_PLAN),
        single(model, ";".join(NEURON_LAYERS), name=SINGLE_PLAN),
    ]
    study = {"study": STUDY, "seed": config["seed"], "draws": config["draws"], "fractions": config["fractions"]}
    return engine.sweep(model, split, plans, path, model_name=MODEL, config=study, progress=progress)


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits, dim=1)


def _capture(
    study: StudyDir, stage: str, model: nn.Module, split: Split, name: str, lesion: Lesion = INTACT, progress: bool = False
) -> Activations:
    """Activations of every layer (``out`` after log-softmax) of ``model`` with ``lesion``: ``activations/NAME``, cached."""
    path = study.path("activations", name)
    with study.stage(stage, cached=path.is_file(), resumable=True):
        if path.is_file():
            return load_activations(path)
        with lesioned(model, lesion):
            return capture_activations(model, split, CAPTURE_POINTS, path, transforms={"out": _log_softmax}, progress=progress)


def _selectivity(run: Run, activations: Activations, split: Split, config: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Layer effects, AS per neuron, AES per unit and both per neuron."""
    effects = layer_effects(run, FRACTION_PLAN)
    as_table = analysis.activation_selectivity(activations, split.labels.numpy(), split.n_classes, NEURON_LAYERS)
    units = unit_ablation_selectivity(run, SINGLE_PLAN)
    return {"effects": effects, "units": units, "neurons": analysis.neuron_table(as_table, units)}


def _embed_subset(n: int, config: dict[str, Any]) -> np.ndarray:
    """The embedded test images: a seeded random subset of ``embed_samples``, in split order."""
    size = min(config["embed_samples"], n)
    return np.sort(np.random.default_rng(config["seed"]).choice(n, size=size, replace=False))


def _shown_lesion(run: Run, config: dict[str, Any]) -> Lesion:
    """The first random draw of conv1 at the main fraction (Figure 4)."""
    p = main_fraction(config["fractions"])
    info = run.meta(f"plan:{FRACTION_PLAN}")
    units = next(u for layer, fr, draw, u in info["draws"] if layer == "conv1" and fr == p and draw == 0)
    return Lesion((("conv1", tuple(units)),))


def _horizontal(
    rows: np.ndarray, activations: Activations, split: Split, samples: np.ndarray, seed: int
) -> dict[str, np.ndarray]:
    """Horizontal reduction of the captured layers (``rows``: the embedded samples' activations) and the input."""
    from lesion.embed import horizontal_reduction

    raw = split.inputs[torch.as_tensor(samples)].reshape(len(samples), -1).numpy()
    layers = {name: np.asarray(rows[:, activations.slices[name]], dtype=np.float32) for name in activations.layers}
    return horizontal_reduction(layers, raw, seed=seed)


def _vertical(activations: Activations, samples: np.ndarray, seed: int) -> np.ndarray:
    """Vertical reduction of the 17,280 neurons over the embedded samples."""
    from lesion.embed import vertical_reduction

    stop = activations.slices[NEURON_LAYERS[-1]].stop
    return vertical_reduction(np.asarray(activations.values[samples, :stop], dtype=np.float32), seed=seed)


def _layer_nh(intact: dict[str, np.ndarray], damaged: dict[str, np.ndarray], labels: np.ndarray) -> pd.DataFrame:
    from lesion.embed import neighbourhood_hit

    return pd.DataFrame(
        {
            "layer": list(intact),
            "intact": [neighbourhood_hit(intact[name], labels, NH_NEIGHBOURS) for name in intact],
            "lesioned": [neighbourhood_hit(damaged[name], labels, NH_NEIGHBOURS) for name in intact],
        }
    )


def _class_table(
    run: Run, tables: dict[str, pd.DataFrame], maps: dict[str, np.ndarray], labels: np.ndarray, config: dict[str, Any]
) -> tuple[pd.DataFrame, tuple[Correlation, Correlation, Correlation]]:
    """Per class: accuracy, error, drop, selective-neuron counts and NH; and the three correlations."""
    from lesion.embed import INPUT, neighbourhood_hit_per_class
    from lesion.stats import correlate

    names = list(run.class_names)
    intact = run.table("top1").loc["intact", names]
    drops = class_drops(tables["effects"], main_fraction(config["fractions"]))
    counts = analysis.selective_counts(tables["neurons"], names)
    nh = neighbourhood_hit_per_class(maps[INPUT], labels, NH_NEIGHBOURS).set_index("class")["neighbourhood_hit"]
    classes = counts.assign(
        accuracy=intact.to_numpy(),
        error=1 - intact.to_numpy(),
        drop=-drops.loc[names, "total"].to_numpy(),
        nh=nh.reindex(range(len(names))).to_numpy(),
    )[["class", "class_name", "accuracy", "error", "drop", "n_as", "n_aes", "n_aes_negative", "n_aes_positive", "nh"]]
    correlations = (
        analysis.error_vs_drop(intact, drops.loc[names, "total"]),
        correlate(classes["n_as"], classes["nh"]),
        correlate(classes["n_aes"], classes["nh"]),
    )
    return classes, correlations


__all__ = ["CAPTURE_POINTS", "LESION_LAYERS", "NEURON_LAYERS", "Meyes2020Result", "run_meyes2020_cnn"]
