"""Recovery training: the lesion stays in place, the part before it is frozen, the caller's model is untouched."""

from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from lesion import Lesion, LesionError, lesioned
from lesion.data import Dataset, Split
from lesion.models import build_model
from lesion.train import recover, recover_instances, recover_iterative, should_stop, train_model
from lesion.train._recover import frozen_modules

SGD = {"lr": 0.02, "momentum": 0.9, "batch_size": 32}


@pytest.fixture(scope="module")
def trained(digits: Dataset) -> nn.Module:
    checkpoint = train_model(
        "meyes2019-mlp", digits, seed=0, epochs=3, lr=0.05, momentum=0.9, batch_size=32,
        model_kwargs={"in_features": 64},
    )
    model = build_model("meyes2019-mlp", in_features=64)
    model.load_state_dict(checkpoint["trained"])
    return model.eval()


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_lesion_stays_frozen_part_stays_caller_untouched(trained: nn.Module, digits: Dataset) -> None:
    lesion = Lesion((("fc2", (0, 1, 2, 3)),))
    before = snapshot(trained)
    seen: list[float] = []  # what relu2 receives from fc2's lesioned units while training

    def spy(module: nn.Module, inputs: tuple[torch.Tensor]) -> None:
        if module.training:  # evaluation passes may run the intact network (the fast engine)
            seen.append(float(inputs[0][:, :4].detach().abs().max()))

    handle = trained.relu2.register_forward_pre_hook(spy)
    try:
        result = recover(trained, lesion, digits, epochs=2, seed=0, **SGD)
    finally:
        handle.remove()
    result.model.relu2._forward_pre_hooks.clear()  # the deep copy carried the spy along
    assert seen and set(seen) == {0.0}
    after = result.model.state_dict()
    assert all(torch.equal(trained.state_dict()[k], v) for k, v in before.items())  # caller untouched
    assert torch.equal(after["fc1.weight"], before["fc1.weight"])  # frozen: before the lesion
    assert torch.equal(after["fc2.weight"][:4], before["fc2.weight"][:4])  # lesioned: no gradient
    assert not torch.equal(after["fc2.weight"][4:], before["fc2.weight"][4:])
    assert not torch.equal(after["out.weight"], before["out.weight"])
    assert all(p.requires_grad for p in result.model.parameters()) and not result.model.training
    outputs = []
    with lesioned(result.model, lesion), torch.no_grad():
        hook = result.model.fc2.register_forward_hook(lambda m, i, o: outputs.append(o))
        result.model(digits.test.inputs[:64])
        hook.remove()
    assert torch.count_nonzero(outputs[0][:, :4]) == 0 and torch.count_nonzero(outputs[0][:, 4:]) > 0


def test_history_rows_and_recovery(trained: nn.Module, digits: Dataset) -> None:
    result = recover(trained, Lesion((("fc2", (0, 1, 2, 3, 4, 5)),)), digits, epochs=2, seed=0, **SGD)
    history = result.history
    assert [row["epoch"] for row in history] == [0, 1, 2]
    assert history[0]["loss"] is None and history[1]["loss"] > 0
    assert set(history[0]) == {"epoch", "loss", "train_acc", "top1", "top5", "class_top1", "class_top5", "seconds"}
    assert len(history[0]["class_top1"]) == 10 and history[0]["top1"] <= history[0]["top5"]
    assert history[-1]["top1"] > history[0]["top1"]


def test_recovery_is_reproducible(trained: nn.Module, digits: Dataset) -> None:
    lesion = Lesion((("fc1", (0, 5)),))
    a = recover(trained, lesion, digits, epochs=1, seed=3, **SGD)
    b = recover(trained, lesion, digits, epochs=1, seed=3, **SGD)
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    assert a.history[1]["loss"] == b.history[1]["loss"]


def test_freeze_none_trains_everything(trained: nn.Module, digits: Dataset) -> None:
    result = recover(trained, Lesion((("fc2", (0,)),)), digits, epochs=1, seed=0, freeze="none", **SGD)
    assert not torch.equal(result.model.fc1.weight, trained.fc1.weight)


def batch_norm_net() -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 4, 3, padding=1),
            bn1=nn.BatchNorm2d(4),
            relu1=nn.ReLU(),
            block=nn.Sequential(OrderedDict(conv2=nn.Conv2d(4, 4, 3, padding=1), bn2=nn.BatchNorm2d(4), relu2=nn.ReLU())),
            flatten=nn.Flatten(),
            fc=nn.Linear(4 * 4 * 4, 3),
        )
    )


def tiny_images(n: int = 48) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 4, 4, generator=generator)
    y = torch.arange(n) % 3
    names = ("a", "b", "c")
    return Dataset("tiny", test=Split("tiny/test", x[:24], y[:24], names), train=Split("tiny/train", x, y, names))


def test_batch_norm_before_the_lesion_keeps_its_statistics() -> None:
    model = batch_norm_net().train()  # the caller's training flags must not matter
    before = snapshot(model)
    lesion = Lesion((("block.conv2", (1,)),))
    assert frozen_modules(model, lesion) == [model.conv1, model.bn1, model.relu1]
    result = recover(model, lesion, tiny_images(), epochs=2, seed=0, lr=0.05, momentum=0.9, batch_size=8)
    after = result.model.state_dict()
    for key in ("conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"):
        assert torch.equal(after[key], before[key]), key
    for key in ("block.conv2.weight", "block.bn2.running_mean", "fc.weight"):
        assert not torch.equal(after[key], before[key]), key
    assert model.training and all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


