"""Noise perturbation scaled by each unit's activation std, via forward hooks."""

from __future__ import annotations

import io

import pytest
import torch

from lesion import LesionError
from lesion.data import Split
from lesion.models import build_model
from lesion.noise import noise_curve, noisy, unit_std
from lesion.testing import toy_data, toy_network


def test_unit_std_of_the_toy_network_by_hand() -> None:
    # hidden:u copies one input; on the 14 toy samples x0 is 1 for 4, x1 for 4, x2 for 4, x3 for
    # 2 samples (else 0): a 0/1 variable with p ones has std sqrt(p (1 - p)).
    std = unit_std(toy_network(), ["hidden"], toy_data())["hidden"]
    p = torch.tensor([4, 4, 4, 4, 2], dtype=torch.float64) / 14
    assert torch.allclose(std, (p * (1 - p)).sqrt(), atol=1e-12)


def test_unit_std_of_a_convolution_is_over_samples_and_positions() -> None:
    model = build_model("meyes2020-cnn", width=3, hidden=8).eval()
    x = torch.randn(20, 1, 28, 28)
    split = Split("random", x, torch.zeros(20, dtype=torch.int64), tuple("0123456789"))
    std = unit_std(model, ["conv2", "fc1"], split, batch_size=7)
    with torch.no_grad():
        conv2 = model.conv2(model.pool1(model.relu1(model.conv1(x)))).double()
        fc1 = model.fc1(model.flatten(model.pool3(model.relu3(model.conv3(model.pool2(model.relu2(conv2.float()))))))).double()
    assert torch.allclose(std["conv2"], conv2.transpose(0, 1).reshape(3, -1).std(1, unbiased=False), atol=1e-9)
    assert torch.allclose(std["fc1"], fc1.std(0, unbiased=False), atol=1e-9)


def test_noise_is_scale_times_std_times_a_seeded_normal() -> None:
    model = build_model("meyes2019-mlp", in_features=8, hidden=(5, 4)).double().eval()
    before = io.BytesIO()
    torch.save(model.state_dict(), before)
    x = torch.randn(6, 8, dtype=torch.float64)
    std = {"fc2": torch.tensor([0.5, 1.0, 2.0, 0.0], dtype=torch.float64)}
    with noisy(model, std, 3.0, torch.Generator().manual_seed(11)), torch.no_grad():
        got = model(x)
    eps = torch.randn(6, 4, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    with torch.no_grad():
        expected = model.out(torch.relu(model.fc2(torch.relu(model.fc1(x))) + 3.0 * eps * std["fc2"]))
        plain = model(x)
    assert torch.allclose(got, expected, atol=1e-12, rtol=0) and not torch.allclose(got, plain)
    after = io.BytesIO()
    torch.save(model.state_dict(), after)
    assert before.getvalue() == after.getvalue()  # hooks only: nothing written


def test_noise_curve_starts_at_the_intact_accuracy_and_falls() -> None:
    model, split = toy_network(), toy_data()
    std = unit_std(model, ["hidden"], split)
    curve = noise_curve(model, split, std, [0.0, 0.5, 50.0], seed=2, repeats=3)
    assert curve["scale"].tolist() == [0.0] * 3 + [0.5] * 3 + [50.0] * 3 and curve["repeat"].tolist() == [0, 1, 2] * 3
    at_zero = curve.query("scale == 0")["accuracy"]
    assert (at_zero == 12 / 14).all()  # the intact toy network: 12 of 14 right
    assert curve.query("scale == 50")["accuracy"].mean() < 12 / 14
    again = noise_curve(model, split, std, [0.5], seed=2, repeats=3)
    assert again["accuracy"].tolist() == curve.query("scale == 0.5")["accuracy"].tolist()


def test_refusals() -> None:
    model = toy_network()
    with pytest.raises(LesionError, match="scale must be a number >= 0"), noisy(model, {"hidden": torch.ones(5)}, -1.0, torch.Generator()):
        pass
    with pytest.raises(LesionError, match="unknown layer 'hiden'"):
        unit_std(model, ["hiden"], toy_data())
    too_few = {"hidden": torch.ones(3)}
    with pytest.raises(LesionError, match="has 3 values but the layer's output has 5 units"), noisy(model, too_few, 1.0, torch.Generator()):
        model(torch.zeros(1, 4))
