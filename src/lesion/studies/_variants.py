"""What the Zhou 2018 and Morcos 2018 studies share: networks in training variants, their units'
lesion and activation points, class means, and single-unit class drops.

A network's *units* are the output channels of its hidden Linear/Conv layers. Each is silenced
at its *lesion point* (the batch norm right after the layer when there is one, since zeroing a
layer's output before a batch norm does not silence the unit, else the layer itself) and read at
its *activation point* (the last unit-wise module before the next Linear/Conv/Flatten: after the
ReLU, pooling and dropout, where :func:`lesion.rotation.rotate` also inserts its rotation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from lesion._errors import LesionError
from lesion._lesion import Lesion
from lesion._units import sequential_child
from lesion.attributes import ClassMeanAccumulator
from lesion.data import Dataset, Split
from lesion.models import build_model, load_checkpoint
from lesion.plans import Plan
from lesion.studies._study import StudyDir
from lesion.train import train_model

#: Variants by name: model factory arguments (Zhou et al. 2018 use dropout 0.5).
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "bn": {"batch_norm": True},
    "dropout": {"dropout": 0.5},
    "bn+dropout": {"batch_norm": True, "dropout": 0.5},
}
#: Architectures of the variant studies: the 2020 CNN, and VGG-11 (``vgg11``/``vgg11_bn``, torchvision keys).
ARCHITECTURES = ("cnn", "vgg")
_WEIGHTED = (nn.Linear, nn.Conv2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def variant_model(architecture: str, variant: str, **kwargs: Any) -> tuple[str, dict[str, Any]]:
    """Zoo name and factory arguments of ``architecture`` in training ``variant``.

    The CNN takes the variant's ``batch_norm``/``dropout`` as arguments; the VGG is ``vgg11_bn``
    with batch norm, else ``vgg11``, with the variant's classifier dropout (0 without dropout:
    the zoo VGG's own default is 0.5). ``kwargs``: the other factory arguments (sizes).

    >>> variant_model("vgg", "bn", width_divisor=8)
    ('vgg11_bn', {'width_divisor': 8, 'dropout': 0.0})
    """
    if architecture not in ARCHITECTURES:
        raise LesionError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    if variant not in VARIANTS:
        raise LesionError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    if architecture == "cnn":
        return "meyes2020-cnn", {**kwargs, **VARIANTS[variant]}
    settings = VARIANTS[variant]
    return ("vgg11_bn" if settings.get("batch_norm") else "vgg11"), {**kwargs, "dropout": float(settings.get("dropout", 0.0))}


@dataclass(frozen=True)
class Network:
    """A trained network of a study: its name, variant, seed, label noise, model (eval mode) and history."""

    name: str
    variant: str
    seed: int
    label_noise: float
    model: nn.Module
    history: list[dict[str, Any]]


def train_networks(
    study: StudyDir, specs: Sequence[Mapping[str, Any]], dataset: Dataset, *, progress: bool = False
) -> list[Network]:
    """Train (or read back from ``networks/NAME.pt``) one network per spec, timed as stage ``train``.

    Each spec holds ``name``, ``variant``, ``seed``, ``model``, ``model_kwargs`` (optionally
    ``architecture``, not passed on) and the keyword
    arguments of :func:`lesion.train.train_model` (``epochs``, ``lr``, ``momentum``,
    ``batch_size``, ``optimizer``, ``label_noise``, ``label_noise_seed``).
    """
    networks = []
    for spec in specs:
        path = Path("networks") / f"{spec['name']}.pt"
        arguments = {k: v for k, v in spec.items() if k not in ("name", "variant", "model", "architecture")}

        def fit(spec: Mapping[str, Any] = spec, arguments: dict[str, Any] = arguments) -> dict[str, Any]:
            return train_model(spec["model"], dataset, progress=progress, eval_every_epoch=False, **arguments)

        checkpoint = study.cached("train", path, fit, save=lambda value, p: torch.save(value, p), load=load_checkpoint)
        model = build_model(checkpoint["model"], **checkpoint["model_kwargs"])
        model.load_state_dict(checkpoint["trained"])
        noise = checkpoint["config"].get("label_noise") or {}
        networks.append(
            Network(spec["name"], spec["variant"], int(spec["seed"]), float(noise.get("fraction", 0.0)), model.eval(), checkpoint["history"])
        )
    return networks


def unit_points(model: nn.Module, layers: Sequence[str]) -> dict[str, tuple[str, str]]:
    """For each hidden layer: (lesion point, activation point), module names of ``model``.

    A layer is a child of ``model`` (an ``nn.Sequential``) or of an ``nn.Sequential`` inside it
    (``features.3``); there the container's end also closes the layer's modules (a VGG's last
    conv block ends ``features``).

    >>> from lesion.models import build_model
    >>> unit_points(build_model("meyes2020-cnn", width=4, hidden=8, batch_norm=True), ["conv1", "fc2"])
    {'conv1': ('bn1', 'pool1'), 'fc2': ('bn5', 'relu5')}
    >>> unit_points(build_model("vgg11_bn", width_divisor=64, classifier_width=8, image_size=28), ["features.25", "classifier.0"])
    {'features.25': ('features.26', 'features.28'), 'classifier.0': ('classifier.0', 'classifier.2')}
    """
    points = {}
    for layer in layers:
        container, parent, child = sequential_child(model, layer, "unit_points")
        names = [name for name, _ in container.named_children()]
        after = names[names.index(child) + 1:]
        stop = next((i for i, n in enumerate(after) if isinstance(getattr(container, n), (*_WEIGHTED, nn.Flatten))), None)
        stop = len(after) if stop is None and parent else stop
        if stop is None or stop == 0:
            raise LesionError(f"layer {layer!r} has no unit-wise module (ReLU) after it before the next layer")
        between = after[:stop]
        prefix = f"{parent}." if parent else ""
        lesion_point = between[0] if isinstance(getattr(container, between[0]), _BN) else child
        points[layer] = (prefix + lesion_point, prefix + between[-1])
    return points


def single_plan(model: nn.Module, points: Mapping[str, str], n_units: Mapping[str, int], name: str = "single") -> Plan:
    """Every unit of every lesion point alone (zero method); ``info["units"]`` maps key -> [layer, unit]."""
    lesions, units = [], {}
    for layer, point in points.items():
        for u in range(n_units[layer]):
            lesion = Lesion(((point, (u,)),))
            lesions.append(lesion)
            units[lesion.key] = [layer, u]
    return Plan(name, tuple(lesions), {"selector": "single", "units": units, "points": dict(points)})


def activation_class_means(
    model: nn.Module, split: Split, points: Mapping[str, str], *, batch_size: int = 512, absolute: bool = False
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per layer: class means of each unit (spatially averaged) and of each neuron (unit × position).

    ``absolute``: of the activations' magnitudes (for rotated directions, which take both signs;
    the selectivity index assumes non-negative activations, and after a ReLU ``|h| = h``).

    Returns
    -------
    dict of layer -> (array (n_classes, n_units), array (n_classes, n_units, n_positions))
        Read at the activation points; a Linear's units have one position.
    """
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    handles = [
        modules[point].register_forward_hook(lambda m, i, o, layer=layer: captured.__setitem__(layer, o.detach()))
        for layer, point in points.items()
    ]
    accumulators: dict[str, ClassMeanAccumulator] = {}
    shapes: dict[str, tuple[int, int]] = {}
    try:
        with torch.inference_mode():
            for x, y in split.batches(batch_size):
                model(x)
                for layer, output in captured.items():
                    flat = output.reshape(output.shape[0], output.shape[1], -1).double()
                    flat = flat.abs() if absolute else flat
                    if layer not in accumulators:
                        shapes[layer] = (flat.shape[1], flat.shape[2])
                        accumulators[layer] = ClassMeanAccumulator(split.n_classes, flat.shape[1] * flat.shape[2])
                    accumulators[layer].update(flat.reshape(flat.shape[0], -1).numpy(), y.numpy())
    finally:
        for handle in handles:
            handle.remove()
    means = {}
    for layer, accumulator in accumulators.items():
        neurons = accumulator.means().reshape(split.n_classes, *shapes[layer])
        means[layer] = (neurons.mean(axis=2), neurons)
    return means


