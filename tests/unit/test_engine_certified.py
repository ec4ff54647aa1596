"""Certified skipping (engine/_certify.py) gives the reference path's full top-k order, sample by sample.

Stricter than test_engine_fast: every rank of the top-k (not just the set) and the near-tie count
must equal the reference's, except on samples whose reference logits are within the near-tie
tolerance at some rank down to k + 1. Each case also checks that certification really ran: some
(lesion, sample) rows were certified and some were not.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from lesion import Lesion, evaluate, lesioned, unit_means
from lesion.data import Split
from lesion.engine import TIE_TOLERANCE, _fast, topk_and_ties
from lesion.engine._split_graph import make_cut, propagate_shapes, trace
from lesion.models import meyes2019_mlp, meyes2020_cnn
from lesion.testing import toy_data, toy_network


def _split(x: torch.Tensor, n_classes: int) -> Split:
    return Split("random", x, torch.randint(0, n_classes, (len(x),)), tuple(str(i) for i in range(n_classes)))


def _reference(model: nn.Module, split: Split, lesion: Lesion, k: int, means: dict | None) -> tuple[np.ndarray, int, np.ndarray]:
    """Reference top-k (N, k), its near-tie count, and which samples have a near-tie at any rank <= k + 1."""
    with torch.inference_mode(), lesioned(model.eval(), lesion, means):
        logits = model(split.inputs)
    top, ties = topk_and_ties(logits, k)
    values = logits.topk(min(k + 1, logits.shape[1])).values
    close = (values[:, :-1] - values[:, 1:]) <= TIE_TOLERANCE * torch.maximum(values[:, :-1].abs(), values[:, 1:].abs())
    return top.numpy(), int(ties.sum()), close.any(1).numpy()


def _singles_and_pairs(model: nn.Module, layer: str, method: str) -> list[Lesion]:
    module = model.get_submodule(layer)
    n = {nn.BatchNorm1d: "num_features", nn.Conv2d: "out_channels"}.get(type(module), "out_features")
    n = getattr(module, n)
    units = [(u,) for u in range(n)] + [(u, (u * 7 + 3) % n) for u in range(n) if (u * 7 + 3) % n != u]
    return [Lesion(((layer, tuple(sorted(u))),), method) for u in units]


@pytest.fixture
def certified(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """[certified, uncertified] (lesion, sample) rows seen by the engine."""
    seen = [0, 0]
    check = _fast.certify

    def counting(*args: object) -> torch.Tensor:
        result = check(*args)  # type: ignore[arg-type]
        seen[0] += int(result.sum())
        seen[1] += int((~result).sum())
        return result

    monkeypatch.setattr(_fast, "certify", counting)
    return seen


def _assert_exact(model: nn.Module, split: Split, lesions: list[Lesion], k: int, means: dict | None = None, **kwargs: object) -> None:
    outcomes = list(evaluate(model, split, lesions, k=k, means=means, engine="fast", **kwargs))
    assert sorted(o.lesion.key for o in outcomes) == sorted(lesion.key for lesion in lesions)
    for outcome in outcomes:
        top, ties, close = _reference(model, split, outcome.lesion, k, means)
        keep = ~close
        assert (outcome.topk[keep] == top[keep]).all(), outcome.lesion.key
        assert outcome.near_ties == ties, outcome.lesion.key


def _swap_network() -> nn.Sequential:
    """3 inputs -> ``hidden`` (3 ReLU units, = relu(x)) -> 7 logits, built so that for k = 5:

    * ``hidden:0`` adds 0.2 * h0 to class 4 (bias 1.8; class 5 has bias 1.9): with h0 = 1 class 4 is
      rank 5 (2.0 > 1.9) and its lesion swaps ranks 5 and 6; with h0 = 0.25 it is rank 6 already;
    * ``hidden:1`` adds 0.4 * h1 to class 0 (bias 4.8; class 1 has 5.0): with h1 = 1 class 0 is
      rank 1 and its lesion swaps the top 2;
    * ``hidden:2`` adds 0.01 * h2 to class 3 (bias 3): its lesion changes nothing.
    """
    hidden, out = nn.Linear(3, 3), nn.Linear(3, 7)
    with torch.no_grad():
        hidden.weight.copy_(torch.eye(3))
        hidden.bias.zero_()
        out.weight.zero_()
        out.weight[4, 0], out.weight[0, 1], out.weight[3, 2] = 0.2, 0.4, 0.01
        out.bias.copy_(torch.tensor([4.8, 5.0, 4.0, 3.0, 1.8, 1.9, 0.0]))
    return nn.Sequential(OrderedDict(hidden=hidden, relu=nn.ReLU(), out=out)).eval()


def _swap_data() -> Split:
    levels = torch.tensor([0.0, 0.25, 1.0])
    grid = torch.cartesian_prod(levels, levels, levels)  # (27, 3): every mix of the three units
    return _split(grid, 7)


@pytest.mark.parametrize("method", ["zero", "mean"])
def test_lesions_that_swap_ranks_5_and_6_or_the_top_2_are_evaluated(method: str, certified: list[int]) -> None:
    model, split = _swap_network(), _swap_data()
    units = [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2)]
    lesions = [Lesion((("hidden", u),), method) for u in units]
    means = unit_means(model, ["hidden"], [(split.inputs, split.labels)]) if method == "mean" else None
    intact = model(split.inputs).topk(5).indices
    with torch.inference_mode(), lesioned(model, Lesion.from_key("hidden:0"), None):
        swapped = model(split.inputs).topk(5).indices
    assert ((intact[:, 4] == 4) & (swapped[:, 4] == 5)).any()  # the network does what its docstring says
    _assert_exact(model, split, lesions, k=5, means=means)
    assert certified[0] > 0 and certified[1] > 0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_toy_network_every_k(k: int, certified: list[int]) -> None:
    """The toy network's hidden layer: the cut is the logits layer itself (no activation after it)."""
    model, split = toy_network(), toy_data()
    _assert_exact(model, split, _singles_and_pairs(model, "hidden", "zero"), k=k)
    assert certified[0] > 0 and certified[1] > 0


