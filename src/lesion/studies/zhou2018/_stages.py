"""The study of Zhou et al. (2018), "Revisiting the importance of individual units in CNNs via ablation".

``run_zhou2018(out, size=...)`` trains the 2020 CNN and a small VGG-11 (28 px greyscale, conv
widths divided, torchvision's keys) in four variants (plain, batch norm, dropout, both) with
several seeds, and then, into the directory ``out``:

1. **Single-unit lesions** of every unit of every network's hidden layers (the CNN's ``conv1
   conv2 conv3 fc1 fc2``; the VGG's eight convs ``conv1``-``conv8`` = ``features.*`` and its
   hidden Linears ``fc1 fc2`` = ``classifier.0/3``) (zero method, at the batch norm's output in
   the BN variants): the drop of overall and of each class's top-1 accuracy.
2. **Unit attributes** from the activations on the evaluation split: the class selectivity index
   (CSI) of each unit's spatially averaged activation after ReLU/pooling, the 2020 paper's AS
   (per neuron, averaged over the unit's positions), the L1 norm of its incoming weights, and
   the class-specific selectivity of every (unit, class) pair.
3. **Predictors**: Pearson and Spearman correlations with 95 % CIs of each attribute with the
   overall drop and with class-specific drops, per variant and layer.
4. **Variants**: per network, the distribution of the largest class drop of its units and how
   many units drop some class by more than 10 pp; each variant against plain across seeds.
5. **Random rotation** of the representation after each layer of ``rotate`` (a seeded Haar
   orthogonal Q; the next layer takes Qᵀ; the rotated network's predictions are checked against
   the original's on the evaluation split), its directions lesioned as units, compared with the
   unit basis. A direction's activation takes both signs, so its selectivity is that of its
   magnitude ``|z|`` (after a ReLU, a unit's magnitude is its activation: the same measure).
   The VGG's last conv (``conv8``) is not rotated: the layer that would undo the rotation is in
   ``classifier``, another container than ``features`` (:func:`lesion.rotation.rotate`).

Networks are trained with Adam (lr 0.001, batch 64) on a seeded training subset;
every stage is cached or resumable, so rerunning into ``out`` continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lesion._errors import LesionError, check_int, closest
from lesion.data import Dataset, load_dataset
from lesion.models._vgg import vgg_conv_layers
from lesion.rotation import rotate
from lesion.studies._engine import EngineConfig
from lesion.studies._study import StudyDir, StudyResult
from lesion.studies._variants import (
    ARCHITECTURES,
    VARIANTS,
    Network,
    activation_class_means,
    class_drops,
    single_plan,
    train_networks,
    unit_points,
    variant_model,
)
from lesion.studies.zhou2018 import _analysis as analysis
from lesion.studies.zhou2018 import _report as report
from lesion.train import seeded_subset

STUDY = "zhou2018"
#: Layers lesioned, by the names the tables use; the VGG's map to its modules in `layer_modules`.
LAYERS = {"cnn": ("conv1", "conv2", "conv3", "fc1", "fc2"),
          "vgg": (*(f"conv{i}" for i in range(1, 9)), "fc1", "fc2")}
DATASETS = ("fashion-mnist", "mnist", "digits")
#: Study sizes, each with its architectures' defaults (``architectures``) and per architecture the
#: network sizes, epochs, seeds and rotated layers: ``default`` (sized from per-sample training
#: times measured on the 2-core machine to fit the 60-minute budget; see docs/reproduction.md) and
#: ``small`` (smoke runs; the tests use its CNN on digits and its VGG on synthetic 28 px images).
SIZES: dict[str, dict[str, Any]] = {
    "default": {"train_samples": 5_000, "eval_samples": 2_000, "architectures": ("cnn", "vgg"),
                "cnn": {"width": 16, "hidden": 64, "epochs": 8, "seeds": (0, 1, 2), "rotate": ("conv3", "fc1")},
                "vgg": {"width_divisor": 8, "classifier_width": 64, "epochs": 16, "seeds": (0, 1, 2), "rotate": ("conv7", "fc1")}},
    "small": {"train_samples": 2_000, "eval_samples": 500, "architectures": ("cnn",),
              "cnn": {"width": 8, "hidden": 32, "epochs": 5, "seeds": (0, 1), "rotate": ("fc1",)},
              "vgg": {"width_divisor": 16, "classifier_width": 32, "epochs": 5, "seeds": (0, 1), "rotate": ("conv7", "fc1")}},
}
_SIZE_KEYS = {"cnn": ("width", "hidden"), "vgg": ("width_divisor", "classifier_width")}
#: Adam: plain SGD (lr 0.01) left the small plain and dropout CNNs at chance after 5 epochs.
RECIPE = {"optimizer": "adam", "lr": 0.001, "momentum": 0.0, "batch_size": 64}


@dataclass(frozen=True, kw_only=True)
class Zhou2018Result(StudyResult):
    """The study's tables (also under ``out/tables``).

    Attributes
    ----------
    config : dict
        Settings; ``config["architectures"][arch]`` holds each architecture's sizes, epochs, seeds, layers, rotated layers.
    networks : DataFrame
        Per network and basis: accuracies and drop summaries (`_analysis.network_summary`).
    units : DataFrame
        One row per (network, basis, unit): attributes and drops (`_analysis.unit_table`).
    predictors : DataFrame
        Correlations with CIs (`_analysis.predictors`).
    variant_tests, rotation_tests : DataFrame
    rotation_max_error : float
        Largest |logit difference| between a rotated network and its original on the evaluation split.
    """

    config: dict[str, Any] = field(default_factory=dict)
    networks: pd.DataFrame = field(default_factory=pd.DataFrame)
    units: pd.DataFrame = field(default_factory=pd.DataFrame)
    predictors: pd.DataFrame = field(default_factory=pd.DataFrame)
    variant_tests: pd.DataFrame = field(default_factory=pd.DataFrame)
    rotation_tests: pd.DataFrame = field(default_factory=pd.DataFrame)
    rotation_max_error: float = 0.0


def check_config(
    *, dataset: str, size: str, variants: Sequence[str], seeds: Sequence[int] | None, epochs: int | None,
    rotation_seed: int, architectures: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The study's settings, checked (`LesionError` names the bad one); the directory's identity.

    ``architectures`` default: the size's (the CNN only on digits, whose 8 px images are too
    small for the VGG); ``seeds`` and ``epochs`` override every architecture's.
    """
    if dataset not in DATASETS:
        raise LesionError(f"dataset must be one of {DATASETS}, got {dataset!r}{closest(dataset, DATASETS)}")
    if size not in SIZES:
        raise LesionError(f"size must be one of {sorted(SIZES)}, got {size!r}{closest(size, SIZES)}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise LesionError(f"variants must name some of {sorted(VARIANTS)}, got {list(variants)}")
    sized = SIZES[size]
    if architectures is None:
        architectures = [a for a in sized["architectures"] if not (dataset == "digits" and a == "vgg")]
    wrong = [a for a in architectures if a not in ARCHITECTURES]
    if wrong or not architectures:
        raise LesionError(f"architectures must name some of {list(ARCHITECTURES)}, got {list(architectures)}"
                          f"{closest(wrong[0], ARCHITECTURES) if wrong else ''}")
    if dataset == "digits" and "vgg" in architectures:
        raise LesionError("architectures: the VGG needs images of at least 16 px; digits has 8 px. Use --dataset "
                          "fashion-mnist or mnist, or --architecture cnn")
    per_architecture = {}
    for architecture in dict.fromkeys(architectures):
        settings = dict(sized[architecture])
        if seeds is not None:
            settings["seeds"] = [check_int("seeds", s, 0) for s in seeds]
        if epochs is not None:
            settings["epochs"] = check_int("epochs", epochs, 1)
        settings["seeds"], settings["rotate"] = list(settings["seeds"]), list(settings["rotate"])
        settings["layers"] = list(LAYERS[architecture])
        per_architecture[architecture] = settings
    return {"study": STUDY, "dataset": dataset, "size": size, "train_samples": sized["train_samples"],
            "eval_samples": sized["eval_samples"], "architectures": per_architecture, "variants": list(variants),
            "recipe": RECIPE, "rotation_seed": check_int("rotation_seed", rotation_seed, 0)}


def layer_modules(architecture: str, model: torch.nn.Module) -> dict[str, str]:
    """The lesioned layers' table names -> module names (``conv3`` -> ``features.8`` in ``vgg11_bn``)."""
    if architecture == "cnn":
        return {layer: layer for layer in LAYERS["cnn"]}
    convs = vgg_conv_layers(model)
    return dict(zip(LAYERS["vgg"], [*convs, "classifier.0", "classifier.3"], strict=True))


def load_data(config: dict[str, Any], data_dir: str | Path | None) -> Dataset:
    """The dataset with its seeded training and evaluation subsets."""
    data = load_dataset(config["dataset"], data_dir)
    if data.train is None:
        raise LesionError(f"dataset {config['dataset']!r} has no train split here; the study trains its networks")
    return Dataset(data.name, seeded_subset(data.test, config["eval_samples"], 0), seeded_subset(data.train, config["train_samples"], 0))


def run_zhou2018(
    out: str | Path,
    *,
    dataset: str = "fashion-mnist",
    data_dir: str | Path | None = None,
    size: str = "default",
    variants: Sequence[str] = tuple(VARIANTS),
    architectures: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    epochs: int | None = None,
    rotation_seed: int = 0,
    engine: EngineConfig | None = None,
    progress: bool = False,
) -> Zhou2018Result:
    """Run the study into ``out`` (see the module docstring); rerun into it to resume.

    Parameters
    ----------
    dataset : {"fashion-mnist", "mnist", "digits"}
    size : {"default", "small"}
        Network sizes, training and evaluation subsets, epochs, seeds, rotated layers (:data:`SIZES`).
    variants : names of `lesion.studies._variants.VARIANTS`
    architectures : some of {"cnn", "vgg"}, optional
        Default: the size's (``default``: both; ``small``: the CNN); never the VGG on digits.
    seeds, epochs : override every architecture's.
    rotation_seed : int
        Seeds Q (plus the network's seed).
    engine : EngineConfig, optional
    """
    config = check_config(dataset=dataset, size=size, variants=variants, seeds=seeds, epochs=epochs, rotation_seed=rotation_seed,
                          architectures=architectures)
    data = load_data(config, data_dir)
    study = StudyDir(out, STUDY, config).claim()
    specs = [_spec(architecture, settings, variant, seed, data)
             for architecture, settings in config["architectures"].items()
             for variant in config["variants"] for seed in settings["seeds"]]
    networks = train_networks(study, specs, data, progress=progress)
    engine = engine or EngineConfig()
    unit_rows, pair_rows, accuracy_rows, rotation_error = [], [], [], 0.0
    for spec, network in zip(specs, networks, strict=True):
        architecture = spec["architecture"]
        settings = config["architectures"][architecture]
        units, pairs, accuracy = _unit_basis(study, network, architecture, spec["model"], data, engine, progress)
        unit_rows.append(units)
        pair_rows.append(pairs)
        accuracy_rows.append({"network": network.name, "train_acc": network.history[-1]["train_acc"], "test_acc": accuracy})
        for layer in settings["rotate"]:
            units, pairs, error = _rotated_basis(study, network, architecture, spec["model"], layer, data, config, engine, progress)
            unit_rows.append(units)
            pair_rows.append(pairs)
            rotation_error = max(rotation_error, error)
    with study.stage("analysis"):
        units = pd.concat(unit_rows, ignore_index=True)
        pairs = pd.concat(pair_rows, ignore_index=True)
        summary = analysis.network_summary(units).merge(pd.DataFrame(accuracy_rows), on="network")
        predictors = analysis.predictors(units, pairs)
        variant_tests = analysis.variant_tests(summary)
        rotation_tests = analysis.rotation_tests(units, {a: s["rotate"] for a, s in config["architectures"].items()})
        for name, frame in (("units", units), ("networks", summary), ("predictors", predictors),
                            ("variant_tests", variant_tests), ("rotation_tests", rotation_tests)):
            study.write_table(name, frame)
    with study.stage("figures"):
        report.figures(study, units, predictors, config)
    study.write_summary(report.summary(config, summary, predictors, variant_tests, rotation_tests, rotation_error, study.timings,
                                       data.test.n_classes))
    return Zhou2018Result(**study.files(), config=config, networks=summary, units=units, predictors=predictors,
                          variant_tests=variant_tests, rotation_tests=rotation_tests, rotation_max_error=rotation_error)


def _spec(architecture: str, settings: dict[str, Any], variant: str, seed: int, data: Dataset) -> dict[str, Any]:
    """What `train_networks` trains for one (architecture, variant, seed): the variant is in the model's name and arguments."""
    image = data.test.input_shape
    sizes = {key: settings[key] for key in _SIZE_KEYS[architecture]}
    if architecture == "vgg":
        sizes["n_classes"] = data.test.n_classes
    model, kwargs = variant_model(architecture, variant, in_channels=image[0], image_size=image[-1], **sizes)
    return {"name": f"{architecture}-{variant}-seed{seed}", "architecture": architecture, "variant": variant, "seed": seed,
            "model": model, "epochs": settings["epochs"], "model_kwargs": kwargs, **RECIPE}


def _unit_basis(
    study: StudyDir, network: Network, architecture: str, model_name: str, data: Dataset, engine: EngineConfig, progress: bool
) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    model = network.model
    modules = layer_modules(architecture, model)
    by_module = unit_points(model, list(modules.values()))
    points = {layer: by_module[module] for layer, module in modules.items()}
    n_units = {layer: _width(model, module) for layer, module in modules.items()}
    plan = single_plan(model, {layer: lesion for layer, (lesion, _) in points.items()}, n_units)
    with study.stage("sweep", resumable=True):
        run = engine.sweep(model, data.test, plan, study.path("lesions", network.name), model_name=model_name,
                           config={"network": network.name}, progress=progress)
    table = run.table("top1")
    with study.stage("attributes"):
        means = activation_class_means(model, data.test, {layer: act for layer, (_, act) in points.items()})
    weights = {layer: _weight(model, module) for layer, module in modules.items()}
    drops = class_drops(table, plan.info["units"], data.class_names)
    units = analysis.unit_table(drops, means, weights, data.class_names)
    pairs = analysis.pair_table(units, means, data.class_names)
    return _tag(units, network, architecture, "unit"), _tag(pairs, network, architecture, "unit"), float(table.loc["intact", "all"])


def _rotated_basis(
    study: StudyDir, network: Network, architecture: str, model_name: str, layer: str, data: Dataset, config: dict[str, Any],
    engine: EngineConfig, progress: bool,
) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    module = layer_modules(architecture, network.model)[layer]
    rotated = rotate(network.model, module, seed=config["rotation_seed"] + network.seed)
    with torch.inference_mode():
        error = max(
            float((rotated.model(x) - network.model(x)).abs().max()) for x, _ in data.test.batches(1024)
        )
    if error > 1e-3:
        raise LesionError(f"the rotated {network.name} differs from the original by {error:g} in its logits (expected float rounding only)")
    n = len(rotated.q)
    plan = single_plan(rotated.model, {layer: rotated.layer}, {layer: n}, name="rotated")
    with study.stage("sweep", resumable=True):
        run = engine.sweep(rotated.model, data.test, plan, study.path("lesions", f"{network.name}-rotated-{layer}"),
                           model_name=model_name, config={"network": network.name, "rotated": layer}, progress=progress)
    with study.stage("attributes"):
        means = activation_class_means(rotated.model, data.test, {layer: rotated.layer}, absolute=True)
    drops = class_drops(run.table("top1"), plan.info["units"], data.class_names)
    units = analysis.unit_table(drops, means, None, data.class_names)
    pairs = analysis.pair_table(units, means, data.class_names)
    return _tag(units, network, architecture, "rotated"), _tag(pairs, network, architecture, "rotated"), error


def _width(model: torch.nn.Module, layer: str) -> int:
    return int(_weight(model, layer).shape[0])


def _weight(model: torch.nn.Module, layer: str) -> np.ndarray:
    """The incoming weights of a Linear/Conv layer, (units, ...)."""
    weight = model.get_submodule(layer).weight
    if not isinstance(weight, torch.Tensor):
        raise LesionError(f"layer {layer!r} has no weight tensor")
    return weight.detach().numpy()


def _tag(frame: pd.DataFrame, network: Network, architecture: str, basis: str) -> pd.DataFrame:
    return frame.assign(network=network.name, architecture=architecture, variant=network.variant, seed=network.seed, basis=basis)


