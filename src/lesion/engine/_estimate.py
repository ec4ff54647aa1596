"""First-order (Taylor) estimates of every single-unit lesion's effect, from gradients alone.

A lesion changes unit ``u``'s output ``a_u`` to ``r_u`` (0 for ``zero``, its mean for ``mean``).
To first order, logit ``j`` changes by ``sum_positions (r_u - a_u) * d logit_j / d a_u``: one
forward and one backward per class per data batch give the estimate for every unit at once. It
is exact where the network is linear in ``a_u`` between the unit and the logits, and only an
estimate elsewhere; the exact numbers come from :func:`lesion.evaluate`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from lesion._errors import LesionError, closest
from lesion._forward import tapped
from lesion._lesion import METHODS, Lesion
from lesion._units import layers
from lesion.data import Split
from lesion.engine._reference import eval_mode, model_device

KIND = "first-order estimate"


def estimate(
    model: nn.Module,
    split: Split,
    layer_names: Sequence[str],
    *,
    method: str = "zero",
    means: Mapping[str, Tensor] | None = None,
    batch_size: int = 256,
) -> pd.DataFrame:
    """Estimated per-class top-1 accuracy after lesioning each unit of ``layer_names`` alone.

    Parameters
    ----------
    model : nn.Module
        Evaluated in eval mode; parameters, buffers and their ``.grad`` are left as they were.
    split : Split
    layer_names : sequence of str
        Lesionable layers (see :func:`lesion.layers`).
    method : {"zero", "mean"}, default="zero"
    means : mapping of layer name -> Tensor of shape output.shape[1:], optional
        Required for ``method="mean"`` (see :func:`lesion.unit_means`).
    batch_size : int, default=256

    Returns
    -------
    pandas.DataFrame
        Tidy: one row per (lesion, class), plus class ``"overall"``; columns ``lesion`` (key),
        ``layer``, ``unit``, ``method``, ``class``, ``intact_accuracy``, ``accuracy`` (estimated),
        ``change``, ``rank`` (1 = the largest estimated overall drop), ``kind`` (always
        ``"first-order estimate"``) and ``estimate`` (always True).
    """
    if method not in METHODS:
        raise LesionError(f"method must be one of {METHODS}, got {method!r}{closest(method, METHODS)}")
    known = {layer.name: layer for layer in layers(model)}
    for name in layer_names:
        if name not in known:
            raise LesionError(f"layer_names: unknown layer {name!r}{closest(name, known)}")
        if method == "mean" and (means is None or name not in means):
            raise LesionError(f"method 'mean' needs means for layer {name!r}; compute them with unit_means()")
    device = model_device(model)
    n_classes = split.n_classes
    correct = {name: np.zeros((known[name].n_units, n_classes)) for name in layer_names}
    intact = np.zeros(n_classes)
    counts = np.zeros(n_classes)
    with eval_mode(model), torch.enable_grad():
        for x, y in split.batches(batch_size):
            outputs: dict[str, Tensor] = {}
            with tapped(model, layer_names, functools.partial(_keep, outputs)):
                logits = model(x.to(device))
            changes = _logit_changes(logits, [outputs[n] for n in layer_names], layer_names, known, means, method)
            logits, labels = logits.detach(), y.to(device)
            hits = (logits.argmax(1) == labels).double()
            intact += torch.zeros(n_classes, dtype=torch.float64, device=device).index_add_(0, labels, hits).cpu().numpy()
            counts += np.bincount(y.numpy(), minlength=n_classes)
            for name, change in zip(layer_names, changes, strict=True):
                guess = (logits.unsqueeze(1) + change).argmax(2) == labels[:, None]  # (B, U)
                per_class = torch.zeros(n_classes, guess.shape[1], dtype=torch.float64, device=device)
                correct[name] += per_class.index_add_(0, labels, guess.double()).T.cpu().numpy()
    return _table(correct, intact, counts, split, method)


def _keep(outputs: dict[str, Tensor], name: str, output: Tensor) -> Tensor:
    """Keep ``output`` for differentiation (as a leaf if nothing before it needs gradients, e.g. token inputs)."""
    outputs[name] = output if output.requires_grad else output.detach().requires_grad_()
    return outputs[name]


def _logit_changes(
    logits: Tensor,
    activations: list[Tensor],
    names: Sequence[str],
    known: dict,
    means: Mapping[str, Tensor] | None,
    method: str,
) -> list[Tensor]:
    """Per layer, the estimated logit change (B, units, classes) of zeroing / mean-replacing each unit."""
    gaps = []
    for name, a in zip(names, activations, strict=True):
        a = a.detach()
        fill = torch.zeros((), device=a.device) if method == "zero" else means[name].to(a.device)  # type: ignore[index]
        gaps.append((fill - a).movedim(known[name].unit_dim, 1))
    columns: list[list[Tensor]] = [[] for _ in names]
    for j in range(logits.shape[1]):
        grads = torch.autograd.grad(logits[:, j].sum(), activations, retain_graph=j + 1 < logits.shape[1])
        for i, (name, grad) in enumerate(zip(names, grads, strict=True)):
            product = gaps[i] * grad.detach().movedim(known[name].unit_dim, 1)
            columns[i].append(product.flatten(2).sum(2) if product.dim() > 2 else product)
    return [torch.stack(c, dim=2) for c in columns]


def _table(correct: dict[str, np.ndarray], intact: np.ndarray, counts: np.ndarray, split: Split, method: str) -> pd.DataFrame:
    total = counts.sum()
    intact_overall = intact.sum() / total
    with np.errstate(invalid="ignore", divide="ignore"):
        intact_class = intact / counts
    rows = []
    for name, hits in correct.items():
        for unit, unit_hits in enumerate(hits):
            key = Lesion(((name, (unit,)),), method).key
            with np.errstate(invalid="ignore", divide="ignore"):
                accuracy = unit_hits / counts
            for c, class_name in enumerate(split.class_names):
                rows.append((key, name, unit, method, class_name, intact_class[c], accuracy[c]))
            rows.append((key, name, unit, method, "overall", intact_overall, unit_hits.sum() / total))
    table = pd.DataFrame(rows, columns=["lesion", "layer", "unit", "method", "class", "intact_accuracy", "accuracy"])
    table["change"] = table["accuracy"] - table["intact_accuracy"]
    overall = table[table["class"] == "overall"].set_index("lesion")["change"]
    table["rank"] = table["lesion"].map(overall.rank(method="min").astype(int))
    table["kind"] = KIND
    table["estimate"] = True
    return table
