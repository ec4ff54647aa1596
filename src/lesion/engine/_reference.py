"""The reference evaluator: one full forward pass per lesion over the dataset, in batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
from torch import Tensor, nn

from lesion._errors import LesionError, closest
from lesion._forward import eval_mode
from lesion._lesion import Lesion, lesioned
from lesion.data import Split
from lesion.engine._outcome import Outcome, topk_and_ties


def model_device(model: nn.Module) -> torch.device:
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


#: Lower-precision evaluation modes (``torch.autocast`` dtypes) by name; None is float32.
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_autocast(autocast: str | None, device: torch.device) -> None:
    """Raise `LesionError` unless ``autocast`` is None or a mode of :data:`AUTOCAST` that ``device`` supports."""
    if autocast is None:
        return
    if autocast not in AUTOCAST:
        raise LesionError(f"autocast must be one of {tuple(AUTOCAST)} (or None for float32), got {autocast!r}{closest(autocast, AUTOCAST)}")
    if not torch.amp.is_autocast_available(device.type):
        raise LesionError(f"autocast {autocast!r}: torch has no autocast for device {device.type!r}")


def autocast_context(autocast: str | None, device: torch.device) -> AbstractContextManager[object]:
    """``torch.autocast`` in the ``autocast`` mode on ``device``; a no-op for None (float32)."""
    check_autocast(autocast, device)
    return nullcontext() if autocast is None else torch.autocast(device.type, AUTOCAST[autocast])


def reference_outcomes(
    model: nn.Module,
    split: Split,
    lesions: Iterable[Lesion],
    *,
    k: int,
    batch_size: int = 256,
    means: Mapping[str, Tensor] | None = None,
    autocast: str | None = None,
) -> Iterator[Outcome]:
    """Yield one :class:`Outcome` per lesion, in order: the obvious, trusted path.

    ``autocast``: None (float32) or a mode of :data:`AUTOCAST` for the forward passes.
    """
    device = model_device(model)
    precision = autocast_context(autocast, device)
    with eval_mode(model), torch.inference_mode():
        for lesion in lesions:
            tops, ties = [], 0
            with lesioned(model, lesion, means):
                for x, _ in split.batches(batch_size):
                    with precision:
                        logits = model(x.to(device))
                    top, tie = topk_and_ties(logits, k)
                    tops.append(top.cpu())
                    ties += int(tie.sum())
            yield Outcome(lesion, torch.cat(tops).numpy().astype(np.int64), ties)
