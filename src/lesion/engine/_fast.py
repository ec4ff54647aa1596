"""The fast exact engine (placeholder until it lands: delegates to the reference path)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from torch import Tensor, nn

from lesion._lesion import Lesion
from lesion.data import Split
from lesion.engine._outcome import Outcome
from lesion.engine._reference import reference_outcomes


def fast_outcomes(
    model: nn.Module,
    split: Split,
    lesions: Sequence[Lesion],
    *,
    k: int,
    batch_size: int = 256,
    means: Mapping[str, Tensor] | None = None,
    memory: int | None = None,
    strict: bool = False,
) -> Iterator[Outcome]:
    return reference_outcomes(model, split, lesions, k=k, batch_size=batch_size, means=means)
