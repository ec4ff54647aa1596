"""Coalitions of one layer's units evaluated many per pass, against one lesioned forward per coalition."""

from __future__ import annotations

import itertools
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lesion import LesionError, lesioned, unit_means
from lesion.data import Split
from lesion.engine import EngineOptions, topk_and_ties
from lesion.models import meyes2019_mlp, meyes2020_cnn
from lesion.search import coalition, players_of
from lesion.search._coalitions import LayerCoalitions, _top1_correct
from lesion.stats._shapley import permutation_orders, sample_orders
from lesion.testing import TOY_EXPECTED, toy_data, toy_network


def _random_split(model: nn.Module, shape: tuple[int, ...], n: int = 40) -> Split:
    """Random inputs labelled with the intact model's predictions (so that lesions cost accuracy)."""
    inputs = torch.randn(n, *shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        labels = model(inputs).argmax(1)
    return Split("random/test", inputs, labels, tuple(map(str, range(10))))


def _per_sample_truth(model: nn.Module, split: Split, players: list, members: np.ndarray, means: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 correct and cross-entropy per coalition and sample (C, N), one lesioned forward each (the truth)."""
    correct, losses = [], []
    for row in members:
        lesion = coalition(players, np.flatnonzero(row).tolist())
        with torch.inference_mode(), lesioned(model, lesion, means):
            logits = model(split.inputs)
        top, _ = topk_and_ties(logits, 1)
        correct.append((top[:, 0] == split.labels).numpy())
        losses.append(F.cross_entropy(logits.double(), split.labels, reduction="none").numpy())
    return np.array(correct), np.array(losses)


def _one_forward_each(model: nn.Module, split: Split, players: list, members: np.ndarray, means: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-class correct counts and summed loss of each coalition, one lesioned forward each (the truth)."""
    correct, losses = _per_sample_truth(model, split, players, members, means)
    counts = [np.bincount(split.labels.numpy(), weights=row, minlength=split.n_classes) for row in correct]
    return np.array(counts), losses.sum(1)


def _every_coalition(n: int) -> np.ndarray:
    return np.array(list(itertools.product([False, True], repeat=n)))


def _cnn() -> nn.Module:
    """A small 2020 CNN with weights large enough (x3) that the inputs, not the biases, decide."""
    torch.manual_seed(0)
    model = meyes2020_cnn(image_size=8, width=4, hidden=16).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("weight"):
                parameter.mul_(3)
    return model


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return meyes2019_mlp(in_features=64).eval()


@pytest.mark.parametrize(
    ("build", "shape", "layer", "method"),
    [
        (_mlp, (64,), "fc1:0-5", "zero"),
        (_mlp, (64,), "fc2:2-7", "mean"),
        (_cnn, (1, 8, 8), "conv2", "zero"),  # channels through ReLU and max-pooling, then a conv
        (_cnn, (1, 8, 8), "conv3", "mean"),  # mean maps, then a flatten into a Linear
    ],
)
def test_coalitions_equal_one_lesioned_forward_each(build, shape, layer, method):
    model = build()
    split = _random_split(model, shape)
    players = players_of(model, layer, method=method)
    means = unit_means(model, [layer.split(":")[0]], split.batches(16)) if method == "mean" else None
    members = _every_coalition(len(players))
    together = LayerCoalitions.plan(model, split, players, EngineOptions(batch_size=16, memory=20_000), means)
    assert together is not None
    counts, losses = together.evaluate(members, loss=True)
    want_counts, want_losses = _one_forward_each(model, split, players, members, means)
    assert (counts == want_counts).all()
    assert losses == pytest.approx(want_losses, rel=1e-5)
    assert len({tuple(c) for c in counts}) > 1  # the lesions do change predictions
    # one order per sample: sample b's outcome with the first j players of its own order lesioned
    truth_correct, truth_loss = _per_sample_truth(model, split, players, members, means)
    per_sample = sample_orders(len(players), len(split), [0, 1], seed=2)
    sampled, sampled_loss = together.sample_chains(per_sample, loss=True)
    for d in range(2):
        for b in range(len(split)):
            for j in range(len(players) + 1):
                row = sum(1 << (len(players) - 1 - i) for i in per_sample[d, b, :j])
                assert sampled[d, b, j] == truth_correct[row, b]
                assert sampled_loss[d, b, j] == pytest.approx(truth_loss[row, b], rel=1e-5, abs=1e-6)
    # chains of cumulative lesions: prefix j of an order is the coalition of its first j + 1 players
    orders = permutation_orders(len(players), 0, 5, seed=1)
    chain_counts, chain_losses = together.evaluate_chains(orders, loss=True)
    for p, order in enumerate(orders):
        for j in range(len(order) - 1):
            row = sum(1 << (len(players) - 1 - i) for i in order[: j + 1])  # the bitmask's row in _every_coalition
            assert (chain_counts[p, j] == want_counts[row]).all()
            assert chain_losses[p, j] == pytest.approx(want_losses[row], rel=1e-5)


def test_toy_coalitions_give_the_hand_worked_accuracies():
    model, split = toy_network(), toy_data()
    players = players_of(model, "hidden")
    together = LayerCoalitions.plan(model, split, players, EngineOptions(), None)
    assert together is not None
    members = _every_coalition(5)
    counts, _ = together.evaluate(members)
    sizes = np.bincount(split.labels.numpy())
    keys = [coalition(players, np.flatnonzero(row).tolist()).key for row in members]
    for key, expected in TOY_EXPECTED.items():
        assert tuple(counts[keys.index(key)] / sizes) == pytest.approx(expected)
    assert (counts == _one_forward_each(model, split, players, members, None)[0]).all()
    # most samples leave most hidden units at 0: chains copy those prefixes' outcomes, which must still be right
    orders = np.array(list(itertools.permutations(range(5))))
    chain_counts, _ = together.evaluate_chains(orders)
    for p, order in enumerate(orders):
        for j in range(4):
            row = sum(1 << (4 - i) for i in order[: j + 1])
            assert (chain_counts[p, j] == counts[row]).all()


def test_top1_breaks_exact_ties_as_the_engine_does():
    logits = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [3.0, 1.0, 3.0], [0.0, 1.0, 0.5], [2.0, 2.0, 2.0]])
    for labels in (torch.tensor([1, 1, 2, 1, 0]), torch.tensor([0, 2, 0, 2, 1])):
        top, _ = topk_and_ties(logits, 1)
        assert (_top1_correct(logits, labels) == (top[:, 0] == labels)).all()


def test_where_the_path_does_not_apply():
    model = _mlp()
    split = _random_split(model, (64,))
    across = [*players_of(model, "fc1:0-1"), *players_of(model, "fc2:0")]
    assert LayerCoalitions.plan(model, split, across, EngineOptions(), None) is None
    assert LayerCoalitions.plan(model, split, players_of(model, "fc1:0-3"), EngineOptions(engine="reference"), None) is None

    class Branchy(nn.Module):  # data-dependent control flow: fx cannot trace it
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(OrderedDict(a=nn.Linear(64, 4), out=nn.Linear(4, 10)))

        def forward(self, x):
            return self.layers(x) if x.sum() > 0 else -self.layers(x)

    branchy = Branchy().eval()
    players = players_of(branchy, "layers.a")
    assert LayerCoalitions.plan(branchy, split, players, EngineOptions(), None) is None
    with pytest.raises(LesionError, match=r"engine 'fast'.*layers\.a"):
        LayerCoalitions.plan(branchy, split, players, EngineOptions(engine="fast"), None)