@pytest.mark.parametrize(
    ("history", "stop"),
    [
        ([50, 90, 91, 91.02, 91.03, 91.04], True),  # 5 epochs, +0.02 pp over the last 2
        ([50, 90, 91, 91.02, 91.03], False),  # only 4 epochs
        ([50, 90, 91, 91.02, 91.03, 91.10], False),  # +0.08 pp over the last 2
        ([50, 90, 91, 92, 91.5, 91.0], True),  # getting worse
        ([50, 90, 91, 92, 92.04, 91.9], True),  # the best of the window counts: +0.04
        ([50, 90, 91, 92, 91.9, 92.1], False),  # the best of the window counts: +0.1
    ],
)
def test_should_stop(history: list[float], stop: bool) -> None:
    assert should_stop(history, min_epochs=5, patience=2, min_delta=0.05) is stop


def test_should_stop_needs_a_full_window() -> None:
    assert not should_stop([10, 10], min_epochs=1, patience=2, min_delta=0.05)
    assert should_stop([10, 10, 10], min_epochs=1, patience=2, min_delta=0.05)


def test_recover_instances_draws_distinct_groups(trained: nn.Module, digits: Dataset) -> None:
    curves = recover_instances(trained, "fc1", digits, instances=3, epochs=1, seed=0, **SGD)
    assert len(curves) == 3 and len({c.lesion.key for c in curves}) == 3
    assert all(c.lesion.size == 5 and len(c.history) == 2 for c in curves)


def test_iterative_recovery_resumes_from_its_out_dir(trained: nn.Module, digits: Dataset, tmp_path: Path) -> None:
    protocol = {"min_epochs": 1, "patience": 1, "min_delta": 100.0, "max_epochs": 2, "seed": 0, **SGD}
    first = recover_iterative(trained, "fc1", digits, max_iterations=2, out_dir=tmp_path, **protocol)
    assert [it.index for it in first.iterations] == [1, 2]
    files = sorted(tmp_path.glob("iteration-*.pt"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    resumed = recover_iterative(trained, "fc1", digits, max_iterations=3, out_dir=tmp_path, **protocol)
    straight = recover_iterative(trained, "fc1", digits, max_iterations=3, **protocol)
    assert [f.stat().st_mtime_ns for f in files] == mtimes and len(list(tmp_path.glob("iteration-*.pt"))) == 3
    assert resumed.iterations[:2] == first.iterations  # read back from the files
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    dead = set()
    for it in resumed.iterations:
        assert len(it.draw) == 5 and len(it.history) == 2  # min_delta 100 pp: stop after min_epochs
        dead |= set(it.draw)
        assert set(it.dead) == dead and it.dead_fraction == len(dead) / 20
    assert resumed.lesion == Lesion((("fc1", tuple(sorted(dead))),))
    record = torch.load(files[0], weights_only=True)
    assert record["dead"] == list(first.iterations[0].dead) and "fc1.weight" in record["state"]
    with pytest.raises(LesionError, match=r"different config \(differs in \['lr'\]\)"):
        recover_iterative(trained, "fc1", digits, max_iterations=3, out_dir=tmp_path, **{**protocol, "lr": 0.5})


def test_iterative_recovery_leaves_the_caller_alone(trained: nn.Module, digits: Dataset) -> None:
    before = copy.deepcopy(trained.state_dict())
    result = recover_iterative(trained, "fc2", digits, min_epochs=1, patience=1, max_epochs=1, max_iterations=1, **SGD)
    assert all(torch.equal(trained.state_dict()[k], v) for k, v in before.items())
    assert 0 < result.baseline["top1"] <= 1 and result.iterations[0].dead_fraction == 0.3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, d: recover(m, Lesion(), d, epochs=1, seed=0, **SGD), "at least one unit"),
        (lambda m, d: recover(m, Lesion((("fc9", (0,)),)), d, epochs=1, seed=0, **SGD), "unknown layer 'fc9'"),
        (lambda m, d: recover(m, Lesion((("fc1", (0,)),)), d, epochs=1, seed=0, freeze="all", **SGD), "freeze must be"),
        (lambda m, d: recover(m, Lesion((("fc1", (0,)),)), Dataset("x", d.test), epochs=1, seed=0, **SGD), "no train split"),
        (lambda m, d: recover_iterative(m, "fc", d, **SGD), "got 'fc' \\(closest: 'fc2', 'fc1'\\)"),
        (lambda m, d: recover_iterative(m, "fc1", d, min_epochs=5, max_epochs=2, **SGD), "max_epochs must be >= min_epochs"),
        (lambda m, d: recover_iterative(m, "fc1", d, fraction=1.5, **SGD), "fraction must be a proportion"),
    ],
)
def test_bad_input_is_a_lesion_error(trained: nn.Module, digits: Dataset, call, message: str) -> None:
    with pytest.raises(LesionError, match=message):
        call(trained, digits)
