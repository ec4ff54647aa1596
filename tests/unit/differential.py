"""Differential checks of the engine against an independent truth (shared by the engine test files).

The truth of a lesion is computed on a deep copy of the model in eval mode, without `lesion`'s
code: for ``zero`` lesions of a Linear/Conv its weight rows and bias set to 0, otherwise a
forward hook written here that replaces the units' outputs. :func:`check` then asserts that
every engine ends exact, or falls back with a warning, or refuses with `LesionError`, and that
the model's parameters, buffers and modes are unchanged.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from lesion import Lesion, LesionError, evaluate
from lesion.data import Split
from lesion.engine import TIE_TOLERANCE, topk_and_ties


def split_of(inputs: Tensor, n_classes: int) -> Split:
    labels = torch.randint(0, n_classes, (len(inputs),))
    return Split("random", inputs, labels, tuple(str(i) for i in range(n_classes)))


def _unit_dim(module: nn.Module) -> int:
    return -1 if isinstance(module, nn.Linear) else 1


def truth_logits(model: nn.Module, inputs: Tensor, lesion: Lesion, means: Mapping[str, Tensor] | None = None) -> Tensor:
    """The lesioned model's logits, computed on a copy without `lesion`'s machinery."""
    twin = copy.deepcopy(model).eval()
    modules = dict(twin.named_modules())
    for name, units in lesion.units:
        module = modules[name]
        index = torch.tensor(units)
        if lesion.method == "zero" and isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            with torch.no_grad():  # zero incoming weights and bias: the unit outputs exactly 0
                module.weight.index_fill_(0, index, 0.0)
                if module.bias is not None:
                    module.bias.index_fill_(0, index, 0.0)
            continue
        fill = None if lesion.method == "zero" else means[name]  # type: ignore[index]

        def hook(m: nn.Module, args: object, out: Tensor, index: Tensor = index, fill: Tensor | None = fill) -> Tensor:
            dim = _unit_dim(m) % out.dim()
            shape = [1] * out.dim()
            shape[dim] = out.shape[dim]
            mask = torch.zeros(out.shape[dim], dtype=torch.bool)
            mask[index] = True
            value = torch.zeros(()) if fill is None else fill.unsqueeze(0)
            return torch.where(mask.view(shape), value, out)

        module.register_forward_hook(hook)
    with torch.no_grad():
        return twin(inputs)


def _truth(model: nn.Module, split: Split, lesion: Lesion, k: int, means: Mapping[str, Tensor] | None) -> tuple[np.ndarray, np.ndarray]:
    """Truth top-k (N, k) and near-tie flags (N,): within tolerance at rank 1 or at the top-k boundary."""
    logits = truth_logits(model, split.inputs, lesion, means)
    top, ties = topk_and_ties(logits, k)
    if k < logits.shape[1]:
        values = logits.topk(k + 1).values
        ties |= (values[:, k - 1] - values[:, k]) <= TIE_TOLERANCE * values[:, k - 1 : k + 1].abs().amax(1)
    return top.numpy(), ties.numpy()


def _state(model: nn.Module) -> tuple[dict[str, Tensor], list[bool]]:
    tensors = {name: t.detach().clone() for name, t in [*model.named_parameters(), *model.named_buffers()]}
    return tensors, [m.training for m in model.modules()]


def _assert_unchanged(model: nn.Module, before: tuple[dict[str, Tensor], list[bool]]) -> None:
    tensors, modes = before
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        assert torch.equal(t, tensors[name]) and t.dtype == tensors[name].dtype, f"{name} was written"
    assert [m.training for m in model.modules()] == modes, "the model's modes were not restored"
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules()), "hooks left behind"


def _assert_exact(outcomes: list, truth: dict[str, tuple[np.ndarray, np.ndarray]], engine: str) -> None:
    assert sorted(o.lesion.key for o in outcomes) == sorted(truth), engine
    for outcome in outcomes:
        top, ties = truth[outcome.lesion.key]
        keep = ~ties
        wrong = int((np.sort(outcome.topk[keep], 1) != np.sort(top[keep], 1)).any(1).sum())
        wrong += int((outcome.topk[keep, 0] != top[keep, 0]).sum())
        assert wrong == 0, f"{engine}: lesion {outcome.lesion.key} differs from the truth on {wrong} samples"


def check(
    model: nn.Module,
    split: Split,
    lesions: Sequence[Lesion],
    *,
    k: int = 2,
    means: Mapping[str, Tensor] | None = None,
    batch_size: int = 7,
    fast: str = "any",
) -> str:
    """Assert that every engine is exact on ``lesions``, or falls back with a warning, or refuses with
    `LesionError`, leaving the model unchanged. ``fast``: the expected verdict of the default engine
    (``"exact"``: no warning, ``"fallback"``: a warning, ``"any"``). Returns the verdict seen."""
    truth = {lesion.key: _truth(model, split, lesion, k, means) for lesion in lesions}
    before = _state(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcomes = list(evaluate(model, split, lesions, k=k, means=means, batch_size=batch_size))
    _assert_unchanged(model, before)
    _assert_exact(outcomes, truth, "auto")
    messages = [str(w.message) for w in caught]
    assert all("reference path" in m for m in messages), messages
    verdict = "fallback" if messages else "exact"
    assert fast in ("any", verdict), f"expected {fast}, got {verdict}: {messages}"
    try:
        strict = list(evaluate(model, split, lesions, k=k, means=means, batch_size=batch_size, engine="fast"))
    except LesionError:
        assert verdict == "fallback", "engine='fast' refused what engine='auto' evaluated without a warning"
    else:
        _assert_exact(strict, truth, "fast")
    _assert_unchanged(model, before)
    reference = list(evaluate(model, split, lesions, k=k, means=means, batch_size=batch_size, engine="reference"))
    _assert_exact(reference, truth, "reference")
    _assert_unchanged(model, before)
    return verdict


def singles_and_pairs(model: nn.Module, names: Sequence[str], method: str = "zero", per_layer: int = 2) -> list[Lesion]:
    """For each layer: ``per_layer`` single units, one pair, and every unit at once."""
    modules = dict(model.named_modules())
    plan = []
    for name in names:
        module = modules[name]
        n = module.out_features if isinstance(module, nn.Linear) else module.out_channels  # type: ignore[union-attr]
        picks = sorted({0, n - 1, n // 2}) [:per_layer]
        plan += [Lesion(((name, (u,)),), method) for u in picks]
        plan += [Lesion(((name, (0, n - 1)),), method), Lesion(((name, tuple(range(n))),), method)]
    return plan
