"""The networks of Meyes et al. 2019 (MLP) and 2020 (CNN), with the papers' layer names.

Both take training variants as factory arguments (Zhou et al. 2018; Morcos et al. 2018):
``batch_norm`` inserts a batch-norm layer after each hidden Linear/Conv (before its ReLU) and
``dropout`` a dropout layer after each hidden fully connected ReLU. With the defaults
(``batch_norm=False, dropout=0.0``) neither is added, so the module list, its repr and the
state-dict keys are exactly those of the plain networks and existing checkpoints keep loading.

With batch norm, zeroing a Linear/Conv output does not silence the unit (the batch norm shifts
the zero to ``beta - gamma·mean/std``); lesion the batch-norm layer's output (``bn1`` ...) instead,
as ``lesion.layers(model, include=[...])`` allows.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from lesion._errors import LesionError


def meyes2019_mlp(
    in_features: int = 784,
    hidden: tuple[int, int] = (20, 10),
    n_classes: int = 10,
    *,
    batch_norm: bool = False,
    dropout: float = 0.0,
) -> nn.Sequential:
    """784-20-10-10 MLP without biases, ReLU hidden units; layers ``fc1 fc2 out``.

    Returns logits of shape (B, n_classes); the paper's softmax lives in the loss and does not
    change which class is predicted. Inputs of any shape (B, *) are flattened.
    ``batch_norm`` adds ``bn1``/``bn2`` (BatchNorm1d) after ``fc1``/``fc2``; ``dropout`` > 0 adds
    ``drop1``/``drop2`` after ``relu1``/``relu2``.
    """
    _check_variant(batch_norm, dropout)
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    widths = (in_features, *hidden)
    for i in (1, 2):
        layers.append((f"fc{i}", nn.Linear(widths[i - 1], widths[i], bias=False)))
        if batch_norm:
            layers.append((f"bn{i}", nn.BatchNorm1d(widths[i])))
        layers.append((f"relu{i}", nn.ReLU()))
        if dropout:
            layers.append((f"drop{i}", nn.Dropout(dropout)))
    layers.append(("out", nn.Linear(hidden[1], n_classes, bias=False)))
    return nn.Sequential(OrderedDict(layers))


def meyes2020_cnn(
    in_channels: int = 1,
    image_size: int = 28,
    width: int = 64,
    n_classes: int = 10,
    *,
    batch_norm: bool = False,
    dropout: float = 0.0,
    hidden: int = 512,
) -> nn.Sequential:
    """Three Conv2d(width, 5x5, stride 1, padding 2) + ReLU + MaxPool(2), then fc 512, fc 512, out.

    Layers ``conv1 conv2 conv3 fc1 fc2 out``; input (B, in_channels, image_size, image_size),
    logits (B, n_classes). On 28x28 inputs the pooled maps are 14x14, 7x7 and 3x3.
    ``batch_norm`` adds ``bn1 bn2 bn3`` (BatchNorm2d) after the convolutions and ``bn4 bn5``
    (BatchNorm1d) after ``fc1 fc2``; ``dropout`` > 0 adds ``drop4 drop5`` after ``relu4 relu5``.
    ``hidden`` is the width of ``fc1`` and ``fc2`` (512 in the paper).
    """
    _check_variant(batch_norm, dropout)
    side = image_size // 8
    layers: list[tuple[str, nn.Module]] = []
    channels = in_channels
    for i in (1, 2, 3):
        layers.append((f"conv{i}", nn.Conv2d(channels, width, 5, stride=1, padding=2)))
        if batch_norm:
            layers.append((f"bn{i}", nn.BatchNorm2d(width)))
        layers += [(f"relu{i}", nn.ReLU()), (f"pool{i}", nn.MaxPool2d(2))]
        channels = width
    layers.append(("flatten", nn.Flatten()))
    fan_in = width * side * side
    for i, name in ((4, "fc1"), (5, "fc2")):
        layers.append((name, nn.Linear(fan_in, hidden)))
        if batch_norm:
            layers.append((f"bn{i}", nn.BatchNorm1d(hidden)))
        layers.append((f"relu{i}", nn.ReLU()))
        if dropout:
            layers.append((f"drop{i}", nn.Dropout(dropout)))
        fan_in = hidden
    layers.append(("out", nn.Linear(hidden, n_classes)))
    return nn.Sequential(OrderedDict(layers))


def _check_variant(batch_norm: bool, dropout: float) -> None:
    if not isinstance(batch_norm, bool):
        raise LesionError(f"batch_norm must be True or False, got {batch_norm!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise LesionError(f"dropout must be a probability in [0, 1), got {dropout!r} (0.5 is usual)")
