"""A zoo of small real architectures, written here in their reference layouts: every lesionable
layer, singles, a pair and the whole layer, ``zero`` and ``mean``, against the truth."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from differential import check, singles_and_pairs, split_of
from torch import nn

from lesion import LesionError, unit_means
from lesion._units import layers


def _bn(c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():  # non-trivial statistics, so that BN(0) != 0
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: in-place ReLUs and ``out += identity``."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _bn(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = _bn(cout)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _bn(cout)) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """torchvision's ResNet Bottleneck (stride on the 3x3 conv, expansion 4)."""

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = _bn(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = _bn(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = _bn(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(nn.Conv2d(cin, width * 4, 1, stride, bias=False), _bn(width * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += self.downsample(x)
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, block: Callable[[], nn.Module], width: int, n_classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = _bn(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = block()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2: 1x1 expansion, depthwise 3x3, ReLU6, linear 1x1 projection, residual."""

    def __init__(self, c: int, expand: int = 3) -> None:
        super().__init__()
        hidden = c * expand
        self.conv = nn.Sequential(
            nn.Conv2d(c, hidden, 1, bias=False), _bn(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False), _bn(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, c, 1, bias=False), _bn(c),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class MobileNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), _bn(8), nn.ReLU6(inplace=True))
        self.block1 = InvertedResidual(8)
        self.block2 = InvertedResidual(8)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(8, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(self.block1(self.stem(x))))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm1, self.relu1, self.conv1 = _bn(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, 2 * growth, 1, bias=False)
        self.norm2, self.relu2, self.conv2 = _bn(2 * growth), nn.ReLU(inplace=True), nn.Conv2d(2 * growth, growth, 3, 1, 1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseNet(nn.Module):
    """A DenseNet block: each layer sees the concatenation of all earlier feature maps."""

    def __init__(self, growth: int = 4) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 6, 3, 1, 1, bias=False)
        self.layers = nn.ModuleList([DenseLayer(6 + i * growth, growth) for i in range(3)])
        self.norm5 = _bn(6 + 3 * growth)
        self.classifier = nn.Linear(6 + 3 * growth, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.conv0(x)]
        for layer in self.layers:
            features.append(layer(features))
        out = torch.relu(self.norm5(torch.cat(features, 1)))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


class SqueezeExcitation(nn.Module):
    """A channel gate computed from all channels (torchvision's SE layout, 1x1 convs)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 1, 1)
        self.bn = _bn(8)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(8, 4, 1)
        self.fc2 = nn.Conv2d(4, 8, 1)
        self.out = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(self.avgpool(h)))))
        return self.out((h * gate).mean((2, 3)))


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, LayerNorm on channels-last, pointwise Linears with GELU, layer scale, residual."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.rand(dim) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(x).permute(0, 2, 3, 1)
        h = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(h))))
        return x + h.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, 2)
        self.block = ConvNeXtBlock(8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.block(self.stem(x)).mean((-2, -1))))


class ViT(nn.Module):
    """Patch-embedding conv, class token, position embedding, one pre-norm encoder block, MLP head."""

    def __init__(self, dim: int = 8, patches: int = 4) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, patches + 1, dim) * 0.1)
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], 1) + self.pos
        a = self.ln1(h)
        h = h + self.attn(a, a, a, need_weights=False)[0]
        h = h + self.mlp(self.ln2(h))
        return self.head(h[:, 0])


class Recurrent(nn.Module):
    """A per-step Linear, a batch-first GRU or LSTM, a Linear on the last step (GRU) or state (LSTM)."""

    def __init__(self, cell: type[nn.GRU] | type[nn.LSTM]) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 8)
        self.rnn = cell(8, 8, batch_first=True)
        self.out = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, state = self.rnn(torch.tanh(self.proj(x)))
        if isinstance(self.rnn, nn.LSTM):
            return self.out(state[0][-1])  # (layers, B, H): not batch-first
        return self.out(out[:, -1])


class Mixer(nn.Module):
    """MLP-Mixer: token mixing by a Linear on the transposed (B, C, P) tensor, then channel mixing."""

    def __init__(self, dim: int = 8, patches: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, 4)
        self.norm1 = nn.LayerNorm(dim)
        self.token1 = nn.Linear(patches, 8)
        self.token2 = nn.Linear(8, patches)
        self.norm2 = nn.LayerNorm(dim)
        self.channel1 = nn.Linear(dim, 16)
        self.channel2 = nn.Linear(16, dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x).flatten(2).transpose(1, 2)  # (B, P, C)
        t = self.token2(nn.functional.gelu(self.token1(self.norm1(h).transpose(1, 2))))
        h = h + t.transpose(1, 2)
        h = h + self.channel2(nn.functional.gelu(self.channel1(self.norm2(h))))
        return self.head(h.mean(1))


ZOO: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], str]] = {
    # name: (model, input shape per sample, the default engine's expected verdict on every layer)
    "resnet_basic": (lambda: ResNet(lambda: BasicBlock(8, 16, 2), 16), (3, 8, 8), "exact"),
    "resnet_bottleneck": (lambda: ResNet(lambda: Bottleneck(8, 4, 2), 16), (3, 8, 8), "exact"),
    "mobilenet_v2": (MobileNet, (3, 8, 8), "exact"),
    "densenet": (DenseNet, (3, 6, 6), "exact"),
    "squeeze_excitation": (SqueezeExcitation, (3, 6, 6), "exact"),
    "convnext": (ConvNeXt, (3, 8, 8), "exact"),
    "vit": (ViT, (3, 8, 8), "exact"),
    "gru": (lambda: Recurrent(nn.GRU), (5, 3), "exact"),
    "lstm": (lambda: Recurrent(nn.LSTM), (5, 3), "fallback"),
    "mixer": (Mixer, (3, 8, 8), "exact"),
}


@pytest.mark.parametrize("method", ["zero", "mean"])
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo(name: str, method: str) -> None:
    build, shape, verdict = ZOO[name]
    model = build().eval()
    split = split_of(torch.randn(16, *shape), 5)
    # attention heads and out_proj are lesioned inside the attention kernel: tested with lesion's units
    names = [layer.name for layer in layers(model) if not layer.name.startswith("attn")]
    means = unit_means(model, names, [(split.inputs, split.labels)]) if method == "mean" else None
    lesions = singles_and_pairs(model, names, method)
    assert check(model, split, lesions, means=means, fast=verdict) == verdict


def test_vit_heads_take_the_reference_path_and_equal_zeroed_out_proj_columns() -> None:
    """Heads are silenced inside the attention kernel: the default engine warns, takes the reference
    path, and gives the predictions of a copy whose out_proj columns of that head are zero."""
    import copy

    from lesion import Lesion, evaluate

    model = ViT().eval()
    split = split_of(torch.randn(64, 3, 8, 8), 5)
    lesions = [Lesion.of(model, f"attn:{h}") for h in range(2)]
    with pytest.warns(UserWarning, match="MultiheadAttention"):
        got = {o.lesion: o.topk[:, 0] for o in evaluate(model, split, lesions)}
    head_dim = model.attn.embed_dim // model.attn.num_heads
    for h, lesion in enumerate(lesions):
        truth = copy.deepcopy(model)
        with torch.no_grad():
            truth.attn.out_proj.weight[:, h * head_dim : (h + 1) * head_dim] = 0
            expected = truth(split.inputs).argmax(1)
        assert torch.equal(torch.as_tensor(got[lesion]), expected)
    with pytest.raises(LesionError, match="MultiheadAttention"):
        list(evaluate(model, split, lesions, engine="fast"))
