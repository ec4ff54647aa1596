"""Property-based differential tests: random chains of operations, random lesions, the truth.

Hypothesis composes a network from elementwise ops, pooling, norms, reshapes, permutes,
transposes, in-place ops, residual adds, concatenations, gates and ops that mix samples, with
lesionable convolutions and Linears in between; every engine must then be exact, or fall back
with a warning, or refuse with `LesionError` (see :func:`differential.check`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from differential import check, split_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from lesion import Lesion, unit_means
from lesion._units import layers

C, H, W = 4, 4, 4
#: Ops that combine samples: a lesion before one of them must take the reference path.
MIXING = ("batch_center", "batch_softmax", "batch_cumsum", "batch_flip", "batch_norm_stats")
PER_SAMPLE = (
    "relu", "relu_", "relu_module_inplace", "sigmoid", "tanh_", "gelu", "max_pool", "avg_pool", "batch_norm",
    "layer_norm_channels_last", "group_norm", "conv", "depthwise", "linear_channels_last", "transpose",
    "reshape", "residual", "add_", "cat", "gate", "scale", "channel_softmax", "dropout",
)  # fmt: skip
OPS = PER_SAMPLE + MIXING


class Chain(nn.Module):
    """``stem`` conv, the ops in order on a (B, C, H, W) tensor, then ``fc`` (optionally maxout) and ``out``."""

    def __init__(self, ops: list[str], maxout: bool) -> None:
        super().__init__()
        self.ops = ops
        self.maxout = maxout
        self.stem = nn.Conv2d(3, C, 3, padding=1)
        self.blocks = nn.ModuleList([self._module(op) for op in ops])
        self.fc = nn.Linear(C * H * W, 8)
        self.pool = nn.MaxPool1d(2)
        self.out = nn.Linear(4 if maxout else 8, 5)

    @staticmethod
    def _module(op: str) -> nn.Module:
        if op in ("conv", "residual", "add_"):
            return nn.Conv2d(C, C, 3, padding=1)
        if op == "depthwise":
            return nn.Conv2d(C, C, 3, padding=1, groups=C)
        if op == "cat":
            return nn.Conv2d(2 * C, C, 1)
        if op == "linear_channels_last":
            return nn.Linear(C, C)
        if op == "layer_norm_channels_last":
            return nn.LayerNorm(C)
        if op == "group_norm":
            return nn.GroupNorm(2, C)
        if op == "batch_norm_stats":
            return nn.BatchNorm2d(C, track_running_stats=False)
        if op == "batch_norm":
            bn = nn.BatchNorm2d(C)
            with torch.no_grad():
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
            return bn
        if op == "relu_module_inplace":
            return nn.ReLU(inplace=True)
        if op == "max_pool":
            return nn.MaxPool2d(3, 1, 1)
        return nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for op, module in zip(self.ops, self.blocks, strict=True):
            h = _apply(op, module, h, self.training)
        h = self.fc(h.flatten(1))
        if self.maxout:
            h = self.pool(h)
        return self.out(h)


def _apply(op: str, module: nn.Module, h: torch.Tensor, training: bool) -> torch.Tensor:
    if op == "relu":
        return F.relu(h)
    if op == "relu_":
        h.relu_()  # result not re-bound
        return h
    if op == "tanh_":
        return torch.tanh_(h)
    if op == "sigmoid":
        return torch.sigmoid(h)
    if op == "gelu":
        return F.gelu(h)
    if op == "avg_pool":
        return F.avg_pool2d(h, 3, 1, 1)
    if op in ("layer_norm_channels_last", "linear_channels_last"):
        return module(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    if op == "transpose":
        return h.transpose(2, 3)
    if op == "reshape":
        return h.reshape(h.shape[0], C, H * W).view(h.shape[0], C, H, W)
    if op == "residual":
        return h + module(F.relu(h))
    if op == "add_":
        out = module(h)
        out.add_(h)  # result not re-bound
        return out
    if op == "cat":
        return module(torch.cat([h, F.relu(h)], 1))
    if op == "gate":
        return h * torch.sigmoid(h.mean((2, 3), keepdim=True))
    if op == "scale":
        return h * torch.linspace(0.5, 1.5, C).view(1, C, 1, 1)
    if op == "channel_softmax":
        return F.softmax(h, dim=1)
    if op == "dropout":
        return F.dropout(h, 0.5, training)
    if op == "batch_center":
        return h - h.mean(0, keepdim=True)
    if op == "batch_softmax":
        return F.softmax(h, dim=0)
    if op == "batch_cumsum":
        return h.cumsum(0)
    if op == "batch_flip":
        return h.flip(0)
    return module(h)  # conv, depthwise, batch norms, group norm, relu module, max pool


@st.composite
def cases(draw: st.DrawFn) -> tuple[Chain, list[Lesion], str, int]:
    ops = draw(st.lists(st.sampled_from(OPS), min_size=1, max_size=6))
    model = Chain(ops, draw(st.booleans()))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    for module in model.modules():  # fresh random weights from the drawn seed
        if hasattr(module, "reset_parameters") and not isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()
    model.train(draw(st.booleans()))  # the model may be passed in training mode
    found = layers(model)
    method = draw(st.sampled_from(["zero", "mean"]))
    lesions = []
    for _ in range(draw(st.integers(1, 3))):
        layer = draw(st.sampled_from(found))
        units = draw(st.sets(st.integers(0, layer.n_units - 1), min_size=1, max_size=layer.n_units))
        lesions.append(Lesion(((layer.name, tuple(units)),), method))
    # the position (in ops) after which a lesion of each layer sits: stem before op 0, fc/out after all
    position = {"stem": -1, "fc": len(ops), "out": len(ops)} | {f"blocks.{i}": i for i in range(len(ops))}
    first = min(position[lesion.layers[0]] for lesion in lesions)
    mixing_after = any(op in MIXING for op in ops[first + 1 :])
    return model, sorted(set(lesions), key=lambda lesion: lesion.key), method, int(mixing_after)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_random_chains_against_the_truth(case: tuple[Chain, list[Lesion], str, int]) -> None:
    model, lesions, method, mixing_after = case
    split = split_of(torch.randn(12, 3, H, W), 5)
    means = None
    if method == "mean":
        with torch.no_grad():
            training = model.training
            means = unit_means(model.eval(), sorted({lesion.layers[0] for lesion in lesions}), [(split.inputs, split.labels)])
            model.train(training)
    # one data batch: ops that combine samples then see the same batch in every engine and in the truth
    verdict = check(model, split, lesions, means=means, batch_size=len(split))
    if mixing_after and len({lesion.layers[0] for lesion in lesions}) == 1:
        assert verdict == "fallback", "a lesion before an op that combines samples took the fast path"
