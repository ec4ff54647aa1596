"""The `Lesion` spec and the one mechanism that applies it: output masks inside `lesioned(...)`.

Parameters and buffers are never written. A lesioned unit's output is replaced after the layer
runs: by 0 (``zero``: for a Linear/Conv exactly "incoming weights and bias set to 0"; for an
attention head exactly "its columns of out_proj.weight set to 0") or by its mean over a reference
set (``mean``). Every forward pass checks that each lesioned layer ran, so a lesion never silently
changes nothing. Because the replacement is a tensor operation in the
forward pass, it serves evaluation and training alike: a zeroed unit passes no gradient to its
incoming weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lesion._errors import LesionError, closest
from lesion._forward import standard_attention, tapped
from lesion._units import (
    HEADS,
    LESIONABLE,
    Layer,
    SelectionLike,
    candidates,
    format_units,
    layers,
    never_runs,
    select,
    selection_items,
)

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
        known = layers(model)
        listed = {layer.name for layer in known}
        modules = dict(model.named_modules())
        for name, _ in selection_items(selection):
            if name and name in modules and name not in listed:  # a module that did not run in the probe
                reason = never_runs(model, name, modules)
                if reason or isinstance(modules[name], LESIONABLE):
                    raise LesionError(f"selection: {reason or _did_not_run(name)}")
        return cls(tuple(select(known, selection).items()), method)

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
    """``output`` (B, ...) with ``units`` along ``dim`` set to 0 or to ``fill`` (per sample; see :func:`_check_output`)."""
    if fill is None:
        return output.index_fill(dim, units, 0.0)
    dim = dim % output.dim()
    picked = fill.to(output.device, output.dtype).index_select(dim - 1, units).unsqueeze(0)
    return output.index_copy(dim, units, picked.expand(*output.shape[:dim], len(units), *output.shape[dim + 1 :]))


#: Output dimensions of a batched convolution.
_CONV_DIMS = {nn.Conv1d: 3, nn.Conv2d: 4, nn.Conv3d: 5}


@dataclass(frozen=True)
class _Target:
    """What a lesion does to one layer, and what its unit output must look like."""

    units: Tensor  # (k,) int64
    last: int  # the largest unit index
    dim: int  # the unit dimension
    n_units: int | None  # expected size along ``dim``; None for a module that is not a listed layer
    n_dims: int | None  # expected number of output dimensions; None: any >= 2
    fill: Tensor | None  # None: zero; else the means, broadcastable to the output per sample


def _check_output(name: str, output: Any, target: _Target) -> None:
    """Raise `LesionError` unless ``output`` holds the layer's units where the lesion expects them."""
    if not isinstance(output, Tensor) or output.is_nested:
        raise LesionError(f"layer {name!r} returned {type(output).__name__}, not a plain tensor whose units can be lesioned")
    dim = target.dim % max(output.dim(), 1)
    if output.dim() < 2 or (target.n_dims is not None and output.dim() != target.n_dims):
        raise LesionError(
            f"layer {name!r}: expected a batched output with its units along dim {target.dim}, got shape "
            f"{tuple(output.shape)} (an input without a batch dimension?)"
        )
    size = output.shape[dim]
    if target.n_units is not None and size != target.n_units:
        raise LesionError(f"layer {name!r}: expected {target.n_units} units along dim {target.dim}, its output has shape {tuple(output.shape)}")
    if target.last >= size:
        raise LesionError(f"units {target.units.tolist()} of layer {name!r} are out of range: its output has {size} units")
    if target.fill is not None:
        per_sample = output.shape[1:]
        fits = target.fill.dim() == len(per_sample) and target.fill.shape[dim - 1] == size and all(
            f in (1, o) for f, o in zip(target.fill.shape, per_sample, strict=True)
        )
        if not fits:
            raise LesionError(
                f"means of layer {name!r} have shape {tuple(target.fill.shape)}, but its output per sample has shape "
                f"{tuple(per_sample)}: expected that shape, or 1 where averaged (other than the unit dim). "
                "Were the means computed on inputs of another size? Average them over positions (keepdim) to reuse them."
            )


def check_lesion(model: nn.Module, lesion: Lesion) -> dict[str, Layer]:
    """Raise `LesionError` unless every layer of ``lesion`` exists in ``model``, can run, and its units are in range.

    Returns the model's lesionable layers by name (modules of other kinds, e.g. a ReLU named as
    a lesion point, are checked for range when they run). No forward pass: whether each layer
    does run is checked by :func:`lesioned` in the forward itself.
    """
    return check_lesions(model, [lesion])


