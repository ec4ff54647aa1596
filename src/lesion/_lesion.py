"""The `Lesion` spec and the one mechanism that applies it: output masks inside `lesioned(...)`.

Parameters and buffers are never written. A lesioned unit's output is replaced after the layer
runs: by 0 (``zero``: for a Linear/Conv exactly "incoming weights and bias set to 0") or by its
mean over a reference set (``mean``). Because the replacement is a tensor operation in the
forward pass, it serves evaluation and training alike: a zeroed unit passes no gradient to its
incoming weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lesion._errors import LesionError, closest
from lesion._units import Layer, SelectionLike, format_units, layers, select

METHODS = ("zero", "mean")


@dataclass(frozen=True)
class Lesion:
    """Units of one or more layers, silenced together by ``method``.

    Frozen and hashable; :attr:`key` is its stable string id (``"fc1:3,7"``, ``"fc1:0-9+fc2:1@mean"``,
    ``"intact"`` for no units), used as the results database key.

    Parameters
    ----------
    units : tuple of (layer name, tuple of unit indices)
    method : {"zero", "mean"}, default="zero"

    Examples
    --------
    >>> Lesion((("fc1", (7, 3)),)).key
    'fc1:3,7'
    """

    units: tuple[tuple[str, tuple[int, ...]], ...] = ()
    method: str = "zero"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LesionError(f"lesion method must be one of {METHODS}, got {self.method!r}{closest(self.method, METHODS)}")
        canonical = []
        for name, units in self.units:
            unique = tuple(sorted({int(u) for u in units}))
            if not unique:
                raise LesionError(f"lesion of layer {name!r} names no units")
            canonical.append((str(name), unique))
        names = [n for n, _ in canonical]
        if len(set(names)) != len(names):
            raise LesionError(f"lesion names layer(s) more than once: {names}")
        object.__setattr__(self, "units", tuple(canonical))

    @classmethod
    def of(cls, model: nn.Module, selection: SelectionLike, method: str = "zero") -> Lesion:
        """A lesion from a selection string or mapping, checked against ``model``.

        >>> from lesion.models import meyes2019_mlp
        >>> Lesion.of(meyes2019_mlp(), "fc1:0-2;fc2:5").key
        'fc1:0-2+fc2:5'
        """
        return cls(tuple(select(layers(model), selection).items()), method)

    @classmethod
    def from_key(cls, key: str) -> Lesion:
        """Inverse of :attr:`key`."""
        if key == "intact":
            return cls()
        body, _, method = key.partition("@")
        units = []
        for part in body.split("+"):
            name, _, spec = part.rpartition(":")
            picked: list[int] = []
            for piece in spec.split(","):
                lo, _, hi = piece.partition("-")
                picked.extend(range(int(lo), int(hi or lo) + 1))
            units.append((name, tuple(picked)))
        return cls(tuple(units), method or "zero")

    @property
    def key(self) -> str:
        if not self.units:
            return "intact"
        body = "+".join(f"{name}:{format_units(units)}" for name, units in self.units)
        return body if self.method == "zero" else f"{body}@{self.method}"

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.units)

    @property
    def size(self) -> int:
        """Number of units silenced."""
        return sum(len(u) for _, u in self.units)

    def check(self, model_layers: Sequence[Layer]) -> None:
        """Raise `LesionError` if a layer is unknown or a unit is out of range."""
        select(model_layers, {name: units for name, units in self.units})

    def __str__(self) -> str:
        return self.key


INTACT = Lesion()


def _replace(output: Tensor, units: Tensor, dim: int, fill: Tensor | None) -> Tensor:
    """``output`` with ``units`` along ``dim`` set to 0 or to ``fill`` (shape output.shape[1:])."""
    if fill is None:
        return output.index_fill(dim, units, 0.0)
    fill_dim = dim - 1 if dim > 0 else dim
    source = fill.index_select(fill_dim, units).to(output.dtype).expand(output.shape[0], *[-1] * (output.dim() - 1))
    return output.index_copy(dim, units, source)


def _hook(name: str, units: Tensor, dim: int, fill: Tensor | None) -> Any:
    def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        if int(units.max()) >= output.shape[dim]:
            raise LesionError(
                f"units {units.tolist()} of layer {name!r} are out of range: its output has {output.shape[dim]} units"
            )
        return _replace(output, units.to(output.device), dim, None if fill is None else fill.to(output.device))

    return hook


def check_lesion(model: nn.Module, lesion: Lesion) -> dict[str, Layer]:
    """Raise `LesionError` unless every layer of ``lesion`` exists in ``model`` and its units are in range.

    Returns the model's lesionable layers by name (modules of other kinds, e.g. a ReLU named as
    a lesion point, are checked for range when they run).
    """
    modules = dict(model.named_modules())
    known = {layer.name: layer for layer in layers(model)}
    for name, units in lesion.units:
        if name not in modules or name == "":
            raise LesionError(f"unknown layer {name!r}{closest(name, [n for n in modules if n])}")
        if name in known:
            select([known[name]], {name: units})
    return known


@contextmanager
def lesioned(
    model: nn.Module,
    lesion: Lesion,
    means: Mapping[str, Tensor] | None = None,
) -> Iterator[nn.Module]:
    """Apply ``lesion`` to ``model`` for the duration of the block.

    Parameters
    ----------
    model : nn.Module
    lesion : Lesion
    means : mapping of layer name -> Tensor of shape output.shape[1:], optional
        Required for ``method="mean"``: each unit's mean output over a reference set
        (see :func:`unit_means`).

    Hooks are removed on every exit path (return, exception, KeyboardInterrupt); the model's
    parameters and buffers are never written.

    Examples
    --------
    >>> import torch
    >>> from lesion.models import meyes2019_mlp
    >>> model = meyes2019_mlp()
    >>> with lesioned(model, Lesion.of(model, "fc1:*")):
    ...     float(model(torch.rand(2, 784)).abs().sum())
    0.0
    """
    known = check_lesion(model, lesion)
    modules = dict(model.named_modules())
    if lesion.method == "mean":
        missing = [n for n in lesion.layers if means is None or n not in means]
        if missing:
            raise LesionError(
                f"lesion {lesion.key!r} uses method 'mean' but no means were given for {missing}; compute them with unit_means()"
            )
    handles = []
    try:
        for name, units in lesion.units:
            fill = None if lesion.method == "zero" else means[name]  # type: ignore[index]
            dim = known[name].unit_dim if name in known else 1
            handles.append(modules[name].register_forward_hook(_hook(name, torch.tensor(units), dim, fill)))
        yield model
    finally:
        for handle in handles:
            handle.remove()


def unit_means(
    model: nn.Module,
    layer_names: Sequence[str],
    batches: Iterator[tuple[Tensor, Tensor]] | Sequence[tuple[Tensor, Tensor]],
) -> dict[str, Tensor]:
    """Each layer's mean output over a reference set, for ``method="mean"`` lesions.

    Returns
    -------
    dict of layer name -> Tensor of shape output.shape[1:] (float32): the mean over samples, so a
    convolution keeps its spatial map (C, H, W) and a Linear its (n_units,) vector.
    """
    modules = dict(model.named_modules())
    for name in layer_names:
        if name not in modules:
            raise LesionError(f"unit_means: unknown layer {name!r}{closest(name, modules)}")
    sums: dict[str, Tensor] = {}
    count = 0

    def accumulate(name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
            total = output.double().sum(0)
            sums[name] = sums[name] + total if name in sums else total

        return hook

    handles = [modules[n].register_forward_hook(accumulate(n)) for n in layer_names]
    try:
        with torch.inference_mode():
            for x, _ in batches:
                model(x)
                count += len(x)
    finally:
        for handle in handles:
            handle.remove()
    if count == 0:
        raise LesionError("unit_means: the reference set is empty")
    return {name: (total / count).float() for name, total in sums.items()}
