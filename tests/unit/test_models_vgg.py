"""VGG with torchvision's layer names and state-dict keys, and its small-input variant.

The expected keys, shapes and layouts below are written out by hand from torchvision's
configurations A, B, D, E (torchvision itself is not a dependency).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lesion._errors import LesionError
from lesion.models import load_model
from lesion.models._vgg import vgg, vgg_conv_layers

# Types of the `features` modules by index: C Conv2d, B BatchNorm2d, R ReLU, M MaxPool2d.
LAYOUTS = {
    (11, False): "CR M CR M CR CR M CR CR M CR CR M",
    (11, True): "CBR M CBR M CBR CBR M CBR CBR M CBR CBR M",
    (13, False): "CR CR M CR CR M CR CR M CR CR M CR CR M",
    (13, True): "CBR CBR M CBR CBR M CBR CBR M CBR CBR M CBR CBR M",
    (16, False): "CR CR M CR CR M CR CR CR M CR CR CR M CR CR CR M",
    (16, True): "CBR CBR M CBR CBR M CBR CBR CBR M CBR CBR CBR M CBR CBR CBR M",
    (19, False): "CR CR M CR CR M CR CR CR CR M CR CR CR CR M CR CR CR CR M",
    (19, True): "CBR CBR M CBR CBR M CBR CBR CBR CBR M CBR CBR CBR CBR M CBR CBR CBR CBR M",
}
FEATURES_LEN = {(11, False): 21, (11, True): 29, (13, False): 25, (13, True): 35,
                (16, False): 31, (16, True): 44, (19, False): 37, (19, True): 53}  # fmt: skip
N_KEYS = {(11, False): 22, (11, True): 62, (13, False): 26, (13, True): 76,
          (16, False): 32, (16, True): 97, (19, False): 38, (19, True): 118}  # fmt: skip
TYPES = {"C": nn.Conv2d, "B": nn.BatchNorm2d, "R": nn.ReLU, "M": nn.MaxPool2d}

VGG19_BN_CONVS = [0, 3, 7, 10, 14, 17, 20, 23, 27, 30, 33, 36, 40, 43, 46, 49]
VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]

VGG11_KEYS = {
    "features.0.weight": (64, 3, 3, 3),
    "features.0.bias": (64,),
    "features.3.weight": (128, 64, 3, 3),
    "features.3.bias": (128,),
    "features.6.weight": (256, 128, 3, 3),
    "features.6.bias": (256,),
    "features.8.weight": (256, 256, 3, 3),
    "features.8.bias": (256,),
    "features.11.weight": (512, 256, 3, 3),
    "features.11.bias": (512,),
    "features.13.weight": (512, 512, 3, 3),
    "features.13.bias": (512,),
    "features.16.weight": (512, 512, 3, 3),
    "features.16.bias": (512,),
    "features.18.weight": (512, 512, 3, 3),
    "features.18.bias": (512,),
    "classifier.0.weight": (4096, 25088),
    "classifier.0.bias": (4096,),
    "classifier.3.weight": (4096, 4096),
    "classifier.3.bias": (4096,),
    "classifier.6.weight": (1000, 4096),
    "classifier.6.bias": (1000,),
}
VGG19_BN_KEYS = {
    "features.0.weight": (64, 3, 3, 3),
    "features.0.bias": (64,),
    "features.1.weight": (64,),
    "features.1.bias": (64,),
    "features.1.running_mean": (64,),
    "features.1.running_var": (64,),
    "features.1.num_batches_tracked": (),
    "features.3.weight": (64, 64, 3, 3),
    "features.3.bias": (64,),
    "features.4.weight": (64,),
    "features.4.bias": (64,),
    "features.4.running_mean": (64,),
    "features.4.running_var": (64,),
    "features.4.num_batches_tracked": (),
    "features.7.weight": (128, 64, 3, 3),
    "features.7.bias": (128,),
    "features.8.weight": (128,),
    "features.8.bias": (128,),
    "features.8.running_mean": (128,),
    "features.8.running_var": (128,),
    "features.8.num_batches_tracked": (),
    "features.10.weight": (128, 128, 3, 3),
    "features.10.bias": (128,),
    "features.11.weight": (128,),
    "features.11.bias": (128,),
    "features.11.running_mean": (128,),
    "features.11.running_var": (128,),
    "features.11.num_batches_tracked": (),
    "features.14.weight": (256, 128, 3, 3),
    "features.14.bias": (256,),
    "features.15.weight": (256,),
    "features.15.bias": (256,),
    "features.15.running_mean": (256,),
    "features.15.running_var": (256,),
    "features.15.num_batches_tracked": (),
    "features.17.weight": (256, 256, 3, 3),
    "features.17.bias": (256,),
    "features.18.weight": (256,),
    "features.18.bias": (256,),
    "features.18.running_mean": (256,),
    "features.18.running_var": (256,),
    "features.18.num_batches_tracked": (),
    "features.20.weight": (256, 256, 3, 3),
    "features.20.bias": (256,),
    "features.21.weight": (256,),
    "features.21.bias": (256,),
    "features.21.running_mean": (256,),
    "features.21.running_var": (256,),
    "features.21.num_batches_tracked": (),
    "features.23.weight": (256, 256, 3, 3),
    "features.23.bias": (256,),
    "features.24.weight": (256,),
    "features.24.bias": (256,),
    "features.24.running_mean": (256,),
    "features.24.running_var": (256,),
    "features.24.num_batches_tracked": (),
    "features.27.weight": (512, 256, 3, 3),
    "features.27.bias": (512,),
    "features.28.weight": (512,),
    "features.28.bias": (512,),
    "features.28.running_mean": (512,),
    "features.28.running_var": (512,),
    "features.28.num_batches_tracked": (),
    "features.30.weight": (512, 512, 3, 3),
    "features.30.bias": (512,),
    "features.31.weight": (512,),
    "features.31.bias": (512,),
    "features.31.running_mean": (512,),
    "features.31.running_var": (512,),
    "features.31.num_batches_tracked": (),
    "features.33.weight": (512, 512, 3, 3),
    "features.33.bias": (512,),
    "features.34.weight": (512,),
    "features.34.bias": (512,),
    "features.34.running_mean": (512,),
    "features.34.running_var": (512,),
    "features.34.num_batches_tracked": (),
    "features.36.weight": (512, 512, 3, 3),
    "features.36.bias": (512,),
    "features.37.weight": (512,),
    "features.37.bias": (512,),
    "features.37.running_mean": (512,),
    "features.37.running_var": (512,),
    "features.37.num_batches_tracked": (),
    "features.40.weight": (512, 512, 3, 3),
    "features.40.bias": (512,),
    "features.41.weight": (512,),
    "features.41.bias": (512,),
    "features.41.running_mean": (512,),
    "features.41.running_var": (512,),
    "features.41.num_batches_tracked": (),
    "features.43.weight": (512, 512, 3, 3),
    "features.43.bias": (512,),
    "features.44.weight": (512,),
    "features.44.bias": (512,),
    "features.44.running_mean": (512,),
    "features.44.running_var": (512,),
    "features.44.num_batches_tracked": (),
    "features.46.weight": (512, 512, 3, 3),
    "features.46.bias": (512,),
    "features.47.weight": (512,),
    "features.47.bias": (512,),
    "features.47.running_mean": (512,),
    "features.47.running_var": (512,),
    "features.47.num_batches_tracked": (),
    "features.49.weight": (512, 512, 3, 3),
    "features.49.bias": (512,),
    "features.50.weight": (512,),
    "features.50.bias": (512,),
    "features.50.running_mean": (512,),
    "features.50.running_var": (512,),
    "features.50.num_batches_tracked": (),
    "classifier.0.weight": (4096, 25088),
    "classifier.0.bias": (4096,),
    "classifier.3.weight": (4096, 4096),
    "classifier.3.bias": (4096,),
    "classifier.6.weight": (1000, 4096),
    "classifier.6.bias": (1000,),
}


def meta_vgg(depth: int, batch_norm: bool, **kwargs: object) -> nn.Module:
    """Full-size model without memory or init time: parameters on the meta device."""
    with torch.device("meta"):
        return vgg(depth, batch_norm, **kwargs)


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("depth", "bn", "expected"), [(11, False, VGG11_KEYS), (19, True, VGG19_BN_KEYS)]
)
def test_state_dict_keys_and_shapes_are_torchvision_s(depth: int, bn: bool, expected: dict) -> None:
    got = shapes(meta_vgg(depth, bn))
    assert list(got) == list(expected)
    assert got == expected


@pytest.mark.parametrize(("depth", "bn"), list(LAYOUTS))
def test_features_layout_and_key_count(depth: int, bn: bool) -> None:
    model = meta_vgg(depth, bn)
    layout = LAYOUTS[depth, bn].replace(" ", "")
    assert len(model.features) == len(layout) == FEATURES_LEN[depth, bn]
    assert [type(m) for m in model.features] == [TYPES[c] for c in layout]
    assert all(m.inplace for m in model.features if isinstance(m, nn.ReLU))
    assert vgg_conv_layers(model) == [f"features.{i}" for i, c in enumerate(layout) if c == "C"]
    assert len(model.state_dict()) == N_KEYS[depth, bn]
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d) and model.avgpool.output_size == (7, 7)
    assert [type(m) for m in model.classifier] == [nn.Linear, nn.ReLU, nn.Dropout] * 2 + [nn.Linear]
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.5, 0.5]


def test_conv_layer_names() -> None:
    assert vgg_conv_layers(meta_vgg(19, True)) == [f"features.{i}" for i in VGG19_BN_CONVS]
    assert vgg_conv_layers(meta_vgg(16, False)) == [f"features.{i}" for i in VGG16_CONVS]


def test_meyes2019_layers_33_and_46_of_vgg19_bn() -> None:
    model = meta_vgg(19, True)
    layers = dict(model.named_modules())
    for name in ("features.33", "features.46"):
        assert isinstance(layers[name], nn.Conv2d) and layers[name].out_channels == 512
    assert layers["features.33"].in_channels == 512
    assert isinstance(layers["features.34"], nn.BatchNorm2d)


def test_torchvision_shaped_checkpoint_loads_strictly_and_224_forward() -> None:
    torch.manual_seed(0)
    model = vgg(11).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert model.features(x).shape == (1, 512, 7, 7)
        assert model(x).shape == (1, 1000)
    checkpoint = {k: torch.full(s, 0.5) for k, s in VGG11_KEYS.items()}
    model.load_state_dict(checkpoint, strict=True)
    assert torch.equal(model.classifier[6].bias, torch.full((1000,), 0.5))


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("depth", [11, 13, 16, 19])
@pytest.mark.parametrize(
    ("image_size", "in_channels", "ceil_mode"), [(28, 1, True), (32, 3, False)]
)
def test_small_variant(
    depth: int, bn: bool, image_size: int, in_channels: int, ceil_mode: bool
) -> None:
    model = vgg(depth, bn, n_classes=10, in_channels=in_channels, image_size=image_size,
                width_divisor=8, classifier_width=32).eval()  # fmt: skip
    layout = LAYOUTS[depth, bn].replace(" ", "")
    assert [type(m) for m in model.features] == [TYPES[c] for c in layout]
    assert all(m.ceil_mode == ceil_mode for m in model.features if isinstance(m, nn.MaxPool2d))
    assert model.avgpool.output_size == (1, 1)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert convs[0].in_channels == in_channels
    assert {m.out_channels for m in convs} == {8, 16, 32, 64} and convs[-1].out_channels == 64
    assert model.classifier[0].in_features == 64 and model.classifier[0].out_features == 32
    x = torch.randn(2, in_channels, image_size, image_size)
    with torch.no_grad():
        assert model.features(x).shape == (2, 64, 1, 1)
        assert model(x).shape == (2, 10)


def test_small_variant_widths_and_smallest_image() -> None:
    model = vgg(19, True, image_size=16, width_divisor=4, classifier_width=8, n_classes=3).eval()
    widths = [model.get_submodule(name).out_channels for name in vgg_conv_layers(model)]
    assert widths == [16, 16, 32, 32, 64, 64, 64, 64] + [128] * 8
    assert model.get_submodule("features.33").out_channels == 128
    with torch.no_grad():
        assert model.features(torch.randn(1, 3, 16, 16)).shape == (1, 128, 1, 1)


def test_init_is_torchvision_s() -> None:
    torch.manual_seed(0)
    model = vgg(11, True, image_size=32, classifier_width=512)
    last_conv = model.get_submodule(vgg_conv_layers(model)[-1])
    assert last_conv.weight.std().item() == pytest.approx((2 / (512 * 9)) ** 0.5, rel=0.02)
    assert model.classifier[0].weight.std().item() == pytest.approx(0.01, rel=0.02)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1)
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            assert torch.all(m.bias == 0)


def test_same_seed_same_init() -> None:
    def build(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return vgg(13, True, image_size=28, width_divisor=8, classifier_width=16).state_dict()

    a, b, c = build(1), build(1), build(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])


def test_state_dict_round_trips_through_weights_only_file(tmp_path) -> None:
    kwargs = {
        "n_classes": 10,
        "in_channels": 1,
        "image_size": 28,
        "width_divisor": 8,
        "classifier_width": 16,
    }
    torch.manual_seed(0)
    model = vgg(19, True, **kwargs)
    torch.save(model.state_dict(), tmp_path / "vgg.pt")
    loaded = torch.load(tmp_path / "vgg.pt", weights_only=True)
    torch.manual_seed(1)
    fresh = vgg(19, True, **kwargs)
    fresh.load_state_dict(loaded, strict=True)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in model.state_dict().items())
    via_zoo = load_model("vgg19_bn", tmp_path / "vgg.pt", **kwargs)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(via_zoo(x), model.eval()(x))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"depth": 18}, ["depth", "11, 13, 16, 19", "18"]),
        ({"depth": "19"}, ["depth", "'19'"]),
        ({"depth": True}, ["depth", "True"]),
        ({"batch_norm": "yes"}, ["batch_norm", "'yes'"]),
        ({"image_size": 15}, ["image_size", ">= 16", "15"]),
        ({"image_size": 28.0}, ["image_size", "28.0"]),
        ({"width_divisor": 3}, ["width_divisor", "divisor of 64", "3"]),
        ({"width_divisor": 0}, ["width_divisor", ">= 1", "0"]),
        ({"n_classes": 0}, ["n_classes", "0"]),
        ({"in_channels": -1}, ["in_channels", "-1"]),
        ({"classifier_width": 0}, ["classifier_width", "0"]),
        ({"dropout": 1.5}, ["dropout", "[0, 1]", "1.5"]),
    ],
)
def test_bad_arguments_raise_lesion_error(kwargs: dict, words: list[str]) -> None:
    args = {"depth": 11, "image_size": 32, "width_divisor": 8, "classifier_width": 8} | kwargs
    with pytest.raises(LesionError) as info:
        vgg(**args)
    assert all(w in str(info.value) for w in words)


def test_conv_layers_needs_a_features_module() -> None:
    with pytest.raises(LesionError, match="features"):
        vgg_conv_layers(nn.Linear(2, 2))
