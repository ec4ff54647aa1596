"""Training variants: batch norm and dropout in the papers' networks, label corruption, optimizers."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from lesion import LesionError
from lesion.data import Dataset
from lesion.models import build_model
from lesion.train import corrupt_labels, train_model, variant
from lesion.train._train import training_config

HP = {"epochs": 1, "lr": 0.05, "momentum": 0.9, "batch_size": 32}
MLP = {"in_features": 64}
# The state-dict keys of the plain networks before variants existed: checkpoints rely on them.
CNN_KEYS = [f"{n}.{p}" for n in ("conv1", "conv2", "conv3", "fc1", "fc2", "out") for p in ("weight", "bias")]
MLP_KEYS = ["fc1.weight", "fc2.weight", "out.weight"]


def test_plain_networks_keep_their_modules_and_keys() -> None:
    cnn, mlp = build_model("meyes2020-cnn"), build_model("meyes2019-mlp")
    assert list(cnn.state_dict()) == CNN_KEYS and list(mlp.state_dict()) == MLP_KEYS
    names = [name for name, _ in cnn.named_children()]
    assert names == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3", "pool3", "flatten",
                     "fc1", "relu4", "fc2", "relu5", "out"]
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout)) for m in cnn.modules())


def test_batch_norm_and_dropout_sit_where_documented() -> None:
    cnn = build_model("meyes2020-cnn", width=4, hidden=8, batch_norm=True, dropout=0.5)
    names = [name for name, _ in cnn.named_children()]
    assert names[:3] == ["conv1", "bn1", "relu1"] and names.index("bn4") == names.index("fc1") + 1
    assert names.index("drop5") == names.index("relu5") + 1 and isinstance(cnn.drop4, nn.Dropout) and cnn.drop4.p == 0.5
    assert isinstance(cnn.bn3, nn.BatchNorm2d) and cnn.bn3.num_features == 4 and isinstance(cnn.bn5, nn.BatchNorm1d)
    mlp = build_model("meyes2019-mlp", in_features=64, batch_norm=True, dropout=0.2)
    assert [n for n, _ in mlp.named_children()] == ["flatten", "fc1", "bn1", "relu1", "drop1", "fc2", "bn2", "relu2",
                                                    "drop2", "out"]
    assert cnn.eval()(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(LesionError, match=r"dropout must be a probability in \[0, 1\)"):
        build_model("meyes2020-cnn", dropout=1.0)


def test_a_variant_checkpoint_loads_back(digits: Dataset) -> None:
    ckpt = train_model("meyes2019-mlp", digits, seed=0, model_kwargs={**MLP, "batch_norm": True, "dropout": 0.3}, **HP)
    assert "bn1.running_mean" in ckpt["trained"]
    model = build_model("meyes2019-mlp", **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["trained"])
    assert variant(ckpt["config"]) == {"batch_norm": True, "dropout": 0.3, "optimizer": "sgd", "lr": 0.05,
                                       "momentum": 0.9, "label_noise": 0.0}


@pytest.mark.parametrize("fraction, n", [(0.0, 50), (0.2, 50), (0.25, 10), (0.5, 7), (1.0, 13)])
def test_label_corruption_redraws_exactly_round_fraction_n_labels(fraction: float, n: int) -> None:
    labels = torch.arange(n) % 3
    new, chosen = corrupt_labels(labels, fraction, 3, seed=4)
    assert len(chosen) == round(fraction * n) == len(set(chosen.tolist()))
    untouched = np.setdiff1d(np.arange(n), chosen)
    assert torch.equal(new[untouched], labels[untouched]) and torch.equal(labels, torch.arange(n) % 3)
    assert new.dtype == labels.dtype and int(new.min()) >= 0 and int(new.max()) < 3
    again, chosen_again = corrupt_labels(labels, fraction, 3, seed=4)
    assert torch.equal(again, new) and np.array_equal(chosen, chosen_again)


def test_redrawn_labels_are_uniform_over_all_classes() -> None:
    # 20,000 redrawn labels of 4 classes: each class (the true one included) about 1/4 of them.
    labels = torch.zeros(20_000, dtype=torch.int64)
    new, chosen = corrupt_labels(labels, 1.0, 4, seed=0)
    counts = np.bincount(new[chosen].numpy(), minlength=4) / len(chosen)
    assert np.allclose(counts, 0.25, atol=0.015)


def test_training_with_label_noise_equals_training_on_the_corrupted_labels(digits: Dataset) -> None:
    noisy = train_model("meyes2019-mlp", digits, seed=1, model_kwargs=MLP, label_noise=0.4, label_noise_seed=3, **HP)
    labels, _ = corrupt_labels(digits.train.labels, 0.4, digits.train.n_classes, 3)
    by_hand = Dataset(digits.name, digits.test, replace(digits.train, labels=labels))
    reference = train_model("meyes2019-mlp", by_hand, seed=1, model_kwargs=MLP, **HP)
    clean = train_model("meyes2019-mlp", digits, seed=1, model_kwargs=MLP, **HP)
    assert torch.equal(noisy["trained"]["fc1.weight"], reference["trained"]["fc1.weight"])
    assert not torch.equal(noisy["trained"]["fc1.weight"], clean["trained"]["fc1.weight"])
    assert noisy["config"]["label_noise"] == {"fraction": 0.4, "seed": 3, "replacement": "uniform"}
    assert "label_noise" not in clean["config"] and variant(noisy["config"])["label_noise"] == 0.4


def test_adam_and_plain_sgd_are_variants(digits: Dataset) -> None:
    adam = train_model("meyes2019-mlp", digits, seed=0, model_kwargs=MLP, **{**HP, "momentum": 0.0, "lr": 0.001},
                       optimizer="adam")
    sgd = train_model("meyes2019-mlp", digits, seed=0, model_kwargs=MLP, **{**HP, "momentum": 0.0, "lr": 0.001})
    assert adam["config"]["optimizer"] == "adam" and sgd["config"]["optimizer"] == "sgd"
    assert torch.equal(adam["initial"]["fc1.weight"], sgd["initial"]["fc1.weight"])
    assert not torch.equal(adam["trained"]["fc1.weight"], sgd["trained"]["fc1.weight"])
    with pytest.raises(LesionError, match="momentum applies to optimizer 'sgd' only"):
        train_model("meyes2019-mlp", digits, seed=0, model_kwargs=MLP, optimizer="adam", **HP)
    with pytest.raises(LesionError, match="closest: 'adam'"):
        train_model("meyes2019-mlp", digits, seed=0, model_kwargs=MLP, optimizer="adma", **HP)
    with pytest.raises(LesionError, match=r"label_noise must be a fraction in \[0, 1\]"):
        train_model("meyes2019-mlp", digits, seed=0, model_kwargs=MLP, label_noise=1.5, **HP)


def test_the_default_recipe_config_keeps_its_keys(digits: Dataset) -> None:
    config = training_config("meyes2019-mlp", digits, seed=0, **HP)
    assert sorted(config) == sorted(
        ["model", "model_kwargs", "seed", "epochs", "lr", "momentum", "batch_size", "optimizer", "loss", "dataset",
         "train_fingerprint", "test_fingerprint", "train_size", "test_size"]
    )
    assert config["optimizer"] == "sgd"


def test_train_command_takes_variants(tmp_path) -> None:
    out = tmp_path / "pop"
    proc = subprocess.run(
        [sys.executable, "-m", "lesion", "train", "meyes2019-mlp", "--data", "digits", "--model-arg", "in_features=64",
         "--epochs", "1", "--optimizer", "adam", "--lr", "0.001", "--batch-norm", "--dropout", "0.5",
         "--label-noise", "0.2", "--label-noise-seed", "7", "--out", str(out), "--threads", "1"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    config = torch.load(out / "seed-000.pt", weights_only=True)["config"]
    assert variant(config) == {"batch_norm": True, "dropout": 0.5, "optimizer": "adam", "lr": 0.001, "momentum": 0.0,
                               "label_noise": 0.2}
    assert config["label_noise"]["seed"] == 7
    assert json.loads((out / "population.json").read_text())["config"]["optimizer"] == "adam"
