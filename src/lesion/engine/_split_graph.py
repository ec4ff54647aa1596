"""Cutting a traced network at a lesioned layer: what runs once per data batch, what runs per lesion.

The network is traced with :mod:`torch.fx`. For one lesioned layer ``L`` a :class:`Cut` holds

* ``chain``: channel-wise operations that follow ``L`` alone (activations, pooling, batch norm in
  eval mode, dropout in eval mode). They act on each sample and channel separately, so a lesioned
  channel leaves them as ``chain(replacement)``: the mask is applied after them, on the intact
  values computed once per batch.
* ``update``: the Linear/Conv that consumes the chain's end (through a flatten, for a Linear),
  if any. Its lesioned output is its intact output plus the contribution of the lesioned channels'
  change alone (a thin matmul/convolution), instead of a full recomputation.
* ``suffix``: a GraphModule of every node that depends on the cut value; its inputs (``carried``)
  are the cut value and every earlier value it consumes (skip connections too), which the engine
  tiles K times (K lesions x B samples rows, lesion-major).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from lesion._errors import LesionError

_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardtanh,
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
)  # fmt: skip
_CHANNEL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
)  # fmt: skip
_ELEMENTWISE_FUNCTIONS = {torch.relu, F.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, torch.sigmoid, torch.tanh}
_CHANNEL_FUNCTIONS = {F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool2d}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh"}
_CONV = nn.Conv1d | nn.Conv2d | nn.Conv3d
#: The layers an incremental update can go through: the next Linear or (ungrouped, zero-padded) Conv.
UpdateLayer = nn.Linear | _CONV


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace(model)``, or `LesionError` saying why it cannot be traced."""
    try:
        return fx.symbolic_trace(model)
    except Exception as error:  # fx raises many types (TraceError, TypeError, NotImplementedError...)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise LesionError(f"cannot trace {type(model).__name__} with torch.fx ({type(error).__name__}: {first})") from None


def propagate_shapes(gm: fx.GraphModule, example: Tensor) -> None:
    """Record every node's tensor shape (``node.meta["tensor_meta"]``) from one small batch."""
    ShapeProp(gm).propagate(example)


def _meta(node: fx.Node) -> TensorMetadata | None:
    meta = node.meta.get("tensor_meta")
    return meta if isinstance(meta, TensorMetadata) else None


def _per_sample_bytes(node: fx.Node) -> int:
    meta = _meta(node)
    if meta is None or not meta.shape:
        return 0
    return math.prod(meta.shape[1:]) * torch.empty((), dtype=meta.dtype).element_size()


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    if len(users) != 1 or users[0].op == "output":
        return None
    user = users[0]
    if not user.args or user.args[0] is not node:
        return None
    inputs: list[fx.Node] = []
    fx.node.map_arg((user.args[1:], user.kwargs), inputs.append)
    return None if inputs else user


def _is_channelwise(node: fx.Node, modules: dict[str, nn.Module], unit_dim: int) -> bool:
    """Whether ``node`` acts on each sample and each unit (channel ``unit_dim``) separately."""
    if node.op == "call_module":
        module = modules[node.target]  # type: ignore[index]
        if len(node.args) != 1 or node.kwargs:
            return False
        if isinstance(module, _ELEMENTWISE_MODULES):
            return True
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is None:
            return False  # batch statistics even in eval mode: mixes samples
        return isinstance(module, _CHANNEL_MODULES) and unit_dim == 1 and not getattr(module, "return_indices", False)
    if node.op == "call_function":
        return node.target in _ELEMENTWISE_FUNCTIONS or (node.target in _CHANNEL_FUNCTIONS and unit_dim == 1)
    return node.op == "call_method" and node.target in _ELEMENTWISE_METHODS


def apply_node(node: fx.Node, modules: dict[str, nn.Module], x: Tensor) -> Tensor:
    """Run the single-input operation ``node`` on ``x``."""
    if node.op == "call_module":
        return modules[node.target](x)  # type: ignore[index]
    if node.op == "call_function":
        return node.target(x, *node.args[1:], **node.kwargs)  # type: ignore[operator]
    return getattr(x, node.target)(*node.args[1:], **node.kwargs)  # type: ignore[arg-type]


