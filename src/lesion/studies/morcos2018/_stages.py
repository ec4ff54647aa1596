"""The study of Morcos et al. (2018), "On the importance of single directions for generalization".

``run_morcos2018(out, size=...)`` trains networks on labels of which a fraction is randomised
(seeded; an MLP on MNIST and the 2020 CNN on Fashion-MNIST, each on a seeded training subset small
enough to be memorised), in training variants (plain, batch norm, dropout), and then, into ``out``:

1. **Cumulative ablation** of the hidden units (pooled over the ablated layers; at the batch
   norm's output in BN variants) in random orders (several seeds), by class selectivity and by
   the incoming weights' L1 norm (each high→low and low→high), with zero and with mean ablation
   (the means over the training subset), evaluated on the training subset (with the labels
   trained on) and on the test subset: every step of every curve is one lesion of one sweep.
2. **Areas** under each curve (raw and relative to the intact accuracy), their correlation with the
   generalisation gap (train − test accuracy) across networks, and each attribute order against
   random (paired over networks).
3. **Noise**: Gaussian noise added to the same units after their ReLU, scaled by each unit's
   activation std on the training subset, at increasing scales.

Training: Adam, lr 0.001, batch 64 (memorising random labels within a few dozen epochs on this
machine). Selectivity is measured on the test subset with its true labels. Every stage is cached
or resumable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesion._errors import LesionError, check_int, closest
from lesion._lesion import unit_means
from lesion.attributes import selectivity, weight_norms
from lesion.data import Dataset, Split, load_dataset
from lesion.noise import noise_curve, unit_std
from lesion.plans import cumulative, curves
from lesion.studies._engine import EngineConfig
from lesion.studies._study import StudyDir, StudyResult
from lesion.studies._variants import (
    VARIANTS,
    Network,
    activation_class_means,
    train_networks,
    unit_points,
)
from lesion.studies.morcos2018 import _analysis as analysis
from lesion.studies.morcos2018 import _report as report
from lesion.train import corrupt_labels, seeded_subset

STUDY = "morcos2018"
ARCHITECTURES = {"mlp": ("meyes2019-mlp", "mnist"), "cnn": ("meyes2020-cnn", "fashion-mnist")}
ABLATED = ("fc1", "fc2")
METHODS = ("zero", "mean")
#: Study sizes: ``default`` (chosen from the small runs' per-network times to fit the 60-minute budget on
#: the 2-core machine; not yet timed) and ``small`` (smoke runs; the tests use it on digits).
SIZES: dict[str, dict[str, Any]] = {
    "default": {"architectures": ("mlp", "cnn"), "fractions": (0.0, 0.2, 0.4, 0.6, 0.8, 1.0), "variants": ("plain", "bn", "dropout"),
                "seeds": (0,), "train_samples": 1_000, "eval_samples": 1_000, "mlp_hidden": 64, "cnn_width": 4,
                "cnn_hidden": 32, "epochs": 100, "steps": 16, "orders": (0, 1, 2), "noise_scales": (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
                "noise_repeats": 2},
    "small": {"architectures": ("mlp", "cnn"), "fractions": (0.0, 0.5, 1.0), "variants": ("plain", "bn"), "seeds": (0,),
              "train_samples": 500, "eval_samples": 500, "mlp_hidden": 32, "cnn_width": 4, "cnn_hidden": 32, "epochs": 30,
              "steps": 8, "orders": (0, 1), "noise_scales": (0.0, 1.0, 4.0), "noise_repeats": 1},
}
RECIPE = {"optimizer": "adam", "lr": 0.001, "momentum": 0.0, "batch_size": 64}


@dataclass(frozen=True, kw_only=True)
class Morcos2018Result(StudyResult):
    """The study's tables (also under ``out/tables``).

    Attributes
    ----------
    config : dict
    networks : DataFrame
        One row per network: architecture, variant, seed, label_noise, train_acc (on the labels
        trained on), test_acc, gap.
    curves : DataFrame
        One row per (network, split, method, curve, step): ``k``, ``fraction``, ``value`` (top-1).
    areas, gap_relation, order_tests, noise : DataFrame
        See `_analysis`; ``noise`` holds one row per (network, split, scale, repeat).
    """

    config: dict[str, Any] = field(default_factory=dict)
    networks: pd.DataFrame = field(default_factory=pd.DataFrame)
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)
    areas: pd.DataFrame = field(default_factory=pd.DataFrame)
    gap_relation: pd.DataFrame = field(default_factory=pd.DataFrame)
    order_tests: pd.DataFrame = field(default_factory=pd.DataFrame)
    noise: pd.DataFrame = field(default_factory=pd.DataFrame)


def check_config(*, size: str, dataset: str | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The study's settings, checked; ``dataset`` replaces every architecture's own."""
    if size not in SIZES:
        raise LesionError(f"size must be one of {sorted(SIZES)}, got {size!r}{closest(size, SIZES)}")
    config: dict[str, Any] = {"study": STUDY, "size": size, **SIZES[size], "recipe": RECIPE, "ablated": list(ABLATED)}
    for key, value in overrides.items():
        if value is not None:
            config[key] = value
    for arch in config["architectures"]:
        if arch not in ARCHITECTURES:
            raise LesionError(f"architectures must be some of {sorted(ARCHITECTURES)}, got {arch!r}{closest(arch, ARCHITECTURES)}")
    for variant in config["variants"]:
        if variant not in VARIANTS:
            raise LesionError(f"variants must be some of {sorted(VARIANTS)}, got {variant!r}{closest(variant, VARIANTS)}")
    for fraction in config["fractions"]:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            raise LesionError(f"fractions must be label-noise fractions in [0, 1], got {fraction!r}")
    config["epochs"] = check_int("epochs", config["epochs"], 1)
    config["seeds"] = [check_int("seeds", s, 0) for s in config["seeds"]]
    config["datasets"] = {arch: dataset or ARCHITECTURES[arch][1] for arch in config["architectures"]}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def run_morcos2018(
    out: str | Path,
    *,
    size: str = "default",
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    architectures: Sequence[str] | None = None,
    fractions: Sequence[float] | None = None,
    variants: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    epochs: int | None = None,
    engine: EngineConfig | None = None,
    progress: bool = False,
) -> Morcos2018Result:
    """Run the study into ``out`` (see the module docstring); rerun into it to resume.

    Parameters
    ----------
    size : {"default", "small"}
        Networks, subsets, epochs, steps, orders and noise scales (:data:`SIZES`).
    dataset : str, optional
        One dataset for every architecture (``digits`` for quick runs); default MNIST for the MLP
        and Fashion-MNIST for the CNN.
    architectures, fractions, variants, seeds, epochs : override the size's.
    """
    config = check_config(size=size, dataset=dataset, overrides={
        "architectures": architectures, "fractions": fractions, "variants": variants, "seeds": seeds, "epochs": epochs})
    datasets = {arch: _load(name, data_dir, config) for arch, name in config["datasets"].items()}
    study = StudyDir(out, STUDY, config).claim()
    engine = engine or EngineConfig()
    network_rows, curve_rows, noise_rows = [], [], []
    for arch in config["architectures"]:
        data = datasets[arch]
        specs = [_spec(arch, variant, fraction, seed, data, config)
                 for variant in config["variants"] for fraction in config["fractions"] for seed in config["seeds"]]
        for network in train_networks(study, specs, data, progress=progress):
            row, network_curves, network_noise = _probe(study, network, data, config, engine, progress)
            network_rows.append({"architecture": arch, **row})
            curve_rows.append(network_curves)
            noise_rows.append(network_noise)
    with study.stage("analysis"):
        networks = pd.DataFrame(network_rows)
        curve_table = pd.concat(curve_rows, ignore_index=True)
        noise = pd.concat(noise_rows, ignore_index=True)
        areas = analysis.curve_areas(curve_table)
        noise_area = analysis.noise_areas(noise)
        relation = analysis.gap_relation(networks, areas, ["architecture"])
        noise_relation = analysis.gap_relation(
            networks, noise_area.assign(method="noise", curve="random", auc=noise_area["noise_auc"], auc_relative=noise_area["noise_auc"]),
            ["architecture"]).query("measure == 'auc'")
        relation = pd.concat([relation, noise_relation], ignore_index=True)
        orders = analysis.order_tests(areas)
        for name, frame in (("networks", networks), ("curves", curve_table), ("areas", areas), ("gap_relation", relation),
                            ("order_tests", orders), ("noise", noise), ("noise_areas", noise_area)):
            study.write_table(name, frame)
    with study.stage("figures"):
        report.figures(study, networks, curve_table, areas, noise, config)
    study.write_summary(report.summary(config, networks, areas, relation, orders, study.timings,
                                       next(iter(datasets.values())).test.n_classes))
    return Morcos2018Result(**study.files(), config=config, networks=networks, curves=curve_table, areas=areas,
                            gap_relation=relation, order_tests=orders, noise=noise)


