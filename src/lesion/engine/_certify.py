"""Certified skipping: prove, per lesion and sample, that the top-k outcome equals the intact one.

For a cut whose update layer is a Linear (``W``, (F, in)) and whose suffix is a
:class:`~lesion.engine._split_graph.SuffixBound` (``y = scale * z + shift``, one activation ``act``
of slope in [0, 1], the logits Linear ``V`` (C, F)), a lesion changes the update layer's input by
``d`` (in,) (its units' ``fill - h``; zero elsewhere) and the pre-activation by exactly
``dy = scale * (W @ d)``. Per sample, with a radius ``tau`` on ``|dy|``, each feature's activation
slope between the intact and lesioned value lies in ``[lo, hi]``: for ReLU ``[1, 1]`` where
``y > tau``, ``[0, 0]`` where ``y <= -tau``, else ``[0, 1]``; ``[0, 1]`` for other activations;
``[1, 1]`` without one. So for two classes ``a, b`` with ``v = V[a] - V[b]``::

    delta(l_a - l_b) >= lin . d - err . |d|,   lin = (v * mid) @ (scale * W),   err = (|v| * rad) @ |scale * W|

(``mid, rad`` the slope interval's centre and half-width), valid when ``sum |d| * max_j |scale_j W_ju|
<= tau``. Per sample the pairs that decide the outcome are the C - 1 consecutive ones of the intact
order down to rank k and rank k against every class below it; ``lin`` and ``err`` for those pairs
((B, C - 1, in) each) are computed once per data batch (:func:`sample_bounds`); per lesion a sample
is certified (:func:`certify`) when every pair keeps a positive margin after the bound, the
rounding margin :data:`ROUNDING` (relative to the magnitudes summed in the update and logits
layers) and, for the top pair, the near-tie tolerance. Certified samples keep the intact top-k and
count no near-tie; the rest are evaluated exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lesion.engine._outcome import TIE_TOLERANCE
from lesion.engine._split_graph import Cut, SuffixBound, apply_node

#: Relative margin for float32 rounding: a pair is certified only if its bound leaves this fraction
#: of the magnitudes summed in the update and logits layers (~1,700 float32 epsilons).
ROUNDING = 1e-4
#: The radius ``tau`` is the lesion's column count times this quantile (over the update layer's
#: inputs) of ``|h| * max_j |scale_j W_ju|``: larger certifies more lesions, smaller keeps fewer
#: ReLU slopes undecided.
RADIUS_QUANTILE = 0.95


@dataclass
class LayerBound:
    """Per-layer constants of a certifiable cut."""

    suffix: SuffixBound
    weight: Tensor  # (F, in) scale * W
    reach: Tensor  # (in,) max_j |weight[j, u]|: |dy| <= sum_u |d_u| reach_u
    logits: Tensor  # (C, F) the logits Linear's weight, or the identity
    spread: float  # max_c sum_j |logits[c, j]|: max_c |delta l_c| <= spread * tau
    columns: int  # columns of the update layer's input per unit (positions after a flatten)


@dataclass
class SampleBounds:
    """One data batch's certificates for lesions of ``width`` columns: B samples, P = C - 1 pairs."""

    top: Tensor  # (B, k) intact top-k, in the order the pairs were taken
    lin: Tensor  # (in, B, P): input column first, so that a lesion's columns are gathered as whole blocks
    err: Tensor | None  # (in, B, P); None when every slope is exact
    slack: Tensor  # (B, P) the intact margin of each pair minus rounding (and near-tie) allowances
    tau: Tensor  # (B,)


def layer_bound(cut: Cut, device: torch.device) -> LayerBound | None:
    """The constants of ``cut``'s certificate, or None when its suffix cannot be bounded."""
    if cut.bound is None or not isinstance(cut.update, nn.Linear):
        return None
    bound = cut.bound
    weight = cut.update.weight.detach().float() * bound.scale.to(device)[:, None]
    if bound.final is not None:
        logits = bound.final.weight.detach().float()
    else:
        logits = torch.eye(weight.shape[0], device=device)
    columns = weight.shape[1] // cut.shape[cut.unit_dim - 1] if cut.flatten else 1
    return LayerBound(bound, weight, weight.abs().amax(0), logits, float(logits.abs().sum(1).max()), columns)