def _trained(model: nn.Module, x: torch.Tensor, n_classes: int, steps: int = 60) -> tuple[nn.Module, Split]:
    """``model`` fitted briefly to a random linear teacher, so that its logits have trained-like margins."""
    torch.manual_seed(1)
    x = x.to(next(model.parameters()).dtype)
    teacher = torch.randn(x[0].numel(), n_classes, dtype=x.dtype)
    labels = (x.flatten(1) @ teacher).argmax(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), labels).backward()
        optimizer.step()
    model.eval()
    return model, Split("teacher", x, labels, tuple(str(i) for i in range(n_classes)))


def _bn_mlp() -> nn.Module:
    model = meyes2019_mlp(in_features=12, hidden=(16, 12), batch_norm=True)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(-1.5, 1.5)  # negative scales too
                m.bias.uniform_(-0.5, 0.5)
    return model


class _TanhNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(12, 16), nn.Linear(16, 12), nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.fc2(torch.relu(self.fc1(x)))))


def _conv_flatten() -> nn.Module:
    """conv -> ReLU -> flatten -> Linear -> ReLU -> logits: a conv lesion's update is the Linear, through the flatten."""
    layers = OrderedDict(conv=nn.Conv2d(1, 16, 3, padding=1), relu1=nn.ReLU(), flatten=nn.Flatten(), fc=nn.Linear(16 * 3 * 3, 24))
    return nn.Sequential(OrderedDict(**layers, relu2=nn.ReLU(), out=nn.Linear(24, 10)))


NETWORKS = {
    "mlp": (lambda: meyes2019_mlp(in_features=12, hidden=(16, 12)), (12,), ["fc1", "fc2"]),
    "mlp_bn_eval": (_bn_mlp, (12,), ["bn1", "fc2"]),
    "mlp_float64": (lambda: meyes2019_mlp(in_features=12, hidden=(16, 12)).double(), (12,), ["fc1", "fc2"]),
    "tanh": (_TanhNet, (12,), ["fc1"]),
    "cnn": (lambda: meyes2020_cnn(width=3, image_size=8, hidden=16), (1, 8, 8), ["fc1", "fc2"]),
    "conv_flatten": (_conv_flatten, (1, 3, 3), ["conv"]),
}


@pytest.mark.parametrize("name", list(NETWORKS))
@pytest.mark.parametrize("method", ["zero", "mean"])
def test_trained_networks_singles_and_pairs(name: str, method: str, certified: list[int]) -> None:
    torch.manual_seed(0)
    build, shape, names = NETWORKS[name]
    model, split = _trained(build(), torch.randn(60, *shape), 10)
    means = unit_means(model, names, [(split.inputs, split.labels)]) if method == "mean" else None
    lesions = [lesion for layer in names for lesion in _singles_and_pairs(model, layer, method)]
    _assert_exact(model, split, lesions, k=5, means=means, batch_size=16)
    assert certified[0] > 0 and certified[1] > 0


class _Deep(nn.Module):
    """Two activations after fc1's cut (fc2): its suffix is not bounded, so fc1 is evaluated in full."""

    def __init__(self, act: type[nn.Module]) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3, self.out = nn.Linear(12, 16), nn.Linear(16, 12), nn.Linear(12, 12), nn.Linear(12, 10)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.fc3(self.act(self.fc2(torch.relu(self.fc1(x)))))))


@pytest.mark.parametrize(("model", "layer", "bounded"), [
    (_Deep(nn.ReLU), "fc1", False),
    (_Deep(nn.ReLU), "fc2", True),
    (_Deep(nn.GELU), "fc2", False),  # GELU is not monotone
    (meyes2019_mlp(in_features=12, hidden=(16, 12), dropout=0.5), "fc1", True),
])  # fmt: skip
def test_which_suffixes_are_bounded(model: nn.Module, layer: str, bounded: bool) -> None:
    gm = trace(model.eval())
    propagate_shapes(gm, torch.randn(2, 12))
    assert (make_cut(gm, layer, 1).bound is not None) == bounded


def test_unbounded_suffix_falls_back_to_full_evaluation(certified: list[int]) -> None:
    torch.manual_seed(0)
    model, split = _trained(_Deep(nn.GELU), torch.randn(50, 12), 10)
    _assert_exact(model, split, _singles_and_pairs(model, "fc1", "zero") + _singles_and_pairs(model, "fc2", "zero"), k=5)
    assert certified == [0, 0]


def test_no_certificates_without_the_memory_for_them(monkeypatch: pytest.MonkeyPatch, certified: list[int]) -> None:
    monkeypatch.setattr(_fast, "CERTIFY_BYTES", 0)
    torch.manual_seed(0)
    model, split = _trained(meyes2019_mlp(in_features=12, hidden=(16, 12)), torch.randn(40, 12), 10)
    _assert_exact(model, split, _singles_and_pairs(model, "fc1", "zero"), k=5, batch_size=16)
    assert certified == [0, 0]
