"""The `fraction` selector: similar-filter groups, random draws, ranked units."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from lesion import Lesion, LesionError
from lesion.models import meyes2019_mlp
from lesion.plans import fraction, group_size, unit_weights


def angled(degrees: list[float], scales: list[float]) -> nn.Module:
    """One Linear layer ``fc`` (2 -> n) whose unit u has incoming weights scales[u]·(cos, sin)(degrees[u])."""
    rows = [[s * math.cos(math.radians(d)), s * math.sin(math.radians(d))] for d, s in zip(degrees, scales, strict=True)]
    layer = nn.Linear(2, len(rows), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(rows))
    return nn.Sequential(OrderedDict(fc=layer))


@pytest.fixture
def six() -> nn.Module:
    # Units 4 and 5 point the same way (distance exactly 0 after normalisation); the scales differ
    # so only the normalised weights give these groups.
    return angled([0, 10, 30, 90, 180, 180], [1, 3, 0.5, 2, 1, 2])


def groups(plan) -> list[tuple[int, ...]]:
    return [lesion.units[0][1] for lesion in plan]


def test_group_size_rounds_halves_up_and_keeps_one() -> None:
    assert [group_size(p, 64) for p in (0.01, 0.05, 0.1, 0.25, 1.0)] == [1, 3, 6, 16, 64]
    assert group_size(0.25, 10) == 3
    assert group_size(0.001, 10) == 1


def test_similar_groups_follow_the_normalised_distances(six: nn.Module) -> None:
    plan = fraction(six, "fc", 0.5, "similar")
    # refs 0, 1, 2 share {0, 1, 2}; ref 3's nearest are 2 (60°) and 1 (80°); refs 4 and 5 are
    # identical and take 3 (90°), the nearer of the rest.
    assert groups(plan) == [(0, 1, 2), (1, 2, 3), (3, 4, 5)]
    assert plan.info["members"] == {
        "fc:0-2": [["fc", 0.5, 0], ["fc", 0.5, 1], ["fc", 0.5, 2]],
        "fc:1-3": [["fc", 0.5, 3]],
        "fc:3-5": [["fc", 0.5, 4], ["fc", 0.5, 5]],
    }
    assert plan.info["by"] == "similar" and plan.info["sizes"] == {"fc": [3]}


def test_similar_ties_go_to_the_lower_unit_index(six: nn.Module) -> None:
    plan = fraction(six, "fc", 0.8, "similar")  # 5 of 6 units
    members = plan.info["members"]
    # From unit 0, units 4 and 5 are both at distance exactly 2: 4 is taken.
    assert ["fc", 0.8, 0] in members["fc:0-4"]
    # From unit 3, units 0, 4, 5 are all at distance sqrt(2): 0 and then 4 are taken.
    assert ["fc", 0.8, 3] in members["fc:0-4"]


def test_similar_matches_a_brute_force_ranking() -> None:
    conv = nn.Conv2d(3, 7, 3)
    model = nn.Sequential(OrderedDict(conv=conv))
    w = conv.weight.detach().double().reshape(7, -1)
    w = w / w.norm(dim=1, keepdim=True)
    plan = fraction(model, "conv", 3 / 7, "similar")
    expected = set()
    for ref in range(7):
        others = sorted((float((w[ref] - w[u]).norm()), u) for u in range(7) if u != ref)
        expected.add(tuple(sorted([ref, others[0][1], others[1][1]])))
    assert set(groups(plan)) == expected
    assert sum(len(m) for m in plan.info["members"].values()) == 7


def test_unit_weights_flatten_filters_and_normalise() -> None:
    conv = nn.Conv2d(2, 3, 2)
    with torch.no_grad():
        conv.weight[1].zero_()
    w = unit_weights(nn.Sequential(OrderedDict(conv=conv)), "conv")
    assert w.shape == (3, 8) and w.dtype == torch.float64
    assert torch.allclose(w.norm(dim=1), torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64))
    assert torch.allclose(w[0], conv.weight[0].double().flatten() / conv.weight[0].double().norm())


def test_random_draws_are_seeded_and_without_replacement() -> None:
    model = meyes2019_mlp()
    plan = fraction(model, ["fc1", "fc2"], [0.25, 0.5], "random", seed=3, draws=10)
    again = fraction(model, ["fc1", "fc2"], [0.25, 0.5], "random", seed=3, draws=10)
    other = fraction(model, ["fc1", "fc2"], [0.25, 0.5], "random", seed=4, draws=10)
    assert plan.keys == again.keys and plan.info["draws"] == again.info["draws"]
    assert plan.keys != other.keys
    draws = plan.info["draws"]
    assert len(draws) == 2 * 2 * 10
    sizes = {"fc1": {0.25: 5, 0.5: 10}, "fc2": {0.25: 3, 0.5: 5}}
    for layer, p, _, units in draws:
        assert len(set(units)) == len(units) == sizes[layer][p]
        assert units == sorted(units)
    first = np.random.default_rng(3).choice(20, 5, replace=False)
    assert draws[0][:3] == ["fc1", 0.25, 0] and draws[0][3] == sorted(first.tolist())
    assert all(lesion.size in (3, 5, 10) for lesion in plan)


def test_random_identical_draws_are_one_lesion_with_all_members() -> None:
    model = angled([0, 90, 180], [1, 1, 1])
    plan = fraction(model, "fc", 0.3, "random", seed=0, draws=10)  # 1 unit of 3, ten times
    assert len(plan) <= 3
    assert sum(len(m) for m in plan.info["members"].values()) == 10
    for key, members in plan.info["members"].items():
        for _, _, index in members:
            assert Lesion.from_key(key).units[0][1] == tuple(plan.info["draws"][index][3])


def test_ranked_takes_the_lowest_or_highest_values() -> None:
    model = meyes2019_mlp()
    values = np.array([5, 1, 3, 1, 9, 0, 2, 8, 7, 4], dtype=float)
    low = fraction(model, "fc2", [0.3, 0.5], "ranked", attribute={"fc2": values})
    assert groups(low) == [(1, 3, 5), (1, 2, 3, 5, 6)]
    assert low.info["order"]["fc2"][:3] == [5, 1, 3]  # 1 and 3 tie at value 1: lower index first
    high = fraction(model, "fc2", 0.3, "ranked", attribute={"fc2": torch.tensor(values)}, highest=True)
    assert groups(high) == [(4, 7, 8)]
    assert high.info["members"] == {"fc2:4,7-8": [["fc2", 0.3, 0]]}


def test_globs_and_model_order() -> None:
    plan = fraction(meyes2019_mlp(), ["fc2", "fc*"], 0.1, "random", draws=1)
    assert plan.info["layers"] == ["fc1", "fc2"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer_names": "fc9", "fractions": 0.1, "selector": "random"}, "unknown layer 'fc9'"),
        ({"layer_names": "fc1", "fractions": 0.0, "selector": "random"}, "fractions must be proportions"),
        ({"layer_names": "fc1", "fractions": [], "selector": "random"}, "at least one proportion"),
        ({"layer_names": "fc1", "fractions": 0.1, "selector": "similarr"}, "closest: 'similar'"),
        ({"layer_names": "fc1", "fractions": 0.1, "selector": "random", "draws": 0}, "draws: expected an integer >= 1"),
        ({"layer_names": "fc1", "fractions": 0.1, "selector": "ranked"}, "needs attribute="),
        ({"layer_names": "fc1", "fractions": 0.1, "selector": "ranked", "attribute": {"fc2": [0] * 10}}, "no values for layer 'fc1'"),
        ({"layer_names": "fc2", "fractions": 0.1, "selector": "ranked", "attribute": {"fc2": [0] * 3}}, "shape \\(10,\\)"),
        ({"layer_names": "fc1", "fractions": 0.1, "selector": "random", "method": "noise"}, "method must be"),
    ],
)
def test_bad_input_is_a_lesion_error(kwargs: dict, message: str) -> None:
    with pytest.raises(LesionError, match=message):
        fraction(meyes2019_mlp(), **kwargs)
