"""The fast engine gives the reference path's per-sample predictions (up to near-ties), for any K."""

from __future__ import annotations

import functools
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from lesion import Lesion, LesionError, evaluate, lesioned, unit_means
from lesion._units import layers
from lesion.data import Split
from lesion.engine import TIE_TOLERANCE, _fast, topk_and_ties
from lesion.engine._split_graph import make_cut, propagate_shapes, trace
from lesion.models import meyes2019_mlp, meyes2020_cnn
from lesion.models._vgg import vgg
from lesion.testing import TOY_EXPECTED, toy_data, toy_network


class SkipNet(nn.Module):
    """conv -> relu -> conv, plus a skip connection around the second conv; a size-based view."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.conv1(x))
        h = self.pool(self.relu(self.conv2(h)) + h)
        return self.fc(h.view(h.size(0), -1))


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 5)
        self.out = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if h.sum() > 0:  # data-dependent control flow: fx cannot trace it
            h = h.relu()
        return self.out(h)


def _split(shape: tuple[int, ...], n: int = 40, n_classes: int = 10) -> Split:
    x = torch.randn(n, *shape)
    return Split("random", x, torch.randint(0, n_classes, (n,)), tuple(str(i) for i in range(n_classes)))


def _small_vgg() -> nn.Module:
    model = vgg(11, batch_norm=True, n_classes=10, in_channels=1, image_size=16, width_divisor=16, classifier_width=16)
    with torch.no_grad():  # non-trivial batch-norm statistics, so that BN(0) != 0
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.3)
                nn.init.normal_(m.bias, 0, 0.1)
    return model.eval()


MODELS = {
    "mlp": (meyes2019_mlp, (784,)),
    "cnn": (lambda: meyes2020_cnn(width=6), (1, 28, 28)),
    "vgg_bn": (_small_vgg, (1, 16, 16)),
    "skip": (SkipNet, (1, 8, 8)),
}


def _reference(model: nn.Module, split: Split, lesion: Lesion, k: int, means: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """Reference top-k (N, k) and per-sample near-tie flags (N,), at rank 1 or at the top-k boundary."""
    with torch.inference_mode(), lesioned(model.eval(), lesion, means):
        logits = model(split.inputs)
    top, ties = topk_and_ties(logits, k)
    if k < logits.shape[1]:
        values = logits.topk(k + 1).values
        ties |= (values[:, k - 1] - values[:, k]) <= TIE_TOLERANCE * values[:, k - 1 : k + 1].abs().amax(1)
    return top.numpy(), ties.numpy()


def _assert_same(
    model: nn.Module, split: Split, lesions: list[Lesion], k: int = 3, means=None, reference=None, **kwargs
) -> int:
    """Every fast outcome equals the reference on every non-near-tie sample; returns the near-ties seen."""
    outcomes = list(evaluate(model, split, lesions, k=k, means=means, engine="fast", **kwargs))
    assert sorted(o.lesion.key for o in outcomes) == sorted(lesion.key for lesion in lesions)
    ties_seen = 0
    for outcome in outcomes:
        key = outcome.lesion.key
        top, ties = reference[key] if reference else _reference(model, split, outcome.lesion, k, means)
        keep = ~ties
        assert (outcome.topk[keep, 0] == top[keep, 0]).all(), outcome.lesion.key
        assert (np.sort(outcome.topk[keep], 1) == np.sort(top[keep], 1)).all(), outcome.lesion.key
        ties_seen += int(ties.sum())
    return ties_seen


def _plan(model: nn.Module, method: str = "zero") -> list[Lesion]:
    """Single, pair and group lesions of every layer, and one lesion spanning two layers."""
    found = layers(model)
    plan = []
    for layer in found:
        n = layer.n_units
        plan += [Lesion(((layer.name, (u,)),), method) for u in (0, n // 2)]
        plan += [Lesion(((layer.name, (0, n - 1)),), method), Lesion(((layer.name, tuple(range(0, n, 2))),), method)]
    plan.append(Lesion(((found[0].name, (0,)), (found[1].name, (1,))), method))
    return plan


@pytest.fixture(params=[1, 2, 3, 7])
def fixed_k(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(_fast, "chunk_size", lambda cut, batch, memory: request.param)
    return request.param


def test_toy_network_matches_hand_computed_accuracies(fixed_k: int) -> None:
    model, data = toy_network(), toy_data()
    lesions = [Lesion.from_key(key) for key in TOY_EXPECTED]
    for outcome in evaluate(model, data, lesions, k=1, engine="fast", batch_size=5):
        correct = outcome.topk[:, 0] == data.labels.numpy()
        per_class = tuple(float(correct[data.labels.numpy() == c].mean()) for c in range(4))
        assert per_class == TOY_EXPECTED[outcome.lesion.key]
        assert outcome.near_ties == 0


@functools.cache
def _case(name: str, method: str) -> tuple[nn.Module, Split, list[Lesion], dict | None, dict]:
    """A seeded model, data, plan, means and the reference results (computed once for every K)."""
    torch.manual_seed(0)
    build, shape = MODELS[name]
    model = build().eval()
    split = _split(shape, n=24, n_classes=10 if name != "skip" else 5)
    lesions = _plan(model, method)
    means = unit_means(model, [layer.name for layer in layers(model)], [(split.inputs, split.labels)]) if method == "mean" else None
    return model, split, lesions, means, {lesion.key: _reference(model, split, lesion, 3, means) for lesion in lesions}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", ["zero", "mean"])
def test_fast_equals_reference(name: str, method: str, fixed_k: int) -> None:
    model, split, lesions, means, reference = _case(name, method)
    _assert_same(model, split, lesions, means=means, batch_size=10, reference=reference)


@pytest.mark.parametrize("batch_size", [1, 3, 40, 64])
def test_batch_sizes(batch_size: int) -> None:
    model = meyes2020_cnn(width=4).eval()
    split = _split((1, 28, 28), n=17)
    _assert_same(model, split, _plan(model), batch_size=batch_size)


def test_memory_budget_chooses_k() -> None:
    model = meyes2020_cnn(width=4).eval()
    gm = trace(model)
    propagate_shapes(gm, torch.zeros(2, 1, 28, 28))
    cut = make_cut(gm, "conv1", 1)
    assert _fast.chunk_size(cut, 10, 3 * 10 * cut.row_bytes) == 3
    assert _fast.chunk_size(cut, 10, 1) == 1
    split = _split((1, 28, 28), n=12)
    _assert_same(model, split, _plan(model), batch_size=5, memory=1)


def test_cuts_mask_after_channelwise_ops_and_update_next_layer() -> None:
    gm = trace(meyes2020_cnn(width=4).eval())
    propagate_shapes(gm, torch.zeros(2, 1, 28, 28))
    conv1 = make_cut(gm, "conv1", 1)
    assert [n.target for n in conv1.chain] == ["relu1", "pool1"] and conv1.cut == "conv2"
    conv3 = make_cut(gm, "conv3", 1)
    assert conv3.flatten and conv3.cut == "fc1"
    gm = trace(SkipNet().eval())
    propagate_shapes(gm, torch.zeros(2, 1, 8, 8))
    skip = make_cut(gm, "conv1", 1)  # conv1's ReLU output feeds conv2 and the skip: no update
    assert skip.update is None and skip.source == "relu"


def test_model_untouched_and_no_hooks_left() -> None:
    model = meyes2020_cnn(width=4)
    before = {name: t.clone() for name, t in [*model.named_parameters(), *model.named_buffers()]}
    model.train()
    list(evaluate(model, _split((1, 28, 28), n=8), _plan(model), k=2, engine="fast", batch_size=4))
    assert model.training and all(m.training for m in model.modules())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        assert torch.equal(tensor, before[name]), name
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_untraceable_model_falls_back_with_one_warning() -> None:
    model = Untraceable().eval()
    split = _split((4,), n=10, n_classes=4)
    lesions = [Lesion((("fc1", (u,)),)) for u in range(5)]
    with pytest.raises(LesionError, match="cannot trace"):
        evaluate(model, split, lesions, engine="fast")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcomes = list(evaluate(model, split, lesions, k=2, engine="auto"))
    assert len(caught) == 1 and "reference path" in str(caught[0].message)
    reference = list(evaluate(model, split, lesions, k=2, engine="reference"))
    assert all((a.topk == b.topk).all() for a, b in zip(outcomes, reference, strict=True))


def test_mean_lesions_need_means() -> None:
    model = meyes2019_mlp()
    with pytest.raises(LesionError, match="means"):
        evaluate(model, _split((784,)), [Lesion((("fc1", (0,)),), "mean")], engine="fast")


def test_lesion_of_the_logits_layer(fixed_k: int) -> None:
    model = nn.Sequential(OrderedDict(fc=nn.Linear(3, 4), relu=nn.ReLU(), out=nn.Linear(4, 3))).eval()
    split = _split((3,), n=30, n_classes=3)
    _assert_same(model, split, [Lesion((("out", (1,)),)), Lesion((("out", (0, 2)),)), Lesion((("fc", (0, 3)),))], k=2)


@pytest.mark.parametrize("name", ["cnn", "vgg_bn", "skip"])
def test_channels_last_equals_reference(name: str) -> None:
    model, split, lesions, _, reference = _case(name, "zero")
    _assert_same(model, split, lesions, batch_size=10, reference=reference, channels_last=True)


@pytest.mark.parametrize("cache", [0, 2**30])
def test_one_lesion_per_round_with_and_without_kept_values(monkeypatch: pytest.MonkeyPatch, cache: int) -> None:
    monkeypatch.setattr(_fast, "ROUND_BYTES", 1)
    monkeypatch.setattr(_fast, "CACHE_BYTES", cache)
    for name in ("cnn", "skip"):
        model, split, lesions, _, reference = _case(name, "zero")
        _assert_same(model, split, lesions, batch_size=10, reference=reference)


def test_rounds_of_one_layer_reuse_the_intact_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept values: the intact network runs once per layer, not once per round (one lesion each here)."""
    calls: list[tuple[str, ...]] = []
    build = _fast.values_module

    def counting(gm: torch.fx.GraphModule, names: list[str]):  # type: ignore[no-untyped-def]
        module = build(gm, names)
        return lambda x: calls.append(tuple(names)) or module(x)

    monkeypatch.setattr(_fast, "values_module", counting)
    monkeypatch.setattr(_fast, "ROUND_BYTES", 1)
    model, split = meyes2019_mlp().eval(), _split((784,), n=40)
    lesions = [Lesion(((layer, (u,)),)) for layer in ("fc1", "fc2") for u in range(6)]
    assert len(list(evaluate(model, split, lesions, k=2, engine="fast", batch_size=10))) == 12
    assert len(calls) == 2 * 4  # two layers × four data batches
    calls.clear()
    monkeypatch.setattr(_fast, "CACHE_BYTES", 0)
    list(evaluate(model, split, lesions, k=2, engine="fast", batch_size=10))
    assert len(calls) == 12 * 4