def _is_flatten(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        module = modules[node.target]  # type: ignore[index]
        return isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1
    return node.op == "call_function" and node.target is torch.flatten and tuple(node.args[1:]) == (1,) and not node.kwargs


@dataclass
class Cut:
    """How the lesions of one layer are evaluated (see the module docstring).

    ``source`` is the chain's end: the lesion replaces its units (dim ``unit_dim``) by ``chain``
    applied to the replacement. Without ``update`` the cut value is ``source`` itself; with it,
    the cut value is the output of the Linear/Conv ``update`` (``flatten``: through a flatten).
    """

    layer: str
    shape: tuple[int, ...]  # the layer's output shape per sample
    unit_dim: int
    chain: list[fx.Node]
    source: str
    update: UpdateLayer | None
    flatten: bool
    cut: str
    carried: list[str]
    tiled: list[bool]
    suffix: fx.GraphModule
    row_bytes: int  # bytes per (lesion, sample) row of the tiled values in flight


def make_cut(gm: fx.GraphModule, layer: str, unit_dim: int, incremental: bool = True) -> Cut:
    """Plan the evaluation of ``layer``'s lesions; `LesionError` if it is not one node of the graph."""
    modules = dict(gm.named_modules())
    nodes = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == layer]
    if len(nodes) != 1:
        raise LesionError(f"layer {layer!r} is called {len(nodes)} times in the traced graph (expected once)")
    start = nodes[0]
    meta = _meta(start)
    if meta is None:
        raise LesionError(f"layer {layer!r} does not return a tensor")
    dim = unit_dim % len(meta.shape)
    source = start
    chain = []
    while (user := _only_user(source)) is not None and _is_channelwise(user, modules, dim):
        chain.append(user)
        source = user
    cut, update, flatten = source, None, False
    if incremental:
        cut, update, flatten = _next_layer(source, modules, dim)
    descendants = _descendants(gm, cut)
    output = next(n for n in gm.graph.nodes if n.op == "output")
    if output not in descendants:
        raise LesionError(f"the output does not depend on layer {layer!r}")
    suffix_nodes = _with_non_tensor_inputs(descendants, cut)
    carried = [cut] + [
        n for n in gm.graph.nodes
        if n not in suffix_nodes and n is not cut and any(u in suffix_nodes for u in n.users)
    ]  # fmt: skip
    batch_dependent = _batch_dependent(gm)
    tiled = [n in batch_dependent and _meta(n) is not None for n in carried]
    in_flight = [_per_sample_bytes(n) for n in suffix_nodes]
    row_bytes = sum(_per_sample_bytes(n) for n, t in zip(carried, tiled, strict=True) if t) + 2 * max(in_flight, default=0)
    return Cut(
        layer, tuple(meta.shape[1:]), dim, chain, source.name, update, flatten, cut.name,
        [n.name for n in carried], tiled, _subgraph(gm, carried, suffix_nodes), max(row_bytes, 1),
    )  # fmt: skip


def _next_layer(source: fx.Node, modules: dict[str, nn.Module], dim: int) -> tuple[fx.Node, UpdateLayer | None, bool]:
    """The Linear/Conv fed by ``source`` alone (through a flatten for a Linear), else ``source``."""
    meta = _meta(source)
    ndim = len(meta.shape) if meta is not None else 0
    node, flatten = _only_user(source), False
    if node is not None and ndim > 2 and dim == 1 and _is_flatten(node, modules):
        node, flatten = _only_user(node), True
    if node is None or node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return source, None, False
    module = modules[node.target]  # type: ignore[index]
    if isinstance(module, nn.Linear) and (flatten or (ndim == 2 and dim == 1)):
        return node, module, flatten
    if (
        isinstance(module, _CONV) and not flatten and dim == 1 and ndim == module.weight.dim()
        and module.groups == 1 and module.padding_mode == "zeros"
    ):  # fmt: skip
        return node, module, False
    return source, None, False


def _descendants(gm: fx.GraphModule, root: fx.Node) -> list[fx.Node]:
    """Nodes that depend on ``root`` (not ``root`` itself), in graph order."""
    found: set[fx.Node] = {root}
    out = []
    for node in gm.graph.nodes:
        if any(a in found for a in node.all_input_nodes):
            found.add(node)
            out.append(node)
    return out


def _with_non_tensor_inputs(nodes: list[fx.Node], cut: fx.Node) -> list[fx.Node]:
    """``nodes`` plus the non-tensor values they consume (``x.size(0)``...), recomputed after tiling."""
    chosen = set(nodes)
    stack = list(nodes)
    while stack:
        for arg in stack.pop().all_input_nodes:
            if arg not in chosen and arg is not cut and arg.op not in ("placeholder", "get_attr") and _meta(arg) is None:
                chosen.add(arg)
                stack.append(arg)
    order = {n: i for i, n in enumerate(cut.graph.nodes)}
    return sorted(chosen, key=order.__getitem__)


def _batch_dependent(gm: fx.GraphModule) -> set[fx.Node]:
    found: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if (node.op == "placeholder" and not found) or any(a in found for a in node.all_input_nodes):
            found.add(node)
    return found


def _subgraph(gm: fx.GraphModule, inputs: list[fx.Node], nodes: list[fx.Node]) -> fx.GraphModule:
    """A GraphModule taking ``inputs`` as placeholders and running ``nodes`` (the last is the output)."""
    graph = fx.Graph()
    env: dict[fx.Node, Any] = {n: graph.placeholder(n.name) for n in inputs}
    for node in nodes:
        env[node] = graph.node_copy(node, env.__getitem__)
    return fx.GraphModule(gm, graph)


def values_module(gm: fx.GraphModule, names: list[str]) -> fx.GraphModule:
    """The intact network returning the values ``names`` (a tuple) instead of its output.

    Each tensor is cloned as soon as it is computed, so that a later in-place operation
    (``ReLU(inplace=True)``) cannot change what the suffix receives.
    """
    graph = fx.Graph()
    env: dict[fx.Node, Any] = {}
    taken: dict[str, Any] = {}
    for node in gm.graph.nodes:
        if node.op == "output":
            continue
        env[node] = graph.node_copy(node, env.__getitem__)
        if node.name in names:
            taken[node.name] = graph.call_method("clone", (env[node],)) if _meta(node) is not None else env[node]
    graph.output(tuple(taken[name] for name in names))
    module = fx.GraphModule(gm, graph)
    module.graph.eliminate_dead_code()
    module.recompile()
    return module
