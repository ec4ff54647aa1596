import pytest
import torch
from torch import nn

import lesion
from lesion import LesionError
from lesion._units import format_units
from lesion.models import meyes2019_mlp, meyes2020_cnn


def test_layers_lists_linear_and_conv_with_unit_counts():
    assert [(layer.name, layer.kind, layer.n_units) for layer in lesion.layers(meyes2020_cnn())] == [
        ("conv1", "Conv2d", 64),
        ("conv2", "Conv2d", 64),
        ("conv3", "Conv2d", 64),
        ("fc1", "Linear", 512),
        ("fc2", "Linear", 512),
        ("out", "Linear", 10),
    ]


def test_layers_includes_named_modules_by_probing():
    model = meyes2020_cnn()
    found = lesion.layers(model, include=["relu2"], example=torch.zeros(1, 1, 28, 28))
    assert [(layer.name, layer.n_units) for layer in found][:4] == [
        ("conv1", 64),
        ("conv2", 64),
        ("relu2", 64),
        ("conv3", 64),
    ]
    with pytest.raises(LesionError, match="example="):
        lesion.layers(model, include=["relu2"])
    bn = nn.Sequential(nn.Conv1d(2, 3, 1), nn.BatchNorm1d(3))
    assert [layer.n_units for layer in lesion.layers(bn, include=["1"])] == [3, 3]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("fc1:3", {"fc1": (3,)}),
        ("fc1:3,7", {"fc1": (3, 7)}),
        ("fc1:0-4", {"fc1": (0, 1, 2, 3, 4)}),
        ("fc2:*", {"fc2": tuple(range(10))}),
        ("fc2", {"fc2": tuple(range(10))}),
        ("fc2:1; fc1:2,0-1", {"fc1": (0, 1, 2), "fc2": (1,)}),
        ("fc*:0", {"fc1": (0,), "fc2": (0,)}),
    ],
)
def test_selection_strings(text, expected):
    assert lesion.select(lesion.layers(meyes2019_mlp()), text) == expected


def test_selection_python_values():
    model_layers = lesion.layers(meyes2019_mlp())
    assert lesion.select(model_layers, {"fc1": [7, 3], "out": 2, "fc2": "0-1"}) == {
        "fc1": (3, 7),
        "fc2": (0, 1),
        "out": (2,),
    }


def test_unknown_layer_names_the_closest():
    with pytest.raises(LesionError, match=r"unknown layer 'fc3'.*closest: 'fc2', 'fc1'"):
        lesion.select(lesion.layers(meyes2019_mlp()), "fc3:1")


def test_out_of_range_unit_names_the_valid_range():
    with pytest.raises(
        LesionError, match=r"units \[20\] of layer 'fc1' are out of range.*valid 0-19"
    ):
        lesion.select(lesion.layers(meyes2019_mlp()), "fc1:20")


@pytest.mark.parametrize("bad", ["", "fc1:", "fc1:a", "fc1:3-", "fc1:-1"])
def test_malformed_or_empty_selection(bad):
    model_layers = lesion.layers(meyes2019_mlp())
    with pytest.raises(LesionError, match="units expected after ':'" if bad == "fc1:" else ""):  # 'fc1' means all
        lesion.select(model_layers, bad)


def test_empty_python_selection():
    with pytest.raises(LesionError, match="empty unit selection"):
        lesion.select(lesion.layers(meyes2019_mlp()), {"fc1": []})


def test_format_units_round_trips_through_the_parser():
    units = (0, 1, 2, 5, 7, 8, 12)
    assert format_units(units) == "0-2,5,7-8,12"
    assert lesion.select(lesion.layers(meyes2019_mlp()), f"fc1:{format_units(units)}") == {
        "fc1": units
    }
