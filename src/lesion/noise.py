"""Noise perturbation of units (Morcos et al. 2018's second probe of reliance on single directions).

Gaussian noise is added to the output of each unit of a layer, scaled by that unit's activation
standard deviation on a reference set (the training set in the paper): unit ``u`` receives
``scale · std_u · ε`` with ``ε ~ N(0, 1)`` drawn independently per sample and position. The noise
is added by a forward hook for the duration of :func:`noisy`, like a lesion: parameters and
buffers are never written. Noise is drawn on the CPU from a seeded ``torch.Generator``, so results
do not depend on the device.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from lesion._errors import LesionError, check_int, closest
from lesion._units import layers
from lesion.data import Split


def _unit_dims(model: nn.Module, names: Iterable[str]) -> dict[str, int]:
    known = {layer.name: layer.unit_dim for layer in layers(model)}
    modules = dict(model.named_modules())
    dims = {}
    for name in names:
        if name not in modules or name == "":
            raise LesionError(f"unknown layer {name!r}{closest(name, [n for n in modules if n])}")
        dims[name] = known.get(name, 1)
    return dims


def unit_std(model: nn.Module, layer_names: Sequence[str], split: Split, *, batch_size: int = 1024) -> dict[str, Tensor]:
    """Each unit's activation standard deviation over ``split`` (population std, float64 sums).

    A Linear unit's std is over samples; a convolution channel's over samples and positions.
    Layers that are not Linear/Conv (a ReLU, a batch norm) count dimension 1 as their units.

    Returns
    -------
    dict of layer name -> Tensor of shape (n_units,), float64
    """
    dims = _unit_dims(model, layer_names)
    modules = dict(model.named_modules())
    sums: dict[str, list[Tensor]] = {}

    def accumulate(name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
            moved = output.detach().double().movedim(dims[name], -1)
            flat = moved.reshape(-1, moved.shape[-1])
            parts = [flat.sum(0), (flat**2).sum(0), torch.tensor(float(len(flat)), dtype=torch.float64)]
            sums[name] = [a + b for a, b in zip(sums[name], parts, strict=True)] if name in sums else parts

        return hook

    handles = [modules[name].register_forward_hook(accumulate(name)) for name in dims]
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            for x, _ in split.batches(batch_size):
                model(x.to(_device(model)))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    out = {}
    for name, (total, squares, count) in sums.items():
        mean = total / count
        out[name] = (squares / count - mean**2).clamp_min(0).sqrt().cpu()
    return out


@contextmanager
def noisy(model: nn.Module, std: Mapping[str, Tensor], scale: float, generator: torch.Generator) -> Iterator[nn.Module]:
    """Add ``scale · std_u · ε`` to every unit ``u`` of the layers of ``std`` for the block.

    Parameters
    ----------
    model : nn.Module
    std : mapping of layer name -> Tensor of shape (n_units,)
        From :func:`unit_std`.
    scale : float >= 0
    generator : torch.Generator
        A CPU generator; ε is drawn from it with ``torch.randn(output.shape)`` at each forward.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale >= 0:
        raise LesionError(f"scale must be a number >= 0 (noise std in units of each unit's std), got {scale!r}")
    dims = _unit_dims(model, std)
    modules = dict(model.named_modules())

    def perturb(name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
            sigma = std[name]
            if output.shape[dims[name]] != len(sigma):
                raise LesionError(f"std[{name!r}] has {len(sigma)} values but the layer's output has {output.shape[dims[name]]} units")
            shape = [1] * output.dim()
            shape[dims[name]] = len(sigma)
            eps = torch.randn(output.shape, generator=generator, dtype=torch.float64)
            return output + (scale * eps * sigma.double().reshape(shape)).to(output.device, output.dtype)

        return hook

    handles = [modules[name].register_forward_hook(perturb(name)) for name in dims]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


def noise_curve(
    model: nn.Module,
    split: Split,
    std: Mapping[str, Tensor],
    scales: Sequence[float],
    *,
    seed: int = 0,
    repeats: int = 1,
    batch_size: int = 1024,
) -> pd.DataFrame:
    """Top-1 accuracy on ``split`` with noise at each scale (Morcos et al. 2018, Fig. 4).

    Each (scale, repeat) draws its noise from ``torch.Generator().manual_seed(seed + repeat)``,
    so the same ε is scaled across scales (curves are smooth in the scale) and scale 0 gives the
    intact network's accuracy exactly.

    Returns
    -------
    pandas.DataFrame
        Columns ``scale``, ``repeat``, ``accuracy`` (overall, in [0, 1]), one row per (scale, repeat).
    """
    check_int("repeats", repeats, 1)
    check_int("seed", seed, 0)
    labels = split.labels
    rows = []
    was_training = model.training
    model.eval()
    try:
        for scale in scales:
            for repeat in range(repeats):
                generator = torch.Generator().manual_seed(seed + repeat)
                correct = 0
                with noisy(model, std, scale, generator), torch.inference_mode():
                    for x, y in split.batches(batch_size):
                        correct += int((model(x.to(_device(model))).argmax(1).cpu() == y).sum())
                rows.append((float(scale), repeat, correct / len(labels)))
    finally:
        model.train(was_training)
    return pd.DataFrame(rows, columns=["scale", "repeat", "accuracy"])


def _device(model: nn.Module) -> torch.device:
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


__all__ = ["noise_curve", "noisy", "unit_std"]
