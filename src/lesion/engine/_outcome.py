"""What one lesion does on one dataset, and the shared top-k / near-tie arithmetic."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lesion._lesion import Lesion

#: Two logits closer than this (relative) are a near-tie: float32 rounding may swap them.
TIE_TOLERANCE = 1e-5


@dataclass(frozen=True, eq=False)
class Outcome:
    """Per-sample top-k predictions of one lesion.

    Attributes
    ----------
    lesion : Lesion
    topk : int64 array of shape (N, k), best class first
    near_ties : int
        Samples whose top-2 logit margin is within ``TIE_TOLERANCE`` (relative): the only samples
        whose prediction may legitimately differ between evaluation paths.
    """

    lesion: Lesion
    topk: np.ndarray
    near_ties: int


def topk_and_ties(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k class indices (B, k) and a near-tie flag (B,) for logits of shape (B, C)."""
    values, indices = logits.float().topk(max(k, 2) if logits.shape[-1] > 1 else 1, dim=-1)
    if values.shape[-1] > 1:
        top, second = values[:, 0], values[:, 1]
        ties = (top - second) <= TIE_TOLERANCE * torch.maximum(top.abs(), second.abs())
    else:
        ties = torch.zeros(len(values), dtype=torch.bool, device=values.device)
    return indices[:, :k], ties


def default_k(n_classes: int) -> int:
    """The paper's top-5, or every class when there are fewer."""
    return min(5, n_classes)