def check_lesions(model: nn.Module, lesions: Iterable[Lesion]) -> dict[str, Layer]:
    """:func:`check_lesion` of every lesion, with the model's modules listed and each layer checked once
    (a plan may hold 10⁶ lesions)."""
    modules = dict(model.named_modules())
    known = {layer.name: layer for layer in candidates(model)}
    checked: set[str] = set()
    for lesion in lesions:
        for name, units in lesion.units:
            if name not in checked:
                if name not in modules or name == "":
                    raise LesionError(f"unknown layer {name!r}{closest(name, [n for n in modules if n])}")
                reason = never_runs(model, name, modules)
                if reason:
                    raise LesionError(f"lesion {lesion.key!r}: {reason}")
                checked.add(name)
            layer = known.get(name)
            if layer is not None and (not units or not 0 <= min(units) <= max(units) < layer.n_units):
                select([layer], {name: units})  # raises, naming the valid range
    return known


def _did_not_run(name: str) -> str:
    return (
        f"layer {name!r} did not run in the model's forward pass, so its lesion would change nothing; "
        "lesion a layer that runs (lesion.layers(model, example=x) lists them)"
    )


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
        (see :func:`unit_means`; (L, num_heads, head_dim) for attention heads); a dimension other
        than the unit one may be 1 (averaged over it).

    Each forward pass of ``model`` in the block checks that every lesioned layer ran, with its
    units where expected, and raises `LesionError` otherwise: a lesion always takes effect. An
    attention module's heads are silenced before its output projection. Models with an
    ``nn.MultiheadAttention`` run on PyTorch's standard attention path in the block (see
    ``lesion._forward.standard_attention``), the intact network too.

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
    if not lesion.units:
        with standard_attention(model):
            yield model
        return
    targets = {}
    for name, units in lesion.units:
        layer = known.get(name)
        n_dims = next((n for kind, n in _CONV_DIMS.items() if isinstance(modules[name], kind)), None)
        targets[name] = _Target(
            torch.tensor(units),
            max(units),
            layer.unit_dim if layer else 1,
            layer.n_units if layer else None,
            4 if layer and layer.kind == HEADS else n_dims,
            None if lesion.method == "zero" else means[name],  # type: ignore[index]
        )
    ran = dict.fromkeys(targets, False)

    def replace(name: str, output: Tensor) -> Tensor:
        target = targets[name]
        ran[name] = True
        _check_output(name, output, target)
        return _replace(output, target.units.to(output.device), target.dim, target.fill)

    def start(module: nn.Module, inputs: Any) -> None:
        for name in ran:
            ran[name] = False

    def verify(module: nn.Module, inputs: Any, output: Any) -> None:
        silent = [name for name, done in ran.items() if not done]
        if silent:
            raise LesionError(_did_not_run(silent[0]))

    handles = [model.register_forward_pre_hook(start), model.register_forward_hook(verify)]
    try:
        with tapped(model, list(targets), replace):
            yield model
    finally:
        for handle in handles:
            handle.remove()


def unit_means(
    model: nn.Module,
    layer_names: Sequence[str],
    batches: Iterator[tuple[Tensor, Tensor]] | Sequence[tuple[Tensor, Tensor]],
) -> dict[str, Tensor]:
    """Each layer's mean unit output over a reference set, for ``method="mean"`` lesions.

    Returns
    -------
    dict of layer name -> Tensor of shape output.shape[1:] (float32): the mean over samples, so a
    convolution keeps its spatial map (C, H, W) and a Linear its (n_units,) vector. An attention
    module's heads keep their positions: (L, num_heads, head_dim), each head's output before the
    output projection at each position, like a convolution's map. A mean lesion then removes
    what a head's output says about the input while keeping what it carries per position (e.g.
    position information). It needs inputs of the reference set's length; for other lengths use
    ``means[name].mean(0, keepdim=True)``, the mean over positions too, of shape (1, num_heads, head_dim).
    """
    modules = dict(model.named_modules())
    for name in layer_names:
        if name not in modules:
            raise LesionError(f"unit_means: unknown layer {name!r}{closest(name, modules)}")
        reason = never_runs(model, name, modules)
        if reason:
            raise LesionError(f"unit_means: {reason}")
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    n_batches = 0

    def accumulate(name: str, output: Tensor) -> None:
        total = output.double().sum(0)
        if name in sums and sums[name].shape != total.shape:
            raise LesionError(
                f"unit_means: layer {name!r} gave outputs of shape {tuple(sums[name].shape)} and {tuple(total.shape)} per "
                "sample; give a reference set of inputs of one size (e.g. sequences of one length)"
            )
        sums[name] = sums[name] + total if name in sums else total
        counts[name] = counts.get(name, 0) + len(output)

    with tapped(model, list(layer_names), accumulate), torch.inference_mode():
        for x, _ in batches:
            model(x)
            n_batches += 1
    if n_batches == 0:
        raise LesionError("unit_means: the reference set is empty")
    silent = [name for name in layer_names if name not in sums]
    if silent:
        raise LesionError(f"unit_means: {_did_not_run(silent[0])}")
    return {name: (sums[name] / counts[name]).float() for name in layer_names}
