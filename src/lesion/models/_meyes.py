"""The networks of Meyes et al. 2019 (MLP) and 2020 (CNN), with the papers' layer names."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


def meyes2019_mlp(in_features: int = 784, hidden: tuple[int, int] = (20, 10), n_classes: int = 10) -> nn.Sequential:
    """784-20-10-10 MLP without biases, ReLU hidden units; layers ``fc1 fc2 out``.

    Returns logits of shape (B, n_classes); the paper's softmax lives in the loss and does not
    change which class is predicted. Inputs of any shape (B, *) are flattened.
    """
    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            fc1=nn.Linear(in_features, hidden[0], bias=False),
            relu1=nn.ReLU(),
            fc2=nn.Linear(hidden[0], hidden[1], bias=False),
            relu2=nn.ReLU(),
            out=nn.Linear(hidden[1], n_classes, bias=False),
        )
    )


def meyes2020_cnn(in_channels: int = 1, image_size: int = 28, width: int = 64, n_classes: int = 10) -> nn.Sequential:
    """Three Conv2d(width, 5x5, stride 1, padding 2) + ReLU + MaxPool(2), then fc 512, fc 512, out.

    Layers ``conv1 conv2 conv3 fc1 fc2 out``; input (B, in_channels, image_size, image_size),
    logits (B, n_classes). On 28x28 inputs the pooled maps are 14x14, 7x7 and 3x3.
    """
    side = image_size // 8
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_channels, width, 5, stride=1, padding=2),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(width, width, 5, stride=1, padding=2),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            conv3=nn.Conv2d(width, width, 5, stride=1, padding=2),
            relu3=nn.ReLU(),
            pool3=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(width * side * side, 512),
            relu4=nn.ReLU(),
            fc2=nn.Linear(512, 512),
            relu5=nn.ReLU(),
            out=nn.Linear(512, n_classes),
        )
    )
