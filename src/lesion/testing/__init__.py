"""Tiny hand-built networks whose lesion effects can be worked out on paper.

:func:`toy_network` returns a 4-input, 5-hidden-unit, 4-class MLP (no hidden biases) and the 14
samples of :func:`toy_data`. Every logit is a small integer or half-integer, so there are no ties.

======================  ===================================================================
hidden unit             role (output logits [c0, c1, c2, c3]; the output bias is [0, 0, 0, .5])
======================  ===================================================================
``hidden:0`` = x0       votes 2 for class 0: its lesion kills exactly class 0
``hidden:1`` = x1       votes 1.5 for class 1 } a redundant pair: either alone still wins
``hidden:2`` = x1       votes 1.5 for class 1 } class 1; lesioning both kills it
``hidden:3`` = x2       votes 2 for class 2
``hidden:4`` = x3       votes 3 for class 0: a distractor that misleads the class-2 samples
                        carrying x3; its lesion *improves* class 2 from 50 % to 100 %
======================  ===================================================================

Samples: 4 of class 0 (x = e0), 4 of class 1 (e1), 2 clean class-2 (e2), 2 confusing class-2
(e2 + e3, predicted 0 by the intact network), 2 of class 3 (x = 0, won by the bias).

Intact per-class top-1 accuracy: [1, 1, 0.5, 1], overall 12/14.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from lesion.data import Split

#: Expected top-1 accuracy per class [c0, c1, c2, c3] after each lesion of ``hidden`` (zero method).
TOY_EXPECTED = {
    "intact": (1.0, 1.0, 0.5, 1.0),
    "hidden:0": (0.0, 1.0, 0.5, 1.0),
    "hidden:1": (1.0, 1.0, 0.5, 1.0),
    "hidden:2": (1.0, 1.0, 0.5, 1.0),
    "hidden:1-2": (1.0, 0.0, 0.5, 1.0),
    "hidden:3": (1.0, 1.0, 0.0, 1.0),
    "hidden:4": (1.0, 1.0, 1.0, 1.0),
}


def toy_network() -> nn.Sequential:
    """The 4-5-4 network described in the module docstring (layers ``hidden`` and ``out``)."""
    hidden = nn.Linear(4, 5, bias=False)
    out = nn.Linear(5, 4)
    with torch.no_grad():
        hidden.weight.copy_(
            torch.tensor(
                [[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
            )
        )
        out.weight.copy_(
            torch.tensor(
                [
                    [2.0, 0, 0, 0, 3],
                    [0, 1.5, 1.5, 0, 0],
                    [0, 0, 0, 2, 0],
                    [0, 0, 0, 0, 0],
                ]
            )
        )
        out.bias.copy_(torch.tensor([0.0, 0, 0, 0.5]))
    return nn.Sequential(OrderedDict(hidden=hidden, relu=nn.ReLU(), out=out)).eval()


def toy_data() -> Split:
    """The 14 samples of the module docstring: inputs (14, 4), labels (14,)."""
    e = torch.eye(4)
    rows = [e[0]] * 4 + [e[1]] * 4 + [e[2]] * 2 + [e[2] + e[3]] * 2 + [torch.zeros(4)] * 2
    labels = [0] * 4 + [1] * 4 + [2] * 4 + [3] * 2
    return Split("toy/test", torch.stack(rows), torch.tensor(labels), ("c0", "c1", "c2", "c3"))


def rounding_network() -> nn.Sequential:
    """A 2-1-2 network whose prediction flips when its inputs are rounded to bf16 or fp16.

    ``hidden = relu(x0 - x1)`` (one unit, layer ``hidden``); logits ``[1000 * hidden, 0.2]``
    (layer ``out``). Every weight is exact in bf16 and fp16; only the input 1.0004 is not: both
    round it to 1, so its hidden unit goes from 0.0004 (logit 0.4 > 0.2, class 0) to 0 (class 1).
    """
    hidden = nn.Linear(2, 1, bias=False)
    out = nn.Linear(1, 2)
    with torch.no_grad():
        hidden.weight.copy_(torch.tensor([[1.0, -1.0]]))
        out.weight.copy_(torch.tensor([[1000.0], [0.0]]))
        out.bias.copy_(torch.tensor([0.0, 0.2]))
    return nn.Sequential(OrderedDict(hidden=hidden, relu=nn.ReLU(), out=out)).eval()


def rounding_data() -> Split:
    """6 samples for :func:`rounding_network`: in float32 all are right; under bf16/fp16 autocast
    exactly the first 3 flip to class 1 (:data:`ROUNDING_FLIPS`); after lesioning ``hidden:0`` every
    sample is predicted class 1 in every precision (0 flips)."""
    rows = [[1.0004, 1.0]] * 3 + [[1.5, 1.0]] * 2 + [[1.0, 1.0]]
    return Split("rounding/test", torch.tensor(rows), torch.tensor([0] * 5 + [1]), ("c0", "c1"))


#: Top-1 predictions of :func:`rounding_network` on :func:`rounding_data` that differ between float32 and bf16/fp16.
ROUNDING_FLIPS = {"intact": 3, "hidden:0": 0}

__all__ = ["ROUNDING_FLIPS", "TOY_EXPECTED", "rounding_data", "rounding_network", "toy_data", "toy_network"]
