"""Training from scratch (seeded, bit-reproducible) and resumable populations of seeds."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lesion import LesionError
from lesion.data import Dataset
from lesion.models import CHECKPOINT_FORMAT, build_model, load_checkpoint, load_model
from lesion.train import _train as train_module
from lesion.train import train_model, train_population

HP = {"epochs": 2, "lr": 0.05, "momentum": 0.9, "batch_size": 32, "model_kwargs": {"in_features": 64}}


def state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_same_seed_gives_the_same_bytes(digits: Dataset) -> None:
    a = train_model("meyes2019-mlp", digits, seed=7, **HP)
    b = train_model("meyes2019-mlp", digits, seed=7, **HP)
    assert state_bytes(a["initial"]) == state_bytes(b["initial"])
    assert state_bytes(a["trained"]) == state_bytes(b["trained"])
    assert [row["loss"] for row in a["history"]] == [row["loss"] for row in b["history"]]


def test_different_seeds_give_different_networks(digits: Dataset) -> None:
    a = train_model("meyes2019-mlp", digits, seed=1, **{**HP, "epochs": 1})
    b = train_model("meyes2019-mlp", digits, seed=2, **{**HP, "epochs": 1})
    assert not torch.equal(a["initial"]["fc1.weight"], b["initial"]["fc1.weight"])
    assert not torch.equal(a["trained"]["fc1.weight"], b["trained"]["fc1.weight"])


def test_initial_weights_are_those_of_the_seeded_factory(digits: Dataset) -> None:
    checkpoint = train_model("meyes2019-mlp", digits, seed=3, **{**HP, "epochs": 1})
    torch.manual_seed(3)
    fresh = build_model("meyes2019-mlp", in_features=64)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in checkpoint["initial"].items())
    assert not torch.equal(checkpoint["initial"]["fc1.weight"], checkpoint["trained"]["fc1.weight"])


def test_the_callers_rng_is_left_alone(digits: Dataset) -> None:
    before = torch.get_rng_state()
    train_model("meyes2019-mlp", digits, seed=0, **{**HP, "epochs": 1})
    assert torch.equal(torch.get_rng_state(), before)


def test_history_has_one_row_per_epoch(digits: Dataset) -> None:
    checkpoint = train_model("meyes2019-mlp", digits, seed=0, **{**HP, "epochs": 3}, eval_every_epoch=False)
    history = checkpoint["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert set(history[0]) == {"epoch", "loss", "train_acc", "test_acc"}  # no wall-clock: same seed, same bytes
    assert [row["test_acc"] is None for row in history] == [True, True, False]
    assert all(0 <= row["train_acc"] <= 1 and row["loss"] > 0 for row in history)


def test_digits_mlp_learns(digits: Dataset) -> None:
    checkpoint = train_model("meyes2019-mlp", digits, seed=0, **{**HP, "epochs": 5})
    assert checkpoint["history"][-1]["test_acc"] > 0.85
    assert checkpoint["history"][-1]["loss"] < checkpoint["history"][0]["loss"]


def test_checkpoint_records_the_config_and_reloads(digits: Dataset, tmp_path: Path) -> None:
    checkpoint = train_model("meyes2019-mlp", digits, seed=0, **{**HP, "epochs": 1})
    config = checkpoint["config"]
    assert checkpoint["format"] == CHECKPOINT_FORMAT and checkpoint["model"] == "meyes2019-mlp"
    assert config["train_fingerprint"] == digits.train.fingerprint()
    assert config["test_fingerprint"] == digits.test.fingerprint()
    assert {k: config[k] for k in ("seed", "epochs", "lr", "momentum", "batch_size")} == {
        "seed": 0, "epochs": 1, "lr": 0.05, "momentum": 0.9, "batch_size": 32,
    }
    path = tmp_path / "mlp.pt"
    torch.save(checkpoint, path)
    loaded = load_checkpoint(path)  # weights_only=True
    assert loaded["history"] == checkpoint["history"]
    x = digits.test.inputs[:16]
    trained, initial = load_model(checkpoint=path), load_model(checkpoint=path, state="initial")
    reference = build_model("meyes2019-mlp", in_features=64)
    reference.load_state_dict(checkpoint["trained"])
    with torch.no_grad():
        assert torch.equal(trained(x), reference(x))
        assert not torch.equal(initial(x), reference(x))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 0}, "epochs: expected an integer >= 1, got 0"),
        ({"momentum": 1.0}, "momentum must be a number in \\[0, 1\\)"),
        ({"lr": -1}, "lr must be a number > 0"),
        ({"batch_size": 2.5}, "batch_size: expected an integer >= 1, got 2.5"),
        ({"seed": -1}, "seed: expected an integer in 0..4294967295, got -1"),
        ({"seed": 2**64}, "seed: expected an integer in 0..4294967295"),
        ({"model_kwargs": {"in_features": object()}}, "model_kwargs must hold plain values"),
    ],
)
def test_bad_hyper_parameters(digits: Dataset, change: dict, message: str) -> None:
    with pytest.raises(LesionError, match=message):
        train_model("meyes2019-mlp", digits, **{"seed": 0, **HP, **change})


def test_training_needs_a_train_split(digits: Dataset) -> None:
    with pytest.raises(LesionError, match="has no train split"):
        train_model("meyes2019-mlp", Dataset("digits", test=digits.test), seed=0, **HP)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Seeds actually trained by train_population."""
    trained: list[int] = []
    real = train_module._train

    def spy(config, *args, **kwargs):
        trained.append(config["seed"])
        return real(config, *args, **kwargs)

    monkeypatch.setattr(train_module, "_train", spy)
    return trained


