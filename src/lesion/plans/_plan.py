"""`Plan`: an ordered, reproducible list of lesions, and the `single` and `pairs` selectors."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from lesion._errors import LesionError
from lesion._lesion import METHODS, Lesion
from lesion._units import SelectionLike, layers, select


@dataclass(frozen=True)
class Plan:
    """A named, ordered tuple of distinct lesions; each lesion's ``key`` is its stable id.

    ``info`` holds what is needed to rebuild the plan (selector, seed, draws) and is stored with the run.
    """

    name: str
    lesions: tuple[Lesion, ...]
    info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        keys = [lesion.key for lesion in self.lesions]
        if not keys:
            raise LesionError(f"plan {self.name!r} is empty: the selection gave no lesions")
        if len(set(keys)) != len(keys):
            dupes = sorted({k for k in keys if keys.count(k) > 1})
            raise LesionError(f"plan {self.name!r} repeats lesions {dupes[:5]}")

    def __len__(self) -> int:
        return len(self.lesions)

    def __iter__(self) -> Iterator[Lesion]:
        return iter(self.lesions)

    @property
    def keys(self) -> list[str]:
        return [lesion.key for lesion in self.lesions]


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise LesionError(f"method must be one of {METHODS}, got {method!r}")


def single(model: nn.Module, selection: SelectionLike, method: str = "zero", name: str = "single") -> Plan:
    """Every selected unit, one at a time, in model order.

    >>> from lesion.models import meyes2019_mlp
    >>> single(meyes2019_mlp(), "fc2:0-2").keys
    ['fc2:0', 'fc2:1', 'fc2:2']
    """
    _check_method(method)
    chosen = select(layers(model), selection)
    lesions = tuple(Lesion(((layer, (u,)),), method) for layer, units in chosen.items() for u in units)
    return Plan(name, lesions, {"selector": "single", "selection": _as_text(chosen), "method": method})


def pairs(model: nn.Module, selection: SelectionLike, method: str = "zero", name: str = "pairs") -> Plan:
    """Every unordered pair of selected units within each layer (n·(n−1)/2 per layer).

    >>> from lesion.models import meyes2019_mlp
    >>> len(pairs(meyes2019_mlp(), "fc1"))
    190
    """
    _check_method(method)
    chosen = select(layers(model), selection)
    lesions = tuple(
        Lesion(((layer, (u, v)),), method)
        for layer, units in chosen.items()
        for u, v in itertools.combinations(units, 2)
    )
    return Plan(name, lesions, {"selector": "pairs", "selection": _as_text(chosen), "method": method})


def _as_text(chosen: dict[str, tuple[int, ...]]) -> str:
    return ";".join(f"{layer}:{Lesion(((layer, units),)).key.split(':', 1)[1]}" for layer, units in chosen.items())
