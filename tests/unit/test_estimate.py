"""First-order lesion estimates: exact where the network is linear after the unit, labelled as estimates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lesion import Lesion, LesionError, evaluate, unit_means
from lesion.data import Split
from lesion.engine._estimate import KIND, estimate
from lesion.models import meyes2019_mlp
from lesion.testing import TOY_EXPECTED, toy_data, toy_network


def test_toy_network_estimates_are_exact() -> None:
    # hidden -> ReLU -> out: the logits are linear in relu(hidden), so a * d/da is the exact change.
    model, data = toy_network(), toy_data()
    table = estimate(model, data, ["hidden"], batch_size=5)
    assert (table["kind"] == KIND).all() and table["estimate"].all()
    for unit in range(5):
        rows = table[(table["lesion"] == f"hidden:{unit}") & (table["class"] != "overall")]
        assert tuple(rows["accuracy"]) == TOY_EXPECTED[f"hidden:{unit}"]
        assert tuple(rows["intact_accuracy"]) == TOY_EXPECTED["intact"]
    overall = table[table["class"] == "overall"].set_index("lesion")
    assert overall.loc["hidden:0", "rank"] == 1  # kills class 0: the largest drop
    assert overall.loc["hidden:4", "change"] == pytest.approx(2 / 14)


@pytest.mark.parametrize("method", ["zero", "mean"])
def test_logit_layer_estimates_match_the_exact_sweep(method: str) -> None:
    # Lesioning a unit of the logits layer changes that logit only, linearly: the estimate is exact.
    model = meyes2019_mlp().eval()
    x = torch.rand(64, 784)
    split = Split("random", x, model(x).argmax(1).detach(), tuple(str(i) for i in range(10)))
    means = unit_means(model, ["out"], [(x, split.labels)]) if method == "mean" else None
    table = estimate(model, split, ["out"], method=method, means=means, batch_size=20)
    lesions = [Lesion((("out", (u,)),), method) for u in range(10)]
    labels = split.labels.numpy()
    for outcome in evaluate(model, split, lesions, k=1, means=means, engine="reference"):
        exact = float((outcome.topk[:, 0] == labels).mean())
        row = table[(table["lesion"] == outcome.lesion.key) & (table["class"] == "overall")]
        assert float(row["accuracy"].iloc[0]) == pytest.approx(exact)


def test_model_left_untouched() -> None:
    model = meyes2019_mlp().train()
    before = [p.clone() for p in model.parameters()]
    estimate(model, Split("r", torch.rand(8, 784), torch.arange(8) % 10, tuple("abcdefghij")), ["fc1", "fc2"])
    assert model.training
    assert all(p.grad is None and torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert all(not m._forward_hooks for m in model.modules())


def test_bad_input() -> None:
    model, data = toy_network(), toy_data()
    with pytest.raises(LesionError, match="hiden"):
        estimate(model, data, ["hiden"])
    with pytest.raises(LesionError, match="means"):
        estimate(model, data, ["hidden"], method="mean")
    assert np.isfinite(estimate(model, data, ["hidden", "out"])["accuracy"]).all()