def _load(name: str, data_dir: str | Path | None, config: Mapping[str, Any]) -> Dataset:
    data = load_dataset(name, data_dir)
    if data.train is None:
        raise LesionError(f"dataset {name!r} has no train split here; the study trains its networks")
    return Dataset(data.name, seeded_subset(data.test, config["eval_samples"], 0), seeded_subset(data.train, config["train_samples"], 0))


def _spec(arch: str, variant: str, fraction: float, seed: int, data: Dataset, config: Mapping[str, Any]) -> dict[str, Any]:
    shape = data.test.input_shape
    if arch == "mlp":
        kwargs: dict[str, Any] = {"in_features": int(np.prod(shape)), "hidden": [config["mlp_hidden"]] * 2}
    else:
        kwargs = {"in_channels": shape[0], "image_size": shape[-1], "width": config["cnn_width"], "hidden": config["cnn_hidden"]}
    return {"name": f"{arch}-{variant}-noise{fraction:g}-seed{seed}", "variant": variant, "seed": seed,
            "model": ARCHITECTURES[arch][0], "model_kwargs": {**kwargs, **VARIANTS[variant]}, "epochs": config["epochs"],
            "label_noise": float(fraction), "label_noise_seed": seed, **RECIPE}


def _probe(
    study: StudyDir, network: Network, data: Dataset, config: Mapping[str, Any], engine: EngineConfig, progress: bool
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Cumulative ablation curves and noise curves of one network, on the training and test subsets."""
    model = network.model
    points = unit_points(model, ABLATED)
    lesion_points = {layer: p for layer, (p, _) in points.items()}
    include = [p for p in lesion_points.values() if p not in ABLATED]
    train = _trained_on(data.train, network)  # type: ignore[arg-type]
    with study.stage("attributes"):
        means = activation_class_means(model, data.test, {layer: act for layer, (_, act) in points.items()})
        csi = {lesion_points[layer]: selectivity(unit)["selectivity"].to_numpy() for layer, (unit, _) in means.items()}
        l1 = {lesion_points[layer]: weight_norms(getattr(model, layer).weight.detach())["l1"].to_numpy() for layer in ABLATED}
        fill = unit_means(model, list(lesion_points.values()), train.batches(1024))
    total = sum(len(v) for v in csi.values())
    step = -(-total // config["steps"])
    plans = [cumulative(model, ";".join(lesion_points.values()), step=step, seeds=config["orders"], attributes={"csi": csi, "l1": l1},
                        method=method, name=f"cumulative-{method}", include=include) for method in METHODS]
    frames: list[pd.DataFrame] = []
    row: dict[str, Any] = {"network": network.name, "variant": network.variant, "seed": network.seed, "label_noise": network.label_noise}
    for split_name, split in (("train", train), ("test", data.test)):
        with study.stage("sweep", resumable=True):
            run = engine.sweep(model, split, plans, study.path("lesions", network.name, split_name), model_name=network.name,
                               means=fill, config={"network": network.name, "split": split_name}, progress=progress)
        table = run.table("top1")
        row[f"{split_name}_acc"] = float(table.loc["intact", "all"])
        for plan, method in zip(plans, METHODS, strict=True):
            frames.append(curves(plan, table).assign(network=network.name, split=split_name, method=method))
    row["gap"] = row["train_acc"] - row["test_acc"]
    with study.stage("noise"):
        activation_points = [act for _, act in points.values()]
        std = unit_std(model, activation_points, train)
        noise = pd.concat([
            noise_curve(model, split, std, config["noise_scales"], seed=network.seed, repeats=config["noise_repeats"]).assign(split=name)
            for name, split in (("train", train), ("test", data.test))
        ], ignore_index=True).assign(network=network.name)
    return row, pd.concat(frames, ignore_index=True), noise


def _trained_on(split: Split, network: Network) -> Split:
    """The training subset with the labels the network was trained on (its corrupted labels)."""
    if not network.label_noise:
        return split
    labels, _ = corrupt_labels(split.labels, network.label_noise, split.n_classes, network.seed)
    return replace(split, name=f"{split.name}+noise{network.label_noise:g}", labels=labels)


