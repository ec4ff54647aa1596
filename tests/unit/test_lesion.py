import copy

import pytest
import torch
from torch import nn

import lesion
from lesion import Lesion, LesionError, lesioned
from lesion.models import meyes2019_mlp, meyes2020_cnn


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _identical(model, state):
    return all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_lesion_is_frozen_hashable_and_canonical():
    a = Lesion((("fc1", (7, 3, 3)),))
    b = Lesion((("fc1", (3, 7)),))
    assert a == b and hash(a) == hash(b) and a.key == "fc1:3,7"
    assert len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.method = "mean"  # type: ignore[misc]
    assert Lesion().key == "intact"
    group = Lesion((("fc1", tuple(range(10))), ("fc2", (1,))), "mean")
    assert group.key == "fc1:0-9+fc2:1@mean" and group.size == 11
    assert Lesion.from_key(group.key) == group


def test_bad_method_and_empty_units():
    with pytest.raises(LesionError, match="method"):
        Lesion((("fc1", (1,)),), "zap")
    with pytest.raises(LesionError, match="no units"):
        Lesion((("fc1", ()),))


def test_zero_lesion_equals_zeroed_incoming_weights_and_bias():
    torch.manual_seed(1)
    model = meyes2020_cnn().eval()
    x = torch.randn(4, 1, 28, 28)
    edited = copy.deepcopy(model)
    with torch.no_grad():
        edited.conv2.weight[[3, 9]] = 0
        edited.conv2.bias[[3, 9]] = 0
        edited.fc1.weight[5] = 0
        edited.fc1.bias[5] = 0
    with lesioned(model, Lesion.of(model, "conv2:3,9;fc1:5")), torch.no_grad():
        masked = model(x)
    assert torch.equal(masked, edited(x))


def test_mean_lesion_replaces_the_output_by_its_mean():
    model = meyes2019_mlp(in_features=4, hidden=(3, 2), n_classes=2)
    batches = [(torch.rand(5, 4), torch.zeros(5))]
    means = lesion.unit_means(model, ["fc1"], batches)
    seen = {}
    x = batches[0][0]
    with torch.no_grad():
        intact = model.fc1(x)
    chosen = Lesion.of(model, "fc1:1", method="mean")  # its probe forward runs before the hook below
    model.relu1.register_forward_hook(lambda m, i, o: seen.setdefault("out", i[0]))
    assert torch.allclose(means["fc1"], intact.mean(0))
    with lesioned(model, chosen, means), torch.no_grad():
        model(x)
    out = seen["out"]
    assert torch.equal(out[:, 1], means["fc1"][1].expand(5))
    assert torch.equal(out[:, [0, 2]], intact[:, [0, 2]])


def test_mean_lesion_without_means_is_refused():
    model = meyes2019_mlp()
    with pytest.raises(LesionError, match="unit_means"), lesioned(model, Lesion.of(model, "fc1:1", "mean")):
        pass


def test_mean_of_a_conv_keeps_its_spatial_map():
    model = meyes2020_cnn().eval()
    means = lesion.unit_means(model, ["conv1", "fc1"], [(torch.rand(3, 1, 28, 28), None)])
    assert means["conv1"].shape == (64, 28, 28) and means["fc1"].shape == (512,)


def test_hooks_removed_and_weights_untouched_after_an_exception():
    model = meyes2019_mlp()
    state = _state(model)
    with pytest.raises(RuntimeError, match="boom"), lesioned(model, Lesion.of(model, "fc1:0-9")):
        raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in model.modules())
    assert _identical(model, state)


def test_hooks_removed_after_keyboard_interrupt_mid_sweep():
    model = meyes2019_mlp()
    state = _state(model)
    calls = {"n": 0}

    def interrupt(module, inputs, output):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    model.out.register_forward_hook(interrupt)
    split = lesion.Split("rand", torch.rand(40, 784), torch.randint(0, 10, (40,)), tuple("0123456789"))
    with pytest.raises(KeyboardInterrupt):
        list(lesion.evaluate(model, split, list(lesion.single(model, "fc1")), engine="reference", batch_size=10))
    assert len(model.out._forward_hooks) == 1  # only the test's own hook
    assert all(not m._forward_hooks for name, m in model.named_modules() if name != "out")
    assert _identical(model, state)


def test_lesion_point_after_a_non_lesionable_module():
    model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3, 2)).eval()
    with torch.no_grad():
        model[1].bias.fill_(1.0)  # conv lesion leaves BN's shift: the filter is not silent
    seen = {}
    model[2].register_forward_hook(lambda m, i, o: seen.setdefault("relu", o.clone()))
    x = torch.rand(2, 1, 1, 1)
    with lesioned(model, Lesion((("0", (1,)),))), torch.no_grad():
        model(x)
    assert (seen.pop("relu")[:, 1] > 0).all()
    with lesioned(model, Lesion((("2", (1,)),))), torch.no_grad():
        out = model(x)
    assert out.shape == (2, 2)
    with pytest.raises(LesionError, match="out of range"), lesioned(model, Lesion((("2", (5,)),))), torch.no_grad():
        model(x)