def _forward(layer: LayerBound, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The suffix on intact cut values ``z`` (B, F): pre-activations, the logits Linear's input, logits."""
    suffix, modules = layer.suffix, layer.suffix.modules
    y = z.clone()
    for node in suffix.pre:
        y = apply_node(node, modules, y)
    a = apply_node(suffix.act, modules, y.clone()) if suffix.act is not None else y
    for node in suffix.post:
        a = apply_node(node, modules, a)
    logits = suffix.final(a) if suffix.final is not None else a
    return y, a, logits


def sample_bounds(layer: LayerBound, z: Tensor, h: Tensor, k: int, width: int) -> SampleBounds:
    """Certificates for one batch: intact cut values ``z`` (B, F) and update inputs ``h`` (B, ...);
    ``width``: the lesions' unit count (the radius grows with it)."""
    h = h.reshape(len(h), -1).float()
    y, a, logits = (value.float() for value in _forward(layer, z))  # in the model's dtype, then float32
    b, c = logits.shape
    order = logits.argsort(dim=1, descending=True, stable=True)
    upper = torch.cat([order[:, : k - 1], order[:, k - 1 : k].expand(b, c - k)], 1)  # (B, P)
    lower = torch.cat([order[:, 1:k], order[:, k:]], 1)
    gap = logits.gather(1, upper) - logits.gather(1, lower)
    tau = width * layer.columns * torch.quantile(h.abs() * layer.reach, RADIUS_QUANTILE, dim=1)
    if layer.suffix.activation == "relu":
        low, high = (y - tau[:, None] > 0).float(), (y + tau[:, None] > 0).float()
        mid, rad = (low + high) / 2, (high - low) / 2
    elif layer.suffix.activation == "monotone":
        mid, rad = torch.full_like(y, 0.5), torch.full_like(y, 0.5)
    else:
        mid, rad = torch.ones_like(y), None
    v = layer.logits[upper] - layer.logits[lower]  # (B, P, F)
    lin = ((v * mid[:, None]) @ layer.weight).permute(2, 0, 1).contiguous()
    err = ((v.abs() * rad[:, None]) @ layer.weight.abs()).permute(2, 0, 1).contiguous() if rad is not None else None
    final = layer.suffix.final
    terms = a.abs() @ layer.logits.abs().t() + (final.bias.abs() if final is not None and final.bias is not None else 0)
    upstream = h.abs() @ layer.weight.abs().t()
    magnitude = terms.amax(1) + layer.spread * (upstream.amax(1) + tau)
    larger = torch.maximum(logits.gather(1, upper).abs(), logits.gather(1, lower).abs())
    at_top = upper == order[:, :1]  # the pairs whose lesioned margin decides a near-tie at rank 1
    slack = gap - ROUNDING * magnitude[:, None] - at_top * (TIE_TOLERANCE * (larger + layer.spread * tau[:, None]))
    return SampleBounds(order[:, :k], lin, err, slack, tau)


def certify(layer: LayerBound, bounds: SampleBounds, change: Tensor, columns: Tensor) -> Tensor:
    """Which (lesion, sample) keep the intact outcome: (K, B) bool.

    ``change`` (K, c, B): each lesion's change ``fill - h`` of its ``c`` input columns (zero for
    padding); ``columns`` (K*c,): those columns' indices in the update layer's input.
    """
    n, c, _ = change.shape
    magnitude = change.abs()
    radius = (magnitude * layer.reach[columns].view(n, c, 1)).sum(1)  # (K, B)
    margin = _weighted(bounds.lin, columns, change)  # (K, B, P)
    if bounds.err is not None:
        margin -= _weighted(bounds.err, columns, magnitude)
    margin += bounds.slack
    return (radius <= bounds.tau) & (margin > 0).all(2)


def _weighted(table: Tensor, columns: Tensor, weights: Tensor) -> Tensor:
    """sum_i weights[:, i, :, None] * table[columns of lesion, i]: (in, B, P), (K*c,), (K, c, B) -> (K, B, P)."""
    n, c, b = weights.shape
    rows = table.index_select(0, columns).view(n, c, b, -1)
    out = rows[:, 0] * weights[:, 0, :, None]
    for i in range(1, c):
        out.addcmul_(rows[:, i], weights[:, i, :, None])
    return out
