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
* ``bound``: for a Linear ``update`` whose suffix is a chain the engine can bound (:class:`SuffixBound`:
  eval batch norms and dropouts, at most one monotone activation of slope in [0, 1], then the
  logits Linear, or nothing), the pieces :mod:`lesion.engine._certify` needs to prove, per lesion
  and sample, that the top-k predictions cannot change.

The graph is traced in eval mode and its in-place writes are made explicit (:func:`functionalize`).
A layer qualifies only if tiling is exact for it: shape propagation at two batch sizes shows that
its output, every carried value and every value after the cut keep the batch as dim 0, and no
operation after the cut combines samples (:func:`mixes_samples`); :func:`make_cut` otherwise
raises `LesionError` naming the cause, and the engine uses the reference path for that layer.
"""

from __future__ import annotations

import inspect
import math
import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from lesion._errors import LesionError
from lesion.engine._reference import eval_mode

_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardtanh,
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
)  # fmt: skip
#: Per-channel modules by the input rank (batched) on which they act on dim 1 = channels, each sample apart.
_CHANNEL_MODULES: dict[type[nn.Module], tuple[int, ...]] = {
    nn.MaxPool1d: (3,), nn.MaxPool2d: (4,), nn.MaxPool3d: (5,), nn.AvgPool1d: (3,), nn.AvgPool2d: (4,),
    nn.AvgPool3d: (5,), nn.AdaptiveAvgPool1d: (3,), nn.AdaptiveAvgPool2d: (4,), nn.AdaptiveAvgPool3d: (5,),
    nn.AdaptiveMaxPool1d: (3,), nn.AdaptiveMaxPool2d: (4,), nn.AdaptiveMaxPool3d: (5,),
    nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,),
}  # fmt: skip
_ELEMENTWISE_FUNCTIONS = {torch.relu, F.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, torch.sigmoid, torch.tanh}
_CHANNEL_FUNCTIONS = {F.max_pool1d: 3, F.max_pool2d: 4, F.avg_pool1d: 3, F.avg_pool2d: 4, F.adaptive_avg_pool2d: 4}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh"}
_CONV = nn.Conv1d | nn.Conv2d | nn.Conv3d
#: The layers an incremental update can go through: the next Linear or (ungrouped, zero-padded) Conv.
UpdateLayer = nn.Linear | _CONV
#: Batch sizes of the two shape propagations that locate each value's batch dimension.
PROBE_SIZES = (3, 5)


def trace(model: nn.Module) -> fx.GraphModule:
    """The model's graph, traced in eval mode (its modes restored after) with its in-place
    operations made explicit (:func:`functionalize`); `LesionError` saying why it cannot be."""
    try:
        with eval_mode(model):
            gm = fx.symbolic_trace(model)
    except Exception as error:  # fx raises many types (TraceError, TypeError, NotImplementedError...)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise LesionError(f"cannot trace {type(model).__name__} with torch.fx ({type(error).__name__}: {first})") from None
    functionalize(gm)
    gm.graph.eliminate_dead_code()  # with every write explicit, unused values are dead
    gm.recompile()
    return gm


def propagate_shapes(gm: fx.GraphModule, example: Tensor) -> None:
    """Record each node's tensor shape and where its batch dimension is, from two shape
    propagations at the batch sizes :data:`PROBE_SIZES` (``example``'s samples, cycled).

    ``meta["tensor_meta"]``: the shape at the first size; ``meta["batch"]``: ``"first"`` (dim 0
    follows the batch size), ``"none"`` (the shape does not depend on it) or ``"other"`` (any
    other layout: sequence-first, the batch flattened into features...).
    """
    shapes = []
    for size in PROBE_SIZES:
        ShapeProp(gm).propagate(example[torch.arange(size, device=example.device) % len(example)])
        shapes.append({node: _meta(node) for node in gm.graph.nodes})
    for node in gm.graph.nodes:
        first, second = shapes[0][node], shapes[1][node]
        node.meta["tensor_meta"] = first
        node.meta["batch"] = None if first is None or second is None else _layout(first.shape, second.shape)


def _layout(first: Any, second: Any) -> str:
    if tuple(first) == tuple(second):
        return "none"
    if len(first) == len(second) and (first[0], second[0]) == PROBE_SIZES and tuple(first[1:]) == tuple(second[1:]):
        return "first"
    return "other"


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


def _is_channelwise(node: fx.Node, modules: dict[str, nn.Module], unit_dim: int, rank: int) -> bool:
    """Whether ``node`` acts on each sample and each unit (dim ``unit_dim`` of a rank-``rank``
    batch-first tensor) separately: elementwise, or per-channel for exactly this rank."""
    meta = _meta(node)
    if meta is None or len(meta.shape) != rank or node.meta.get("batch") != "first":
        return False
    if node.op == "call_module":
        module = modules[node.target]  # type: ignore[index]
        if len(node.args) != 1 or node.kwargs:
            return False
        if isinstance(module, _ELEMENTWISE_MODULES):
            return True
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (module.training or module.running_mean is None):
            return False  # batch statistics: mixes samples
        ranks = _CHANNEL_MODULES.get(type(module), ())
        return unit_dim == 1 and rank in ranks and not getattr(module, "return_indices", False)
    if node.op == "call_function":
        return node.target in _ELEMENTWISE_FUNCTIONS or (unit_dim == 1 and _CHANNEL_FUNCTIONS.get(node.target) == rank)  # type: ignore[arg-type]
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
    bound: SuffixBound | None = None


#: Monotone activations whose slope lies in [0, 1] everywhere (besides ReLU, which is bounded tighter).
_MONOTONE_MODULES = (nn.ReLU6, nn.Hardtanh, nn.Sigmoid, nn.Tanh)
_MONOTONE_FUNCTIONS = {F.relu6, torch.sigmoid, torch.tanh, F.hardtanh}
_RELU_FUNCTIONS = {torch.relu, F.relu}
_IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.AlphaDropout)


@dataclass
class SuffixBound:
    """The suffix after a Linear cut as ``logits = final(post(act(pre(z))))`` on (B, F) values.

    ``pre``: eval batch norms / identities, an affine map ``y = scale * z + shift`` per feature
    (``scale`` (F,)); ``activation``: None, ``"relu"`` or ``"monotone"`` (slope in [0, 1]), run by
    the node ``act``; ``post``: identities; ``final``: the logits Linear (None: ``y`` are the logits,
    and then there is no activation).
    """

    pre: list[fx.Node]
    act: fx.Node | None
    activation: str | None
    post: list[fx.Node]
    final: nn.Linear | None
    scale: Tensor
    modules: dict[str, nn.Module]


def _activation_kind(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    if node.op == "call_module":
        module = modules[node.target]  # type: ignore[index]
        if type(module) is nn.ReLU:
            return "relu"
        if type(module) is nn.LeakyReLU and 0 <= module.negative_slope <= 1:
            return "monotone"
        return "monotone" if type(module) in _MONOTONE_MODULES else None
    if node.op == "call_function":
        if node.target in _RELU_FUNCTIONS:
            return "relu"
        return "monotone" if node.target in _MONOTONE_FUNCTIONS else None
    if node.op == "call_method":
        return {"relu": "relu", "sigmoid": "monotone", "tanh": "monotone"}.get(str(node.target))
    return None


def suffix_bound(suffix: fx.GraphModule, features: int) -> SuffixBound | None:
    """The :class:`SuffixBound` of a cut's ``suffix`` (one input, (B, ``features``)), or None when
    it is not such a chain (then every lesion of the layer is evaluated in full)."""
    modules = dict(suffix.named_modules())
    nodes = list(suffix.graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    output = next(n for n in nodes if n.op == "output")
    body = [n for n in nodes if n.op not in ("placeholder", "output")]
    if len(inputs) != 1 or not isinstance(output.args[0], fx.Node):
        return None
    previous = inputs[0]
    for node in [*body, output]:  # a chain: each node reads only the previous one, which nothing else reads
        if node.all_input_nodes != [previous] or node.args[0] is not previous or len(previous.users) != 1:
            return None
        previous = node
    scale = torch.ones(features)
    pre: list[fx.Node] = []
    post: list[fx.Node] = []
    act, activation, final = None, None, None
    for i, node in enumerate(body):
        module = modules.get(str(node.target)) if node.op == "call_module" else None
        if isinstance(module, _IDENTITY_MODULES) and not module.training and not node.kwargs and len(node.args) == 1:
            (post if act is not None else pre).append(node)
        elif (
            act is None and type(module) is nn.BatchNorm1d and not module.training
            and module.running_var is not None and not node.kwargs and len(node.args) == 1
        ):  # fmt: skip
            gain = module.weight.detach().float().cpu() if module.weight is not None else torch.ones(features)
            scale = scale * gain / torch.sqrt(module.running_var.detach().float().cpu() + module.eps)
            pre.append(node)
        elif act is None and _activation_kind(node, modules) is not None and len(node.args) == 1 and not node.kwargs:
            act, activation = node, _activation_kind(node, modules)
        elif isinstance(module, nn.Linear) and i == len(body) - 1 and len(node.args) == 1 and not node.kwargs:
            final = module
        else:
            return None
    if final is None and act is not None:
        return None
    return SuffixBound(pre, act, activation, post, final, scale, modules)


def make_cut(gm: fx.GraphModule, layer: str, unit_dim: int, incremental: bool = True) -> Cut:
    """Plan the evaluation of ``layer``'s lesions (after :func:`propagate_shapes`).

    `LesionError` saying why the layer does not qualify: it is not one node of the graph, its
    output is not batch-first, or the part after the cut is not a per-sample computation (a value
    that is not batch-first, batch statistics, an operation along the batch dim).
    """
    modules = dict(gm.named_modules())
    if isinstance(modules.get(layer), nn.MultiheadAttention):
        raise LesionError(f"layer {layer!r} is a MultiheadAttention: its heads are silenced inside the attention kernel")
    nodes = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == layer]
    if len(nodes) != 1:
        raise LesionError(f"layer {layer!r} is called {len(nodes)} times in the traced graph (expected once)")
    start = nodes[0]
    meta = _meta(start)
    if meta is None:
        raise LesionError(f"layer {layer!r} does not return a tensor")
    if start.meta.get("batch") != "first":
        raise LesionError(f"layer {layer!r}'s output {tuple(meta.shape)} does not have the batch as dim 0")
    dim = unit_dim % len(meta.shape)
    source = start
    chain = []
    while (user := _only_user(source)) is not None and _is_channelwise(user, modules, dim, len(meta.shape)):
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
    _check_per_sample(layer, suffix_nodes, modules)
    carried = [cut] + [
        n for n in gm.graph.nodes
        if n not in suffix_nodes and n is not cut and any(u in suffix_nodes for u in n.users)
    ]  # fmt: skip
    batch_dependent = _batch_dependent(gm)
    for node in carried:
        if node in batch_dependent and _meta(node) is not None and node.meta.get("batch") == "other":
            raise LesionError(f"{node.name!r}, used after layer {layer!r}, does not have the batch as dim 0 {tuple(_meta(node).shape)}")  # type: ignore[union-attr]
    tiled = [n.meta.get("batch") == "first" and n in batch_dependent for n in carried]
    shared = {n for n, t in zip(carried[1:], tiled[1:], strict=True) if not t}
    for node in suffix_nodes:  # an in-place module would write a value shared by every chunk
        if node.op == "call_module" and getattr(modules[node.target], "inplace", False) is True and node.args[0] in shared:
            raise LesionError(f"{node.format_node()} after layer {layer!r} writes in place a value computed before the cut")
    in_flight = [_per_sample_bytes(n) for n in suffix_nodes]
    row_bytes = sum(_per_sample_bytes(n) for n, t in zip(carried, tiled, strict=True) if t) + 2 * max(in_flight, default=0)
    suffix = _subgraph(gm, carried, suffix_nodes)
    cut_meta = _meta(cut)
    bound = None
    if isinstance(update, nn.Linear) and len(carried) == 1 and cut_meta is not None and len(cut_meta.shape) == 2:
        bound = suffix_bound(suffix, update.out_features)
    return Cut(
        layer, tuple(meta.shape[1:]), dim, chain, source.name, update, flatten, cut.name,
        [n.name for n in carried], tiled, suffix, max(row_bytes, 1), bound,
    )  # fmt: skip


def _check_per_sample(layer: str, nodes: list[fx.Node], modules: dict[str, nn.Module]) -> None:
    """`LesionError` unless each of ``nodes`` (after the cut) keeps the batch as dim 0 and acts on
    each sample separately, so that K lesions tiled along dim 0 do not see each other."""
    for node in nodes:
        meta = _meta(node)
        if meta is not None and node.meta.get("batch") != "first":
            raise LesionError(
                f"{node.format_node()} after layer {layer!r} gives shape {tuple(meta.shape)}, not batch-first "
                f"({node.meta.get('batch')}): it may combine samples"
            )
        reason = mixes_samples(node, modules)
        if reason is not None:
            raise LesionError(f"after layer {layer!r}: {reason}")


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


# --- in-place operations -------------------------------------------------------------------------

_INPLACE_OPERATORS = {
    operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
    operator.itruediv: operator.truediv, operator.ifloordiv: operator.floordiv, operator.imod: operator.mod,
    operator.ipow: operator.pow, operator.imatmul: operator.matmul, operator.iand: operator.and_,
    operator.ior: operator.or_, operator.ixor: operator.xor,
}  # fmt: skip
#: Operations whose result may share memory with their first argument (views, no-op conversions).
_ALIAS_METHODS = {
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "transpose", "permute", "squeeze",
    "unsqueeze", "expand", "expand_as", "narrow", "select", "t", "chunk", "split", "unbind", "contiguous",
    "detach", "movedim", "moveaxis", "swapaxes", "swapdims", "to", "type", "type_as", "float", "double",
    "half", "bfloat16", "cpu", "cuda", "as_strided", "diagonal", "unfold", "real", "imag", "T", "mT",
}  # fmt: skip
_ALIAS_FUNCTIONS = {
    operator.getitem, torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.transpose,
    torch.permute, torch.t, torch.narrow, torch.select, torch.chunk, torch.split, torch.unbind, torch.movedim,
    torch.swapaxes, torch.swapdims, torch.detach, torch.as_strided, torch.diagonal, torch.unflatten,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout, torch.dropout,
}  # fmt: skip
_ALIAS_MODULES = (nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.dropout._DropoutNd)


def functionalize(gm: fx.GraphModule) -> None:
    """Make every in-place operation explicit in the graph, in place.

    ``h.relu_()`` or ``out.add_(x)`` whose result is not re-bound leave the graph's data flow
    saying that later operations read ``h``; here they read the in-place node instead, and the
    node becomes out-of-place (``relu``, ``add``; ``inplace=True`` arguments become False; an
    in-place module is kept, its input no longer read after it). Dead-code elimination, cuts and
    cached values then all see the values the model really computes. `LesionError` for writes
    that cannot be made explicit: item assignment, a write to the input, a parameter or buffer,
    or to a value whose other views are read afterwards.
    """
    modules = dict(gm.named_modules())
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    for node in list(gm.graph.nodes):
        written = _written(node, modules)
        if written is None:
            continue
        _check_write(node, written, modules, order)
        _out_of_place(node)
        for user in list(written.users):
            if user is not node and order[user] > order[node]:
                user.replace_input_with(written, node)
    gm.graph.lint()
    gm.recompile()


def _written(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The value ``node`` writes in place, if any (`LesionError` for item assignment)."""
    first = node.args[0] if node.args else None
    if node.op == "call_function" and node.target is operator.setitem:
        raise LesionError(f"item assignment ({node.format_node()}) writes a value in place; the fast engine cannot cut around it")
    if not isinstance(first, fx.Node):
        return None
    if node.op == "call_method":
        name = str(node.target)
        return first if name.endswith("_") and not name.endswith("__") else None
    if node.op == "call_module":
        return first if getattr(modules[node.target], "inplace", False) is True else None  # type: ignore[index]
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        if node.target in _INPLACE_OPERATORS or (name.endswith("_") and not name.endswith("__")):
            return first
        bound = _bind(node)
        return first if bound is not None and bound.arguments.get("inplace") is True else None
    return None


def _bind(node: fx.Node) -> inspect.BoundArguments | None:
    try:
        return inspect.signature(node.target).bind(*node.args, **node.kwargs)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _is_alias(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_method":
        return node.target in _ALIAS_METHODS
    if node.op == "call_function":
        return node.target in _ALIAS_FUNCTIONS
    if node.op == "call_module":
        module = modules[node.target]  # type: ignore[index]
        return isinstance(module, _ALIAS_MODULES) or getattr(module, "inplace", False) is True
    return False


def _check_write(node: fx.Node, written: fx.Node, modules: dict[str, nn.Module], order: dict[fx.Node, int]) -> None:
    """`LesionError` unless ``written`` is the only value that ``node``'s write changes for later
    readers: no other view of its memory, taken before the write, is read after it."""
    base = written
    while _is_alias(base, modules) and base.args and isinstance(base.args[0], fx.Node):
        base = base.args[0]
    if base.op in ("placeholder", "get_attr"):
        what = "the model's input" if base.op == "placeholder" else f"the model's tensor {base.target!r}"
        raise LesionError(f"{node.format_node()} writes {what} in place; the fast engine cannot cut around it")
    views, stack = {base}, [base]
    while stack:
        for user in stack.pop().users:
            if user not in views and order[user] < order[node] and _is_alias(user, modules) and user.args and user.args[0] in views:
                views.add(user)
                stack.append(user)
    for view in views - {written, node}:
        if any(order[user] > order[node] for user in view.users if user is not node):
            raise LesionError(
                f"{node.format_node()} writes in place a value whose view {view.name!r} is read later; "
                "the fast engine cannot cut around it"
            )


def _out_of_place(node: fx.Node) -> None:
    """Turn an in-place call_function/call_method into its out-of-place twin (modules stay)."""
    if node.op == "call_method":
        name = str(node.target)[:-1]
        if not hasattr(Tensor, name):
            raise LesionError(f"{node.format_node()}: no out-of-place Tensor.{name} to make it explicit")
        node.target = name
    elif node.op == "call_function":
        if node.target in _INPLACE_OPERATORS:
            node.target = _INPLACE_OPERATORS[node.target]
            return
        name = getattr(node.target, "__name__", "")
        if name.endswith("_") and not name.endswith("__"):
            twin = getattr(torch, name[:-1], None) or getattr(F, name[:-1], None)
            if twin is None:
                raise LesionError(f"{node.format_node()}: no out-of-place torch.{name[:-1]} to make it explicit")
            node.target = twin
            return
        bound = _bind(node)
        if bound is not None:
            bound.arguments["inplace"] = False
            node.args, node.kwargs = tuple(bound.args), dict(bound.kwargs)


# --- operations that mix samples -----------------------------------------------------------------

#: Shape-preserving operations that may act along the batch dim: op name -> (position of the
#: dim argument after the input, its keyword, the default when absent; None: every dim).
_DIM_OPS: dict[str, tuple[int, str, int | None]] = {
    "softmax": (0, "dim", None), "log_softmax": (0, "dim", None), "softmin": (0, "dim", None),
    "cumsum": (0, "dim", None), "cumprod": (0, "dim", None), "cummax": (0, "dim", None),
    "cummin": (0, "dim", None), "logcumsumexp": (0, "dim", None), "flip": (0, "dims", None),
    "roll": (1, "dims", None), "sort": (0, "dim", -1), "argsort": (0, "dim", -1), "index_select": (0, "dim", None),
    "gather": (0, "dim", None), "scatter": (0, "dim", None), "scatter_add": (0, "dim", None),
    "index_add": (0, "dim", None), "index_copy": (0, "dim", None), "index_fill": (0, "dim", None),
    "normalize": (1, "dim", 1), "diff": (1, "dim", -1), "take_along_dim": (1, "dim", None), "renorm": (1, "dim", None),
    "scatter_reduce": (0, "dim", None), "index_reduce": (0, "dim", None), "cumulative_trapezoid": (0, "dim", -1),
}  # fmt: skip
#: Operations that index the flattened tensor, across samples.
_FLAT_INDEX_OPS = {"masked_scatter", "take", "put"}


def mixes_samples(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """Why ``node`` (whose input is batch-first) combines different samples, or None if it may not."""
    if node.op == "call_module":
        module = modules[node.target]  # type: ignore[index]
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (module.training or module.running_mean is None):
            return f"{node.target!r} normalises with batch statistics"
        meta = _meta(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        if any(getattr(m, "batch_first", None) is False for m in module.modules()):  # RNN, attention
            return f"{node.target!r} is sequence-first (batch_first=False): on a batch-first input it runs along the samples"
        if hasattr(module, "dim") and type(module).__module__.startswith("torch.nn"):  # Softmax(dim=0)...
            dim = module.dim
            if not isinstance(dim, int) or meta is None or dim % max(len(meta.shape), 1) == 0:
                return f"{node.target!r} ({type(module).__name__}, dim={dim}) may act along the batch dim"
        return None
    if node.op not in ("call_function", "call_method"):
        return None
    name = str(node.target) if node.op == "call_method" else getattr(node.target, "__name__", "")
    args = list(node.args[1:])
    if node.op == "call_function" and name == "batch_norm":  # F.batch_norm and torch.batch_norm: training is 6th
        bound = _bind(node)
        training = bound.arguments.get("training", False) if bound is not None else (args[4] if len(args) > 4 else None)
        return None if training is False else f"{node.format_node()} normalises with batch statistics"
    if name == "getitem" and args:
        index = args[0]
        first = index[0] if isinstance(index, tuple) and index else index
        if isinstance(first, fx.Node | list):
            return f"{node.format_node()} indexes the batch dim with a tensor or list"
        return None
    if name in _FLAT_INDEX_OPS:
        return f"{node.format_node()} indexes the flattened tensor, across samples"
    if name not in _DIM_OPS:
        return None
    position, keyword, default = _DIM_OPS[name]
    dims = node.kwargs.get(keyword, args[position] if len(args) > position else default)
    meta = _meta(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
    rank = len(meta.shape) if meta is not None else 0
    if dims is None or not rank:
        return f"{node.format_node()} may act along the batch dim"
    dims = dims if isinstance(dims, list | tuple) else [dims]
    if any(not isinstance(d, int) or d % rank == 0 for d in dims):
        return f"{node.format_node()} acts along the batch dim"
    return None
