"""Evaluating plans of lesions: the reference path and the fast exact engine behind one call."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from lesion._errors import LesionError, check_int
from lesion._lesion import Lesion
from lesion.data import Split
from lesion.engine._capture import Activations, capture_activations, load_activations
from lesion.engine._estimate import estimate
from lesion.engine._options import ENGINES, EngineOptions, check_device, engine_options, parse_size
from lesion.engine._outcome import TIE_TOLERANCE, Outcome, default_k, topk_and_ties
from lesion.engine._reference import (
    AUTOCAST,
    check_autocast,
    eval_mode,
    model_device,
    reference_outcomes,
)


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
    options: EngineOptions | None = None,
    on_batch: Callable[[float], None] | None = None,
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
    options : EngineOptions, optional
        All of the settings above in one validated object (instead of the keywords).
    on_batch : callable, optional
        Progress: the fast engine calls it after each data batch of a round with the lesions' worth
        of work done (fractions of a lesion), before that round's outcomes are yielded.
    """
    opts = engine_options(
        options, engine=engine, batch_size=batch_size, memory=memory, autocast=autocast,
        channels_last=channels_last, compile=compile,
    )
    k = default_k(split.n_classes) if k is None else k
    check_int("k", k, 1, split.n_classes, why=" (the number of classes at most)")
    check_model_device(model, opts)
    check_autocast(opts.autocast, model_device(model))
    if opts.engine == "reference":
        return reference_outcomes(model, split, lesions, k=k, batch_size=opts.batch_size, means=means, autocast=opts.autocast)
    from lesion.engine._fast import fast_outcomes

    return fast_outcomes(
        model, split, lesions, k=k, batch_size=opts.batch_size, means=means, strict=opts.engine == "fast",
        on_batch=on_batch, **opts.engine_kwargs(),
    )


def check_model_device(model: nn.Module, options: EngineOptions) -> None:
    """Raise `LesionError` when ``options.device`` names another device than the model's."""
    if options.device is None:
        return
    where, wanted = model_device(model), torch.device(options.device)
    if where.type != wanted.type or (wanted.index is not None and where.index != wanted.index):
        raise LesionError(f"device: the model is on {str(where)!r} but the options say {options.device!r}; move it with model.to({options.device!r})")


__all__ = [
    "AUTOCAST",
    "ENGINES",
    "TIE_TOLERANCE",
    "Activations",
    "EngineOptions",
    "Outcome",
    "capture_activations",
    "check_autocast",
    "check_device",
    "check_model_device",
    "default_k",
    "estimate",
    "eval_mode",
    "evaluate",
    "load_activations",
    "model_device",
    "parse_size",
    "reference_outcomes",
    "topk_and_ties",
]
