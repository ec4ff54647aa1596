"""Random rotation of a layer's representation: same function, rotated directions as units."""

from __future__ import annotations

import io

import pytest
import torch

import lesion
from lesion import LesionError
from lesion.models import build_model
from lesion.rotation import random_orthogonal, rotate
from lesion.testing import TOY_EXPECTED, toy_data, toy_network


def _bytes(model: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def _cnn() -> torch.nn.Sequential:
    model = build_model("meyes2020-cnn", width=6, hidden=16, batch_norm=True, dropout=0.5)
    with torch.no_grad():  # batch-norm statistics away from the identity, so they matter
        for bn in (model.bn1, model.bn3, model.bn4):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 2)
    return model.eval()


@pytest.mark.parametrize("layer", ["conv1", "conv2", "conv3", "fc1", "fc2"])
def test_rotated_network_computes_the_same_function(layer: str) -> None:
    model, x = _cnn(), torch.randn(16, 1, 28, 28)
    before = _bytes(model)
    rotated = rotate(model, layer, seed=3)
    assert _bytes(model) == before  # the original is untouched
    assert rotated.layer == f"{layer}_rotated" and rotated.layer in {info.name for info in lesion.layers(rotated.model)}
    q = rotated.q
    assert torch.allclose(q @ q.T, torch.eye(len(q), dtype=torch.float64), atol=1e-12)
    assert not torch.allclose(q.abs(), torch.eye(len(q), dtype=torch.float64))
    with torch.no_grad():
        assert torch.allclose(rotated.model(x), model(x), atol=1e-5, rtol=0)
        assert torch.equal(rotated.model(x).argmax(1), model(x).argmax(1))
        exact = rotate(model.double(), layer, seed=3)
        assert torch.allclose(exact.model(x.double()), model.double()(x.double()), atol=1e-12, rtol=0)
    assert torch.equal(exact.q, q)  # the seed alone fixes Q


def test_a_permutation_makes_rotated_units_the_original_units() -> None:
    # z = Q h with Q[j, perm[j]] = 1: z_j = h_perm[j], so lesioning rotated unit j must give exactly
    # the hand-worked per-class accuracies of lesioning toy unit perm[j].
    perm = [3, 0, 4, 1, 2]
    q = torch.zeros(5, 5, dtype=torch.float64)
    q[range(5), perm] = 1
    rotated = rotate(toy_network(), "hidden", q=q)
    assert [name for name, _ in rotated.model.named_children()] == ["hidden", "relu", "hidden_rotated", "out"]
    outcomes = lesion.evaluate(rotated.model, toy_data(), [lesion.Lesion((("hidden_rotated", (j,)),)) for j in range(5)], k=1)
    labels = toy_data().labels.numpy()
    for j, outcome in enumerate(outcomes):
        per_class = tuple(float((outcome.topk[labels == c, 0] == c).mean()) for c in range(4))
        assert per_class == TOY_EXPECTED[f"hidden:{perm[j]}"]


def test_lesioning_a_rotated_unit_removes_its_direction() -> None:
    model = build_model("meyes2019-mlp", in_features=64).double().eval()
    x = torch.randn(9, 64, dtype=torch.float64)
    rotated = rotate(model, "fc1", seed=5)
    with torch.no_grad(), lesion.lesioned(rotated.model, lesion.Lesion((("fc1_rotated", (2,)),))):
        got = rotated.model(x)
    with torch.no_grad():
        h = torch.relu(model.fc1(x))
        q2 = rotated.q[2]
        projected = h - (h @ q2)[:, None] * q2[None, :]  # h with direction q_2 removed
        expected = model.out(torch.relu(model.fc2(projected)))
    assert torch.allclose(got, expected, atol=1e-12, rtol=0)


def test_random_orthogonal_is_seeded() -> None:
    assert torch.equal(random_orthogonal(7, 1), random_orthogonal(7, 1))
    assert not torch.equal(random_orthogonal(7, 1), random_orthogonal(7, 2))


def test_refusals() -> None:
    model = toy_network()
    with pytest.raises(LesionError, match="unknown top-level layer 'hiden'"):
        rotate(model, "hiden")
    with pytest.raises(LesionError, match="no Linear/Conv follows layer 'out'"):
        rotate(model, "out")
    with pytest.raises(LesionError, match="must be a Linear or Conv"):
        rotate(model, "relu")
    with pytest.raises(LesionError, match=r"q must be an orthogonal \(5, 5\) matrix"):
        rotate(model, "hidden", q=2 * torch.eye(5))


def _vgg() -> torch.nn.Module:
    model = build_model("vgg11_bn", width_divisor=16, classifier_width=12, image_size=28, in_channels=1, n_classes=10, dropout=0.5)
    with torch.no_grad():  # batch-norm statistics away from the identity, so they matter
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 2)
    return model.eval()


@pytest.mark.parametrize(("layer", "following"), [("features.0", "features.4"), ("features.22", "features.25"),
                                                  ("classifier.0", "classifier.3"), ("classifier.3", "classifier.6")])
def test_a_layer_inside_a_nested_sequential_rotates_exactly(layer: str, following: str) -> None:
    # VGG-11 with batch norm: conv -> BN -> ReLU (-> pool) -> Q -> next conv; Linear -> ReLU -> dropout -> Q -> Linear.
    model, x = _vgg().double(), torch.randn(8, 1, 28, 28, dtype=torch.float64)
    before = _bytes(model)
    rotated = rotate(model, layer, seed=1)
    assert _bytes(model) == before and rotated.layer == f"{layer}_rotated" and rotated.next_layer == following
    assert rotated.layer in {info.name for info in lesion.layers(rotated.model)}
    assert not torch.allclose(rotated.q.abs(), torch.eye(len(rotated.q), dtype=torch.float64))
    with torch.no_grad():
        assert torch.allclose(rotated.model(x), model(x), atol=1e-12, rtol=0)
    # Lesioning every rotated direction removes the whole representation, like lesioning every unit of the activation.
    activation = {"features.0": "features.3", "features.22": "features.24", "classifier.0": "classifier.2", "classifier.3": "classifier.5"}[layer]
    n = len(rotated.q)
    with torch.no_grad(), lesion.lesioned(rotated.model, lesion.Lesion(((rotated.layer, tuple(range(n))),))):
        all_directions = rotated.model(x)
    with torch.no_grad(), lesion.lesioned(model, lesion.Lesion(((activation, tuple(range(n))),))):
        all_units = model(x)
    assert torch.allclose(all_directions, all_units, atol=1e-12, rtol=0)


def test_nested_refusals() -> None:
    model = _vgg()
    with pytest.raises(LesionError, match=r"no Linear/Conv follows layer 'features\.25' in 'features'"):
        rotate(model, "features.25")
    with pytest.raises(LesionError, match=r"unknown layer of 'features' 'features\.99'"):
        rotate(model, "features.99")
    with pytest.raises(LesionError, match="model has no module 'feature'"):
        rotate(model, "feature.0")
    with pytest.raises(LesionError, match=r"model must be an nn\.Sequential for a top-level layer"):
        rotate(model, "avgpool")