def class_drops(table: pd.DataFrame, units: Mapping[str, Sequence[Any]], class_names: Sequence[str]) -> pd.DataFrame:
    """Per single-unit lesion: the drop of overall and of each class's top-1 accuracy, in pp.

    ``table`` is ``run.table("top1")``; ``units`` maps lesion key -> (layer, unit). Returns one
    row per lesion: ``layer``, ``unit``, ``overall`` and one column per class (intact minus
    lesioned, in percentage points: positive is damage).
    """
    keys = list(units)
    drops = 100 * (table.loc["intact", [*class_names, "all"]].to_numpy(float) - table.loc[keys, [*class_names, "all"]].to_numpy(float))
    frame = pd.DataFrame(drops, columns=[*class_names, "overall"])
    frame.insert(0, "layer", [units[k][0] for k in keys])
    frame.insert(1, "unit", [int(units[k][1]) for k in keys])
    return frame


def chance_warning(networks: pd.DataFrame, n_classes: int) -> list[str]:
    """A warning line naming the networks no better than chance (their lesions say nothing), if any."""
    chance = networks[networks["test_acc"] < 1.5 / n_classes]["network"].tolist()
    if not chance:
        return []
    return [f"**Warning**: {', '.join(chance)} did not learn (test top-1 below 1.5× chance); their rows measure an untrained "
            "network. Train longer (`--epochs`) before reading them.", ""]
