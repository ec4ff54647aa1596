"""Layer and unit addressing: which modules can be lesioned, and unit-selection strings.

A *layer* is a submodule named by its ``named_modules()`` path (``fc1``, ``features.33``); a *unit*
is one output channel of it: the last dimension of a ``Linear``'s output, dimension 1 of any other
module's output (a convolution's feature map), one head of an ``nn.MultiheadAttention``.
Selections are written ``fc1:3``, ``fc1:3,7``, ``fc1:0-9``, ``fc1:*`` (or just ``fc1``); several
are joined with ``;`` and layer names may be shell-style globs (``features.*``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lesion._errors import LesionError, closest
from lesion._forward import HEAD_DIM, eval_mode, standard_attention

LESIONABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention)
Selection = dict[str, tuple[int, ...]]
SelectionLike = str | Mapping[str, "int | str | Iterable[int]"]

#: ``Layer.kind`` of an ``nn.MultiheadAttention``, whose units are its heads.
HEADS = "MultiheadAttention heads"


@dataclass(frozen=True)
class Layer:
    """A lesionable layer: its name, module type, number of units and the unit dimension of its unit output.

    The unit output is the module's output, except for an ``nn.MultiheadAttention`` (kind
    :data:`HEADS`): its heads before the output projection, (B, L, num_heads, head_dim).
    """

    name: str
    kind: str
    n_units: int
    unit_dim: int  # -1 for Linear, 2 for attention heads, 1 otherwise


def _unit_dim(module: nn.Module) -> int:
    if isinstance(module, nn.MultiheadAttention):
        return HEAD_DIM
    return -1 if isinstance(module, nn.Linear) else 1


def never_runs(model: nn.Module, name: str, modules: Mapping[str, nn.Module] | None = None) -> str | None:
    """Why module ``name`` of ``model`` never runs as a module, if that is known without running it.

    ``modules``: ``dict(model.named_modules())``, if the caller has it.
    """
    parent_name, _, child = name.rpartition(".")
    parent = (dict(model.named_modules()) if modules is None else modules).get(parent_name)
    if isinstance(parent, nn.MultiheadAttention) and child == "out_proj":
        return _out_proj_never_runs(name, parent_name, parent.num_heads)
    return None


def _out_proj_never_runs(name: str, attention: str, n_heads: int) -> str:
    return (
        f"{name!r} never runs as a module: nn.MultiheadAttention passes its weights to a functional "
        f"kernel, so a lesion of it would change nothing. Lesion the heads of the attention module "
        f"instead, e.g. '{attention}:0-{n_heads - 1}' (its {n_heads} heads feed out_proj)"
    )


def layers(
    model: nn.Module,
    include: Iterable[str] = (),
    example: torch.Tensor | None = None,
    *,
    probe: bool = True,
) -> list[Layer]:
    """List the lesionable layers of ``model`` that run in its forward pass, in module order.

    Lesionable are ``Linear``, ``Conv1d/2d/3d`` (units: output features / channels) and
    ``MultiheadAttention`` (units: its heads). One probe forward of ``example`` (in eval mode)
    keeps only the modules that actually run; the out_proj of an attention module never does.

    Parameters
    ----------
    model : nn.Module
    include : iterable of str, default=()
        Extra module names to treat as layers (e.g. the ReLU after a convolution, to lesion the
        block's output). Their unit count is read from ``num_features`` or from the probe forward.
    example : Tensor of shape (B, *input_shape), optional
        The probe input. Default: :func:`example_input` (made from the model's first layer); when
        none can be made (e.g. a convolution first: its input size is not fixed by its weights),
        or the made one does not fit, the layers are listed without a probe, and a lesion of one
        that does not run is refused when it is applied (:func:`lesion.lesioned`). The probe is
        an ordinary forward pass: forward hooks of your own see it.
    probe : bool, default=True
        False: list the layers without a probe forward (``example`` is then ignored).

    Examples
    --------
    >>> from lesion.models import meyes2019_mlp
    >>> [(l.name, l.n_units) for l in layers(meyes2019_mlp())]
    [('fc1', 20), ('fc2', 10), ('out', 10)]
    """
    modules = dict(model.named_modules())
    extra = list(include)
    for name in extra:
        if name not in modules or name == "":
            raise LesionError(f"include: unknown module {name!r}{closest(name, [n for n in modules if n])}")
        reason = never_runs(model, name, modules)
        if reason:
            raise LesionError(f"include: {reason}")
    found = candidates(model, extra)
    uncounted = [layer.name for layer in found if layer.n_units == 0]
    given = example is not None
    made = example if given else example_input(model) if probe else None
    ran = probe_forward(model, [layer.name for layer in found], made, given) if probe and made is not None else None
    if ran is None:
        if uncounted:
            raise LesionError(
                f"include: module(s) {uncounted} have no num_features; pass example= (one input batch) to count their units"
            )
        return found
    silent = [name for name in uncounted if name not in ran]
    if silent:
        raise LesionError(f"include: module(s) {silent} did not run in the forward pass of example")
    return [
        Layer(layer.name, layer.kind, layer.n_units or ran[layer.name], layer.unit_dim)
        for layer in found
        if layer.name in ran
    ]


def candidates(model: nn.Module, include: Iterable[str] = ()) -> list[Layer]:
    """The lesionable layers of ``model`` and the modules ``include`` names, without a probe forward.

    The out_proj of an attention module is left out (it never runs as a module). An included
    module without ``num_features`` has ``n_units`` 0 (unknown until it runs).
    """
    extra = set(include)
    modules = dict(model.named_modules())
    found = []
    for name, module in modules.items():
        if name and never_runs(model, name, modules):
            continue
        if isinstance(module, nn.MultiheadAttention):
            n = module.num_heads
        elif isinstance(module, nn.Linear):
            n = module.out_features
        elif isinstance(module, LESIONABLE):
            n = module.out_channels
        elif name in extra:
            n = int(getattr(module, "num_features", 0))
        else:
            continue
        kind = HEADS if isinstance(module, nn.MultiheadAttention) else type(module).__name__
        found.append(Layer(name, kind, int(n), _unit_dim(module)))
    return found


def example_input(model: nn.Module) -> torch.Tensor | None:
    """A one-sample input for a probe forward, made from the model's first layer (module order).

    A ``Linear``: (1, in_features); an ``Embedding``: (1, 1) token ids; a ``MultiheadAttention``
    or an RNN: (1, 1, features). None when the first layer does not fix its input's shape (a
    convolution: any spatial size) or the model has no such layer.
    """
    first = next((m for m in model.modules() if isinstance(m, (*LESIONABLE, nn.Embedding, nn.EmbeddingBag, nn.RNNBase))), None)
    parameter = next(model.parameters(), None)
    if first is None or parameter is None:
        return None
    dtype = parameter.dtype if parameter.is_floating_point() else torch.float32
    if isinstance(first, nn.Linear):
        return torch.zeros(1, first.in_features, dtype=dtype, device=parameter.device)
    if isinstance(first, (nn.Embedding, nn.EmbeddingBag)):
        return torch.zeros(1, 1, dtype=torch.long, device=parameter.device)
    if isinstance(first, nn.MultiheadAttention):
        return torch.zeros(1, 1, first.embed_dim, dtype=dtype, device=parameter.device)
    if isinstance(first, nn.RNNBase):
        return torch.zeros(1, 1, first.input_size, dtype=dtype, device=parameter.device)
    return None


def probe_forward(model: nn.Module, names: Sequence[str], example: torch.Tensor, given: bool = True) -> dict[str, int] | None:
    """Run ``example`` through ``model`` once (eval mode, no grad): which of ``names`` ran, with their
    unit counts (dim 1 of the output; heads for attention modules).

    A forward that fails raises `LesionError` when ``given``, else returns None.
    """
    modules = dict(model.named_modules())
    ran: dict[str, int] = {}

    def seen(name: str, output: Any) -> None:
        module = modules[name]
        if isinstance(module, nn.MultiheadAttention):
            ran[name] = module.num_heads
        else:
            ran[name] = int(output.shape[1]) if isinstance(output, torch.Tensor) and output.dim() > 1 else 0

    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: seen(n, o)) for n in names]
    try:
        with eval_mode(model), standard_attention(model), torch.inference_mode():
            model(example)
    except Exception as exc:  # any failure of a user's model: report it, or fall back to no probe
        if given:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LesionError(f"example: the model's forward pass failed on it ({first})") from None
        return None
    finally:
        for h in handles:
            h.remove()
    return ran


def _parse_units(text: str, layer: Layer) -> tuple[int, ...]:
    text = text.strip()
    if text in ("*", ""):
        return tuple(range(layer.n_units))
    units: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                units.extend(range(int(lo), int(hi) + 1))
            else:
                units.append(int(part))
        except ValueError:
            raise LesionError(
                f"unit selection {layer.name}:{text!r}: expected '*', a unit 'N', a list 'N,M' or a range 'N-M'; got {part!r}"
            ) from None
    return _check_units(units, layer)


def _check_units(units: Iterable[int], layer: Layer) -> tuple[int, ...]:
    out = tuple(sorted(set(int(u) for u in units)))
    bad = [u for u in out if not 0 <= u < layer.n_units]
    if bad:
        raise LesionError(
            f"units {bad} of layer {layer.name!r} are out of range: it has {layer.n_units} units, valid 0-{layer.n_units - 1}"
        )
    if not out:
        raise LesionError(f"empty unit selection for layer {layer.name!r} (valid 0-{layer.n_units - 1})")
    return out


def selection_items(selection: SelectionLike) -> list[tuple[str, Any]]:
    """``(layer name or glob, units)`` pairs of a selection string or mapping (units not yet resolved)."""
    if isinstance(selection, str):
        items: list[tuple[str, Any]] = []
        for chunk in selection.replace(" ", "").split(";"):
            if chunk:
                name, colon, text = chunk.partition(":")
                if colon and not text:
                    raise LesionError(f"unit selection {chunk!r}: units expected after ':', e.g. '{name}:0-9'; or '{name}' for all units")
                items.append((name, text or "*"))
    elif isinstance(selection, Mapping):
        items = [(str(name), units) for name, units in selection.items()]
    else:
        raise LesionError(f"selection must be a string like 'fc1:0-9' or a mapping, got {type(selection).__name__}")
    if not items:
        raise LesionError("empty selection: name at least one layer, e.g. 'fc1' or 'fc1:0-9'")
    return items


def select(model_layers: Sequence[Layer], selection: SelectionLike) -> Selection:
    """Resolve a unit selection against a model's layers.

    Parameters
    ----------
    model_layers : sequence of Layer
        From :func:`layers`.
    selection : str or mapping
        ``"fc1:3,7;fc2:*"``, or ``{"fc1": [3, 7], "fc2": "*"}``; layer names may be globs.

    Returns
    -------
    dict of layer name -> sorted tuple of unit indices, in model order.
    """
    by_name = {layer.name: layer for layer in model_layers}
    items = selection_items(selection)
    chosen: dict[str, set[int]] = {}
    for pattern, units in items:
        pattern = str(pattern)
        names = [n for n in by_name if fnmatch.fnmatchcase(n, pattern)]
        parent, _, child = pattern.rpartition(".")
        if not names and child == "out_proj" and parent in by_name and by_name[parent].kind == HEADS:
            raise LesionError(_out_proj_never_runs(pattern, parent, by_name[parent].n_units))
        if not names:
            raise LesionError(f"unknown layer {pattern!r}; lesionable layers are {list(by_name)}{closest(pattern, by_name)}")
        for name in names:
            layer = by_name[name]
            if isinstance(units, str):
                picked = _parse_units(units, layer)
            elif isinstance(units, int):
                picked = _check_units([units], layer)
            else:
                picked = _check_units(units, layer)
            chosen.setdefault(name, set()).update(picked)
    return {name: tuple(sorted(chosen[name])) for name in by_name if name in chosen}


def format_units(units: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"`` (the inverse of the selection syntax)."""
    parts: list[str] = []
    units = sorted(units)
    i = 0
    while i < len(units):
        j = i
        while j + 1 < len(units) and units[j + 1] == units[j] + 1:
            j += 1
        parts.append(str(units[i]) if j == i else f"{units[i]}-{units[j]}")
        i = j + 1
    return ",".join(parts)


def sequential_child(model: nn.Module, layer: str, what: str) -> tuple[nn.Sequential, str, str]:
    """The ``nn.Sequential`` that holds ``layer`` as a child (``model`` itself for a top-level name,
    else the module named by the part before the last dot), that name (``""`` at the top) and the
    child's name; `LesionError` (its message starting with ``what``) otherwise.

    >>> sequential_child(nn.Sequential(nn.Linear(2, 2)), "0", "rotate")[1:]
    ('', '0')
    """
    parent, _, child = layer.rpartition(".")
    if not parent:
        if not isinstance(model, nn.Sequential):
            raise LesionError(f"{what}: model must be an nn.Sequential for a top-level layer, got {type(model).__name__}")
        container = model
    else:
        try:
            found = model.get_submodule(parent)
        except AttributeError:
            names = [name for name, _ in model.named_modules() if name]
            raise LesionError(f"{what}: layer {layer!r}: model has no module {parent!r}{closest(parent, names)}") from None
        if not isinstance(found, nn.Sequential):
            raise LesionError(f"{what}: layer {layer!r} must sit in an nn.Sequential, but {parent!r} is a {type(found).__name__}")
        container = found
    names = [name for name, _ in container.named_children()]
    if child not in names:
        where = f"layer of {parent!r}" if parent else "top-level layer"
        raise LesionError(f"{what}: unknown {where} {layer!r}{closest(child, names)}")
    return container, parent, child