def test_population_resumes_and_extends(digits: Dataset, tmp_path: Path, counted: list[int]) -> None:
    hp = {**HP, "epochs": 1}
    paths = train_population("meyes2019-mlp", digits, [0, 1], tmp_path / "pop", **hp)
    assert [p.name for p in paths] == ["seed-000.pt", "seed-001.pt"] and counted == [0, 1]
    mtimes = [p.stat().st_mtime_ns for p in paths]
    assert train_population("meyes2019-mlp", digits, [0, 1], tmp_path / "pop", **hp) == paths
    assert counted == [0, 1] and [p.stat().st_mtime_ns for p in paths] == mtimes
    train_population("meyes2019-mlp", digits, [1, 2], tmp_path / "pop", **hp)
    assert counted == [0, 1, 2]
    manifest = json.loads((tmp_path / "pop" / "population.json").read_text())
    assert sorted(manifest["seeds"]) == ["0", "1", "2"]
    assert manifest["config"]["lr"] == 0.05 and "seed" not in manifest["config"]
    assert manifest["seeds"]["2"]["test_acc"] == load_checkpoint(tmp_path / "pop" / "seed-002.pt")["history"][-1]["test_acc"]
    alone = train_model("meyes2019-mlp", digits, seed=1, **hp)
    assert state_bytes(load_checkpoint(paths[1])["trained"]) == state_bytes(alone["trained"])


def test_population_refuses_a_different_config(digits: Dataset, tmp_path: Path, counted: list[int]) -> None:
    hp = {**HP, "epochs": 1}
    train_population("meyes2019-mlp", digits, [0], tmp_path, **hp)
    with pytest.raises(LesionError, match=r"different config \(differs in \['lr'\]\)"):
        train_population("meyes2019-mlp", digits, [0, 1], tmp_path, **{**hp, "lr": 0.1})
    assert counted == [0] and not (tmp_path / "seed-001.pt").exists()


def test_population_seeds_must_be_distinct(digits: Dataset, tmp_path: Path) -> None:
    with pytest.raises(LesionError, match="seeds must be distinct"):
        train_population("meyes2019-mlp", digits, [0, 0], tmp_path, **HP)


def test_population_in_two_processes_equals_sequential(tmp_path, digits) -> None:
    # The sequential reference runs in a fresh one-thread process, like the workers: a long-lived
    # process (this test session) may round float sums differently after its allocator has aged.
    script = (
        "import sys; from lesion.data import load_dataset; from lesion.train import train_population; "
        "train_population('meyes2019-mlp', load_dataset('digits'), [0, 1], sys.argv[1], epochs=1, lr=0.05, "
        "momentum=0.9, batch_size=32, model_kwargs={'in_features': 64})"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "seq")], check=True, env=env)
    hp = {**HP, "epochs": 1}
    par = train_population("meyes2019-mlp", digits, [0, 1], tmp_path / "par", workers=2, **hp)
    for path in par:
        a, b = load_checkpoint(tmp_path / "seq" / path.name), load_checkpoint(path)
        assert all(torch.equal(a["trained"][k], b["trained"][k]) for k in a["trained"])
    assert (tmp_path / "par" / "population.json").read_text() == (tmp_path / "seq" / "population.json").read_text()
