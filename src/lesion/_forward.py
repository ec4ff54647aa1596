"""How lesion runs a model's forward pass: eval mode, one attention path, and taps on unit outputs.

A layer's *unit output* is where its units are read (means, captures, estimates) and replaced
(lesions). For most modules it is the module's output. For an ``nn.MultiheadAttention`` it is the
output of each head before the output projection, batch first and split by head:
(B, L, num_heads, head_dim), so its units (heads) lie along dim 2. The attention is then computed
with ``torch.nn.functional.multi_head_attention_forward`` and an identity output projection (exact:
``x @ I`` adds only zeros to ``x``), the tap sees or replaces the heads, and the module's own
``out_proj`` is applied.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lesion._errors import LesionError

#: ``callback(layer name, unit output)``; a returned tensor replaces the unit output, None keeps it.
Tap = Callable[[str, Tensor], "Tensor | None"]

#: The unit dimension of an attention module's unit output (B, L, num_heads, head_dim).
HEAD_DIM = 2


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` for the block, restoring each submodule's training flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def has_attention(model: nn.Module) -> bool:
    return any(isinstance(m, nn.MultiheadAttention) for m in model.modules())


@contextmanager
def standard_attention(model: nn.Module) -> Iterator[None]:
    """PyTorch's attention fast path off for the block, if ``model`` holds an ``nn.MultiheadAttention``.

    In eval mode without gradients PyTorch may run an ``nn.TransformerEncoderLayer`` as one fused
    kernel (its submodules never run, so nothing in them can be lesioned) and an
    ``nn.TransformerEncoder`` on nested tensors (padded positions come out as 0, where the standard
    path, the one training uses, computes them). Intact and lesioned networks, unit means and
    probes all run on the standard path instead, so they are comparable. The switch
    (``torch.backends.mha``) is process-wide; it is restored on exit.
    """
    if not has_attention(model):
        yield
        return
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


#: The taps active on each attention module, in registration order (applied in that order).
_HEAD_TAPS: dict[nn.MultiheadAttention, list[tuple[str, Tap]]] = {}


@contextmanager
def tapped(model: nn.Module, names: Sequence[str], tap: Tap) -> Iterator[None]:
    """For the block, ``tap(name, unit output)`` runs each time module ``name`` of ``model`` runs.

    Ordinary modules get a forward hook. An attention module's ``forward`` is, for the block,
    shadowed by an instance attribute that computes its heads (see the module docstring); nothing
    else of the module is written, and several taps on one module chain in registration order, as
    hooks do. Also enters :func:`standard_attention`.
    """
    modules = dict(model.named_modules())
    handles = []
    heads: list[tuple[nn.MultiheadAttention, tuple[str, Tap]]] = []
    with standard_attention(model):
        try:
            for name in names:
                module = modules[name]
                if isinstance(module, nn.MultiheadAttention):
                    entry = (name, tap)
                    _tap_heads(module, entry)
                    heads.append((module, entry))
                else:
                    handles.append(module.register_forward_hook(functools.partial(_hook, name, tap)))
            yield
        finally:
            for handle in handles:
                handle.remove()
            for module, entry in heads:
                _untap_heads(module, entry)


def _hook(name: str, tap: Tap, module: nn.Module, inputs: Any, output: Any) -> Any:
    return tap(name, output)


def _tap_heads(module: nn.MultiheadAttention, entry: tuple[str, Tap]) -> None:
    taps = _HEAD_TAPS.setdefault(module, [])
    if not taps:
        if "forward" in module.__dict__:
            del _HEAD_TAPS[module]
            raise LesionError(
                f"attention layer {entry[0]!r}: its forward is already replaced by an instance attribute, "
                "so lesion cannot reach its heads; remove that attribute first"
            )
        module.forward = functools.partial(attention_with_heads, module, taps)  # type: ignore[method-assign]
    taps.append(entry)


def _untap_heads(module: nn.MultiheadAttention, entry: tuple[str, Tap]) -> None:
    taps = _HEAD_TAPS[module]
    taps.remove(entry)
    if not taps:
        del _HEAD_TAPS[module]
        del module.forward


def attention_with_heads(
    module: nn.MultiheadAttention,
    taps: Sequence[tuple[str, Tap]],
    query: Tensor,
    key: Tensor,
    value: Tensor,
    key_padding_mask: Tensor | None = None,
    need_weights: bool = True,
    attn_mask: Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """``module(query, key, value, ...)`` with ``taps`` applied to its heads (B, L, num_heads, head_dim).

    Same arguments and results as ``nn.MultiheadAttention.forward`` (the attention weights are
    those of the intact heads).
    """
    batched = query.dim() == 3
    if module.batch_first and batched:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    size, n_heads = module.embed_dim, module.num_heads
    identity = torch.eye(size, dtype=module.out_proj.weight.dtype, device=module.out_proj.weight.device)
    separate: dict[str, Any] = {}
    if not module._qkv_same_embed_dim:
        separate = {
            "use_separate_proj_weight": True,
            "q_proj_weight": module.q_proj_weight,
            "k_proj_weight": module.k_proj_weight,
            "v_proj_weight": module.v_proj_weight,
        }
    concat, weights = F.multi_head_attention_forward(
        query, key, value, size, n_heads,
        module.in_proj_weight, module.in_proj_bias, module.bias_k, module.bias_v, module.add_zero_attn,
        module.dropout, identity, None,
        training=module.training, key_padding_mask=key_padding_mask, need_weights=need_weights,
        attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal, **separate,
    )  # (L, B, E), or (L, E) unbatched
    heads = (concat.transpose(0, 1) if batched else concat.unsqueeze(0)).unflatten(-1, (n_heads, size // n_heads))
    for name, tap in taps:
        replaced = tap(name, heads)
        if replaced is not None:
            heads = replaced
    out = F.linear(heads.flatten(-2), module.out_proj.weight, module.out_proj.bias)  # (B, L, E)
    if not batched:
        return out.squeeze(0), weights
    return (out if module.batch_first else out.transpose(0, 1)), weights
