"""Layer and unit addressing: which modules can be lesioned, and unit-selection strings.

A *layer* is a submodule named by its ``named_modules()`` path (``fc1``, ``features.33``); a *unit*
is one output channel of it: the last dimension of a ``Linear``'s output, dimension 1 of any other
module's output (a convolution's feature map). Selections are written ``fc1:3``, ``fc1:3,7``,
``fc1:0-9``, ``fc1:*`` (or just ``fc1``); several are joined with ``;`` and layer names may be
shell-style globs (``features.*``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lesion._errors import LesionError, closest

LESIONABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
Selection = dict[str, tuple[int, ...]]
SelectionLike = str | Mapping[str, "int | str | Iterable[int]"]


@dataclass(frozen=True)
class Layer:
    """A lesionable layer: its name, module type, number of units and the unit dimension of its output."""

    name: str
    kind: str
    n_units: int
    unit_dim: int  # -1 for Linear, 1 otherwise


def _unit_dim(module: nn.Module) -> int:
    return -1 if isinstance(module, nn.Linear) else 1


def layers(
    model: nn.Module,
    include: Iterable[str] = (),
    example: torch.Tensor | None = None,
) -> list[Layer]:
    """List the lesionable layers of ``model`` in module order.

    Parameters
    ----------
    model : nn.Module
    include : iterable of str, default=()
        Extra module names to treat as layers (e.g. the ReLU after a convolution, to lesion the
        block's output). Their unit count is read from ``num_features`` or from one forward pass
        of ``example``.
    example : Tensor of shape (B, *input_shape), optional
        Needed only when an included module has no ``num_features``.

    Examples
    --------
    >>> from lesion.models import meyes2019_mlp
    >>> [(l.name, l.n_units) for l in layers(meyes2019_mlp())]
    [('fc1', 20), ('fc2', 10), ('out', 10)]
    """
    modules = dict(model.named_modules())
    extra = list(include)
    for name in extra:
        if name not in modules or name == "":
            raise LesionError(f"include: unknown module {name!r}{closest(name, [n for n in modules if n])}")
    probed = _probe_units(model, [n for n in extra if not hasattr(modules[n], "num_features")], example)
    found = []
    for name, module in modules.items():
        if isinstance(module, LESIONABLE):
            n = module.out_features if isinstance(module, nn.Linear) else module.out_channels
        elif name in extra:
            n = int(getattr(module, "num_features", 0)) or probed[name]
        else:
            continue
        found.append(Layer(name, type(module).__name__, int(n), _unit_dim(module)))
    return found


def _probe_units(model: nn.Module, names: list[str], example: torch.Tensor | None) -> dict[str, int]:
    if not names:
        return {}
    if example is None:
        raise LesionError(f"include: module(s) {names} have no num_features; pass example= (one input batch) to count their units")
    modules = dict(model.named_modules())
    counts: dict[str, int] = {}
    handles = [
        modules[n].register_forward_hook(lambda m, i, o, n=n: counts.__setitem__(n, int(o.shape[1])))
        for n in names
    ]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return counts


def _parse_units(text: str, layer: Layer) -> tuple[int, ...]:
    text = text.strip()
    if text in ("*", ""):
        return tuple(range(layer.n_units))
    units: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                units.extend(range(int(lo), int(hi) + 1))
            else:
                units.append(int(part))
        except ValueError:
            raise LesionError(
                f"unit selection {layer.name}:{text!r}: expected '*', a unit 'N', a list 'N,M' or a range 'N-M'; got {part!r}"
            ) from None
    return _check_units(units, layer)


def _check_units(units: Iterable[int], layer: Layer) -> tuple[int, ...]:
    out = tuple(sorted(set(int(u) for u in units)))
    bad = [u for u in out if not 0 <= u < layer.n_units]
    if bad:
        raise LesionError(
            f"units {bad} of layer {layer.name!r} are out of range: it has {layer.n_units} units, valid 0-{layer.n_units - 1}"
        )
    if not out:
        raise LesionError(f"empty unit selection for layer {layer.name!r} (valid 0-{layer.n_units - 1})")
    return out


def select(model_layers: Sequence[Layer], selection: SelectionLike) -> Selection:
    """Resolve a unit selection against a model's layers.

    Parameters
    ----------
    model_layers : sequence of Layer
        From :func:`layers`.
    selection : str or mapping
        ``"fc1:3,7;fc2:*"``, or ``{"fc1": [3, 7], "fc2": "*"}``; layer names may be globs.

    Returns
    -------
    dict of layer name -> sorted tuple of unit indices, in model order.
    """
    by_name = {layer.name: layer for layer in model_layers}
    if isinstance(selection, str):
        items: list[tuple[str, Any]] = []
        for chunk in selection.replace(" ", "").split(";"):
            if chunk:
                name, colon, text = chunk.partition(":")
                if colon and not text:
                    raise LesionError(f"unit selection {chunk!r}: units expected after ':', e.g. '{name}:0-9'; or '{name}' for all units")
                items.append((name, text or "*"))
    elif isinstance(selection, Mapping):
        items = list(selection.items())
    else:
        raise LesionError(f"selection must be a string like 'fc1:0-9' or a mapping, got {type(selection).__name__}")
    if not items:
        raise LesionError("empty selection: name at least one layer, e.g. 'fc1' or 'fc1:0-9'")
    chosen: dict[str, set[int]] = {}
    for pattern, units in items:
        pattern = str(pattern)
        names = [n for n in by_name if fnmatch.fnmatchcase(n, pattern)]
        if not names:
            raise LesionError(f"unknown layer {pattern!r}; lesionable layers are {list(by_name)}{closest(pattern, by_name)}")
        for name in names:
            layer = by_name[name]
            if isinstance(units, str):
                picked = _parse_units(units, layer)
            elif isinstance(units, int):
                picked = _check_units([units], layer)
            else:
                picked = _check_units(units, layer)
            chosen.setdefault(name, set()).update(picked)
    return {name: tuple(sorted(chosen[name])) for name in by_name if name in chosen}


def format_units(units: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"`` (the inverse of the selection syntax)."""
    parts: list[str] = []
    units = sorted(units)
    i = 0
    while i < len(units):
        j = i
        while j + 1 < len(units) and units[j + 1] == units[j] + 1:
            j += 1
        parts.append(str(units[i]) if j == i else f"{units[i]}-{units[j]}")
        i = j + 1
    return ",".join(parts)
