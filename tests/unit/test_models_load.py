"""Model zoo by name, a user's factory by import path, and checkpoints that are data, never code."""

import pickle
import sys
import textwrap

import pytest
import torch

import lesion
from lesion import LesionError
from lesion.models import build_model, load_checkpoint, load_model


def test_zoo_names_build_the_papers_networks():
    mlp = build_model("meyes2019-mlp")
    assert [(layer.name, layer.n_units) for layer in lesion.layers(mlp)] == [("fc1", 20), ("fc2", 10), ("out", 10)]
    assert all(m.bias is None for m in (mlp.fc1, mlp.fc2, mlp.out))
    cnn = build_model("meyes2020-cnn")
    assert cnn(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert cnn.conv1.kernel_size == (5, 5) and cnn.conv1.padding == (2, 2) and cnn.fc1.in_features == 64 * 3 * 3
    with pytest.raises(LesionError, match="closest: 'meyes2020-cnn'"):
        build_model("meyes2020_cnn")


def test_user_factory_by_import_path_loads_and_can_be_lesioned(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def tiny(width=3):
                return nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, 2))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("my_nets:tiny", width=4)
    ckpt = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    loaded = load_model("my_nets:tiny", ckpt, width=4)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True))
    x = torch.randn(5, 2)
    with lesion.lesioned(loaded, lesion.Lesion.of(loaded, "0:*")), torch.no_grad():
        assert torch.equal(loaded(x), loaded[2].bias.expand(5, 2))
    with pytest.raises(LesionError, match="cannot import factory 'nope'"):
        build_model("my_nets:nope")
    sys.modules.pop("my_nets", None)


class _Exploit:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['LESION_PWNED'], 'w').write('ran')",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("LESION_PWNED", str(marker))
    evil = tmp_path / "evil.pt"
    torch.save({"trained": {"fc1.weight": torch.zeros(1)}, "payload": _Exploit()}, evil)
    with pytest.raises(LesionError, match=r"refused.*weights_only=True"):
        load_checkpoint(evil)
    with pytest.raises(LesionError, match="refused"):
        load_model("meyes2019-mlp", evil)
    assert not marker.exists(), "the pickled code ran"
    # the same file unpickled the unsafe way would have run it: the test's payload is real
    with open(evil, "rb") as f:
        torch.load(f, weights_only=False)
    assert marker.read_text() == "ran"


def test_lesion_checkpoint_records_model_and_states(tmp_path):
    torch.manual_seed(3)
    model = build_model("meyes2019-mlp", in_features=64)
    ckpt = {"format": "lesion-checkpoint/1", "model": "meyes2019-mlp", "model_kwargs": {"in_features": 64},
            "initial": {k: torch.zeros_like(v) for k, v in model.state_dict().items()}, "trained": model.state_dict()}
    path = tmp_path / "c.pt"
    torch.save(ckpt, path)
    trained, initial = load_model(checkpoint=path), load_model(checkpoint=path, state="initial")
    assert torch.equal(trained.fc1.weight, model.fc1.weight) and not initial.fc1.weight.any()
    with pytest.raises(LesionError, match="holds no 'best' weights"):
        load_model(checkpoint=path, state="best")
    with pytest.raises(LesionError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(LesionError):
        load_checkpoint(tmp_path / "junk.pt")
