"""Random rotation of a layer's representation (Zhou et al. 2018; Morcos et al. 2018).

Is class-specific importance aligned with a network's units, or would any basis do? To ask,
the representation ``h`` after a layer (after its batch norm, ReLU, pooling and dropout) is
rotated by an orthogonal ``Q``: a new layer computes ``z = Q h``, and the next Linear/Conv, which
computed ``W h``, takes ``W Qᵀ`` so that it computes ``W Qᵀ z = W h``. The network's function is
unchanged (up to float rounding), and the rotated directions ``z_j = q_j · h`` are the units of the
new layer, which the engine lesions like any other: zeroing ``z_j`` removes the direction ``q_j``
from ``h``. For a convolution ``Q`` acts on the channels at every position (a 1×1 convolution)
and the next layer's input-channel axis takes ``Qᵀ`` (through a Flatten as well). The layer may sit
in a nested ``nn.Sequential`` (``features.3`` of a VGG) when the next Linear/Conv is in the same one.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import ortho_group
from torch import nn

from lesion._errors import LesionError, check_int
from lesion._units import sequential_child

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Rotated:
    """A rotated copy of a network.

    Attributes
    ----------
    model : nn.Module
        The copy, in eval mode, with the rotation layer inserted (in the rotated layer's container).
    layer : str
        The rotated layer's name (``<original>_rotated``, e.g. ``features.3_rotated``): a Linear (n, n) or a 1×1 convolution
        (C, C), lesionable; its unit ``j`` is the direction ``q[j]``.
    q : Tensor of shape (n, n), float64
        The orthogonal matrix; row ``j`` is direction ``j`` in the original units' coordinates.
    next_layer : str
        The Linear/Conv whose weights took ``Qᵀ``.
    """

    model: nn.Module
    layer: str
    q: torch.Tensor
    next_layer: str


def random_orthogonal(n: int, seed: int) -> torch.Tensor:
    """A Haar-random orthogonal (n, n) float64 matrix (``scipy.stats.ortho_group``), seeded."""
    check_int("n", n, 2)
    check_int("seed", seed, 0)
    return torch.from_numpy(ortho_group.rvs(n, random_state=np.random.default_rng(seed)))


def rotate(model: nn.Module, layer: str, *, seed: int = 0, q: torch.Tensor | None = None) -> Rotated:
    """A copy of ``model`` whose representation after ``layer`` is rotated by ``q``; same predictions.

    Parameters
    ----------
    model : nn.Module
        Not modified. Modules between ``layer`` and the next Linear/Conv must act on each unit
        separately (ReLU, pooling, batch norm, dropout); a Flatten may precede the next layer.
    layer : str
        A Linear or Conv child of ``model`` (an ``nn.Sequential``: ``fc1``, ``conv2``), or of an
        ``nn.Sequential`` inside it (``features.3``, ``classifier.0``), that another child of
        the same Sequential follows.
    seed : int, default=0
        Draws ``q`` with :func:`random_orthogonal` unless ``q`` is given.
    q : Tensor of shape (n, n), optional
        An orthogonal matrix to use instead (e.g. the identity or a permutation, for checks).

    Returns
    -------
    Rotated
    """
    container, parent, child = sequential_child(model, layer, "rotate")
    names = [name for name, _ in container.named_children()]
    source = getattr(container, child)
    if not isinstance(source, _WEIGHTED):
        raise LesionError(f"rotate: layer {layer!r} must be a Linear or Conv, got {type(source).__name__}")
    n = source.out_features if isinstance(source, nn.Linear) else source.out_channels
    position = names.index(child)
    after = names[position + 1:]
    following = next((name for name in after if isinstance(getattr(container, name), _WEIGHTED)), None)
    if following is None:
        scope = f" in {parent!r}" if parent else ""
        raise LesionError(f"rotate: no Linear/Conv follows layer {layer!r}{scope}, so nothing can undo the rotation")
    between = after[: after.index(following)]
    insert_at = next((name for name in between if isinstance(getattr(container, name), nn.Flatten)), following)
    q = random_orthogonal(n, seed) if q is None else q.detach().to("cpu", torch.float64)
    if q.shape != (n, n) or not torch.allclose(q @ q.T, torch.eye(n, dtype=torch.float64), atol=1e-6):
        raise LesionError(f"rotate: q must be an orthogonal ({n}, {n}) matrix, got shape {tuple(q.shape)}")
    new = copy.deepcopy(model).eval()
    new_container = new.get_submodule(parent)
    weight = getattr(new_container, following).weight
    rotation = _rotation_module(source, q, weight.dtype)
    with torch.no_grad():
        weight.copy_(_undo(weight, q, isinstance(getattr(new_container, following), _CONVS)))
    children = []
    for name, module in new_container.named_children():
        if name == insert_at:
            children.append((f"{child}_rotated", rotation))
        children.append((name, module))
    rotated = nn.Sequential(OrderedDict(children))
    if parent:
        new.set_submodule(parent, rotated)
    else:
        new = rotated
    prefix = f"{parent}." if parent else ""
    return Rotated(new.eval(), f"{layer}_rotated", q, f"{prefix}{following}")


def _rotation_module(source: nn.Module, q: torch.Tensor, dtype: torch.dtype) -> nn.Module:
    """z = Q h: a bias-free Linear (n, n), or a 1×1 convolution of the source's dimensionality."""
    n = q.shape[0]
    module: nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d
    if isinstance(source, nn.Linear):
        module = nn.Linear(n, n, bias=False, dtype=dtype)
        kernel = q
    else:
        spatial = len(getattr(source, "kernel_size"))  # noqa: B009 (typed as Any on purpose)
        module = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[spatial - 1](n, n, 1, bias=False, dtype=dtype)
        kernel = q.reshape(n, n, *[1] * spatial)
    with torch.no_grad():
        module.weight.copy_(kernel.to(dtype))
    return module.requires_grad_(False)


def _undo(weight: torch.Tensor, q: torch.Tensor, conv: bool) -> torch.Tensor:
    """The next layer's weight with Qᵀ applied to its input axis: W'[o, j, ...] = Σ_i W[o, i, ...] Q[j, i].

    A Linear fed through a Flatten of C channels has C·S inputs, channel-major: its columns are
    reshaped to (out, C, S) first.
    """
    n = q.shape[0]
    w = weight.detach().to(torch.float64)
    if not conv and w.shape[1] != n:
        if w.shape[1] % n:
            raise LesionError(f"rotate: the next layer has {w.shape[1]} inputs, not a multiple of the {n} rotated units")
        w = w.reshape(w.shape[0], n, -1)
    undone = torch.einsum("oi...,ji->oj...", w, q)
    return undone.reshape(weight.shape).to(weight.dtype)
