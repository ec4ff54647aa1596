"""The reference evaluator: one full forward pass per lesion over the dataset, in batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn

from lesion._lesion import Lesion, lesioned
from lesion.data import Split
from lesion.engine._outcome import Outcome, topk_and_ties


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` for the block, restoring each submodule's training flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def model_device(model: nn.Module) -> torch.device:
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def reference_outcomes(
    model: nn.Module,
    split: Split,
    lesions: Iterable[Lesion],
    *,
    k: int,
    batch_size: int = 256,
    means: Mapping[str, Tensor] | None = None,
) -> Iterator[Outcome]:
    """Yield one :class:`Outcome` per lesion, in order: the obvious, trusted path."""
    device = model_device(model)
    with eval_mode(model), torch.inference_mode():
        for lesion in lesions:
            tops, ties = [], 0
            with lesioned(model, lesion, means):
                for x, _ in split.batches(batch_size):
                    top, tie = topk_and_ties(model(x.to(device)), k)
                    tops.append(top.cpu())
                    ties += int(tie.sum())
            yield Outcome(lesion, torch.cat(tops).numpy().astype(np.int64), ties)
