"""Activation capture into a memory-mapped samples × neurons matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lesion import Lesion, LesionError, lesioned
from lesion.data import Split
from lesion.engine._capture import capture_activations, load_activations
from lesion.models import meyes2020_cnn
from lesion.studies.meyes2020_cnn._stages import CAPTURE_POINTS

LOG_SOFTMAX = {"out": lambda z: torch.log_softmax(z, 1)}


def images(n: int, side: int = 28) -> Split:
    g = torch.Generator().manual_seed(1)
    return Split("toy", torch.randn(n, 1, side, side, generator=g), torch.arange(n) % 10, tuple("abcdefghij"))


def test_cnn_neuron_counts_per_layer(tmp_path) -> None:
    acts = capture_activations(meyes2020_cnn(), images(3), CAPTURE_POINTS, tmp_path / "a.npy", transforms=LOG_SOFTMAX)
    counts = {name: s.stop - s.start for name, s in acts.slices.items()}
    assert counts == {"conv1": 12544, "conv2": 3136, "conv3": 576, "fc1": 512, "fc2": 512, "out": 10}
    assert acts.slices["fc2"].stop == 17280
    assert acts.shapes["conv1"] == (64, 14, 14) and acts.shapes["fc1"] == (512,)
    assert acts.values.shape == (3, 17290) and acts.values.dtype == np.float32


def test_captured_values_equal_a_plain_forward_and_live_on_disk(tmp_path) -> None:
    model, split = meyes2020_cnn(width=4), images(5)
    path = tmp_path / "acts.npy"
    acts = capture_activations(model, split, CAPTURE_POINTS, path, transforms=LOG_SOFTMAX, batch_size=2)
    with torch.no_grad():
        x = split.inputs
        expected = {
            "conv1": model[:3](x), "conv2": model[:6](x), "conv3": model[:9](x),
            "fc1": model[:12](x), "fc2": model[:14](x), "out": torch.log_softmax(model(x), 1),
        }
    for name, value in expected.items():
        np.testing.assert_allclose(acts.layer(name), value.reshape(5, -1).numpy(), rtol=1e-5, atol=1e-6)
    assert isinstance(acts.values, np.memmap) and path.is_file()
    assert not (tmp_path / "acts.partial.npy").exists()
    again = load_activations(path)
    assert again.slices == acts.slices and again.shapes == acts.shapes
    np.testing.assert_array_equal(np.load(path), acts.values)


def test_neuron_table_is_channel_major(tmp_path) -> None:
    acts = capture_activations(meyes2020_cnn(width=4), images(2), CAPTURE_POINTS, tmp_path / "a.npy")
    neurons = acts.neurons(["conv2", "fc1"])
    conv2 = neurons[neurons["layer"] == "conv2"]
    assert len(conv2) == 4 * 7 * 7 and conv2["column"].iloc[0] == 4 * 14 * 14
    assert conv2["unit"].tolist() == [c for c in range(4) for _ in range(49)]
    assert neurons[neurons["layer"] == "fc1"]["unit"].tolist() == list(range(512))


def test_lesioned_capture_zeroes_the_lesioned_channels(tmp_path) -> None:
    model = meyes2020_cnn(width=4)
    with lesioned(model, Lesion((("conv1", (1, 3)),))):
        acts = capture_activations(model, images(3), {"conv1": "pool1"}, tmp_path / "a.npy")
    maps = np.asarray(acts.values).reshape(3, 4, 14, 14)
    assert (maps[:, [1, 3]] == 0).all() and (maps[:, [0, 2]] != 0).any()
    assert not model.conv1._forward_hooks


def test_float16_and_hooks_removed_after_a_failure(tmp_path) -> None:
    model = meyes2020_cnn(width=4)
    acts = capture_activations(model, images(2), ["pool1", "out"], tmp_path / "h.npy", dtype="float16")
    assert acts.values.dtype == np.float16 and acts.layers == ("pool1", "out")
    with pytest.raises(RuntimeError):
        capture_activations(model, images(2, side=5), ["pool1"], tmp_path / "bad.npy")
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize(
    ("points", "kwargs", "message"),
    [
        (["pool9"], {}, "unknown module 'pool9' .closest: 'pool3'"),
        (["pool1"], {"dtype": "float64"}, "dtype must be one of"),
        (["pool1"], {"transforms": {"out": torch.relu}}, "not captured"),
        ([], {}, "at least one module"),
    ],
)
def test_bad_input_is_refused_clearly(tmp_path, points, kwargs, message) -> None:
    with pytest.raises(LesionError, match=message):
        capture_activations(meyes2020_cnn(width=4), images(2), points, tmp_path / "a.npy", **kwargs)
    assert not (tmp_path / "a.npy").exists()
