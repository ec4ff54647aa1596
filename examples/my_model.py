"""A model of your own, for examples/my_model.toml: any ``torch.nn.Module`` from a factory function.

The study file names it ``my_model:build`` (modules beside the study file import while it runs).
"""

from torch import nn


def build(hidden: int = 32, n_classes: int = 10) -> nn.Module:
    """A small MLP for 8x8 digits: 64 -> hidden -> hidden -> n_classes."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_classes),
    )
