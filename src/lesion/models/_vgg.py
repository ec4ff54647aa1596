"""VGG 11/13/16/19 (with or without batch norm) with torchvision's module names and state-dict keys.

A torchvision VGG state dict loads strictly into ``vgg(depth, batch_norm)`` built with the
default arguments, so the layers keep the names the papers use: in ``vgg19_bn`` the Conv2d
layers are ``features.0, 3, 7, 10, 14, 17, 20, 23, 27, 30, 33, 36, 40, 43, 46, 49``
(Meyes et al. 2019 lesion ``features.33`` and ``features.46``).
"""

from __future__ import annotations

import torch
from torch import nn

from lesion._errors import LesionError, check_int

# torchvision's configurations A, B, D, E: conv output widths, "M" for a 2x2 max pool.
_CONFIGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
_FULL_SIZE = 224  # image_size from which on the network is torchvision's, 7x7 average pool included
_MIN_SIZE = 16


class VGG(nn.Module):
    """``features`` → ``avgpool`` → flatten → ``classifier``, as ``torchvision.models.VGG``."""

    def __init__(
        self, features: nn.Sequential, pool_side: int, n_classes: int, classifier_width: int, dropout: float
    ) -> None:
        super().__init__()
        last_width = next(m.out_channels for m in reversed(features) if isinstance(m, nn.Conv2d))
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((pool_side, pool_side))
        self.classifier = nn.Sequential(
            nn.Linear(last_width * pool_side * pool_side, classifier_width),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(classifier_width, classifier_width),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(classifier_width, n_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, in_channels, H, W) → logits (B, n_classes)."""
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def vgg(
    depth: int,
    batch_norm: bool = False,
    *,
    n_classes: int = 1000,
    in_channels: int = 3,
    image_size: int = 224,
    width_divisor: int = 1,
    classifier_width: int = 4096,
    dropout: float = 0.5,
) -> VGG:
    """VGG of torchvision's layout: ``vgg(19, batch_norm=True)`` has the keys of ``vgg19_bn``.

    Parameters
    ----------
    depth : {11, 13, 16, 19}
        Number of weight layers (configurations A, B, D, E).
    batch_norm : bool, default=False
        Follow each Conv2d by a BatchNorm2d (torchvision's ``*_bn``; the convs keep their bias).
    n_classes : int, default=1000
        Outputs of the last Linear.
    in_channels : int, default=3
        Channels of the input images.
    image_size : int, default=224
        Side of the (square) inputs the network is meant for; it only chooses the pooling.
        From 224 on the network is torchvision's: five floor-mode max pools and a 7x7 adaptive
        average pool, so the classifier takes ``512 // width_divisor * 7 * 7`` inputs. Below 224 (e.g. 28 or 32)
        the average pool is 1x1, so the classifier takes the last conv width; and if
        ``image_size`` is not a multiple of 32, all five max pools use ``ceil_mode=True`` so
        the map never shrinks to zero (28 → 14 → 7 → 4 → 2 → 1). Layer names and indices are
        the same for every image size. At least 16.
    width_divisor : int, default=1
        Every conv width is divided by it (4 → 16, 32, 64, 128, 128); a divisor of 64.
    classifier_width : int, default=4096
        Width of the two hidden Linear layers.
    dropout : float, default=0.5
        Dropout probability in the classifier.

    Returns
    -------
    VGG
        Maps images (B, in_channels, H, W) to logits (B, n_classes); ``features`` maps them to
        (B, 512 // width_divisor, h, w), ``avgpool`` to 7x7 (image_size >= 224) or 1x1.
        Weights are initialised as torchvision does: conv kaiming-normal (fan_out, relu),
        batch norm weight 1, Linear normal(0, 0.01), all biases 0.
    """
    if isinstance(depth, bool) or depth not in _CONFIGS:
        raise LesionError(f"depth: expected one of 11, 13, 16, 19 (configurations A, B, D, E), got {depth!r}")
    if not isinstance(batch_norm, bool):
        raise LesionError(f"batch_norm: expected True or False, got {batch_norm!r}")
    check_int("n_classes", n_classes, 1)
    check_int("in_channels", in_channels, 1)
    check_int("image_size", image_size, _MIN_SIZE)
    check_int("classifier_width", classifier_width, 1)
    check_int("width_divisor", width_divisor, 1)
    if 64 % width_divisor:
        raise LesionError(f"width_divisor: expected a divisor of 64 (1, 2, 4, 8, 16, 32, 64), got {width_divisor!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
        raise LesionError(f"dropout: expected a probability in [0, 1], got {dropout!r}")

    small = image_size < _FULL_SIZE
    ceil_mode = small and image_size % 32 != 0
    layers: list[nn.Module] = []
    channels = in_channels
    for v in _CONFIGS[depth]:
        if isinstance(v, str):  # "M"
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode))
            continue
        width = v // width_divisor
        layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU(inplace=True))
        channels = width
    return VGG(nn.Sequential(*layers), 1 if small else 7, n_classes, classifier_width, float(dropout))


def vgg_conv_layers(model: nn.Module) -> list[str]:
    """Names of the Conv2d layers in ``model.features``, in order (``["features.0", "features.3", ...]``)."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Module):
        raise LesionError(f"model: expected a VGG-like model with a 'features' module, got {type(model).__name__}")
    return [name for name, m in features.named_modules(prefix="features") if isinstance(m, nn.Conv2d)]
