"""Evaluating plans of lesions: the reference path and the fast exact engine behind one call."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from torch import Tensor, nn

from lesion._errors import LesionError, closest
from lesion._lesion import Lesion
from lesion.data import Split
from lesion.engine._capture import Activations, capture_activations, load_activations
from lesion.engine._estimate import estimate
from lesion.engine._outcome import TIE_TOLERANCE, Outcome, default_k, topk_and_ties
from lesion.engine._reference import (
    AUTOCAST,
    check_autocast,
    eval_mode,
    model_device,
    reference_outcomes,
)

ENGINES = ("auto", "fast", "reference")


def evaluate(
    model: nn.Module,
    split: Split,
    lesions: Sequence[Lesion],
    *,
    k: int | None = None,
    batch_size: int = 256,
    means: Mapping[str, Tensor] | None = None,
    engine: str = "auto",
    memory: int | None = None,
    autocast: str | None = None,
    channels_last: bool = False,
    compile: bool = False,
) -> Iterator[Outcome]:
    """Evaluate every lesion on ``split``; yields one :class:`Outcome` per lesion (order may differ).

    Parameters
    ----------
    model : nn.Module
        Evaluated in eval mode; its parameters and buffers are never written.
    split : Split
    lesions : sequence of Lesion
    k : int, optional
        Top-k depth; default ``min(5, n_classes)``.
    batch_size : int, default=256
        Data samples per forward pass.
    means : mapping, optional
        Per-layer unit means for ``method="mean"`` lesions (see :func:`lesion.unit_means`).
    engine : {"auto", "fast", "reference"}, default="auto"
        ``reference``: one full forward per lesion. ``fast``: the exact batched engine.
        ``auto``: the fast engine where the model can be traced, else the reference.
    memory : int, optional
        Byte budget for the fast engine's tiled activations; default: automatic.
    autocast : {"bf16", "fp16"}, optional
        Evaluate under ``torch.autocast`` in that precision instead of float32 (any engine).
        Predictions may differ from float32's; :func:`lesion.sweep` counts how many.
    channels_last : bool, default=False
        Fast engine: feed 4-D inputs in channels-last memory format (faster convolutions on GPUs).
    compile : bool, default=False
        Fast engine: ``torch.compile`` the part of the network after each cut.
    """
    if engine not in ENGINES:
        raise LesionError(f"engine must be one of {ENGINES}, got {engine!r}{closest(engine, ENGINES)}")
    k = default_k(split.n_classes) if k is None else k
    if not 1 <= k <= split.n_classes:
        raise LesionError(f"k must be in 1..{split.n_classes} (the number of classes), got {k}")
    check_autocast(autocast, model_device(model))
    if engine == "reference":
        return reference_outcomes(model, split, lesions, k=k, batch_size=batch_size, means=means, autocast=autocast)
    from lesion.engine._fast import fast_outcomes

    return fast_outcomes(
        model, split, lesions, k=k, batch_size=batch_size, means=means, memory=memory, strict=engine == "fast",
        autocast=autocast, channels_last=channels_last, compile=compile,
    )


__all__ = [
    "AUTOCAST",
    "ENGINES",
    "TIE_TOLERANCE",
    "Activations",
    "Outcome",
    "capture_activations",
    "check_autocast",
    "default_k",
    "estimate",
    "eval_mode",
    "evaluate",
    "load_activations",
    "model_device",
    "reference_outcomes",
    "topk_and_ties",
]
