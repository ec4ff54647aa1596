"""The fast exact engine: the intact network once per data batch, K lesions tiled per pass after the cut.

Lesions of one layer share a :class:`~lesion.engine._split_graph.Cut`. Per round of lesions
(as many as keep their (N, k) results modest), per data batch of B samples:

1. the intact network runs once and returns every value the cuts need;
2. per chunk of K lesions of a layer, the cut value is built for all K at once — ``(K, B, ...)``,
   lesion-major: the intact value with each lesion's units replaced (mask after the channel-wise
   ops), or the next Linear/Conv's intact output plus the thin contribution of the lesioned units'
   change — and the other carried values are tiled K times;
3. only the suffix after the cut runs, on K·B rows; top-k indices and near-tie counts stay on the
   device until the round ends.

Certified skipping (:mod:`lesion.engine._certify`): for a Linear update whose suffix is bounded
(``Cut.bound``), step 2-3 run only on the (lesion, sample) rows the per-sample certificates cannot
prove unchanged (:func:`_certified`); the others keep the intact top-k and count no near-tie. Such
chunks are sized for the certificate check (:func:`chunk_size`), and their uncertified rows are
gathered and evaluated ``memory // row_bytes`` at a time. The certificates of a layer are computed
once per data batch and kept across rounds (:class:`_Certificates`, within :data:`CERTIFY_BYTES`).

Each round runs the intact network only as far as its own cuts need; when the whole split's values
at those cuts fit in ``CACHE_BYTES`` they are kept, so the next rounds of the same layer skip it.
K comes from a memory budget for the tiled values in flight. An incremental update whose rows may
have lost precision to cancellation recomputes those rows in full (:func:`_guard_cancellation`).

Lesions spanning several layers go through the reference path (one forward per lesion), as do all
lesions of a model fx cannot trace, of a layer whose cut does not qualify
(:func:`~lesion.engine._split_graph.make_cut`) and of a layer on which anything in the fast path
raised; each such cause is one warning, or a `LesionError` with ``strict``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from lesion._errors import LesionError
from lesion._forward import standard_attention
from lesion._lesion import Lesion, check_lesions
from lesion.data import Split
from lesion.engine._certify import LayerBound, SampleBounds, certify, layer_bound, sample_bounds
from lesion.engine._outcome import Outcome, topk_and_ties
from lesion.engine._reference import (
    autocast_context,
    eval_mode,
    model_device,
    reference_outcomes,
)
from lesion.engine._split_graph import (
    PROBE_SIZES,
    Cut,
    UpdateLayer,
    apply_node,
    make_cut,
    propagate_shapes,
    trace,
    values_module,
)

#: Default byte budget for the tiled activations of one chunk on a CPU (tiles of a few M elements were fastest).
DEFAULT_MEMORY = 64 * 2**20
#: Bytes of top-k results kept on the device per round of lesions: a round commits together, so it
#: is kept small enough to show progress and lose little when a run is killed (~80 lesions at N = 10,000, k = 5).
ROUND_BYTES = 4 * 2**20
#: Bytes of intact values (at one round's cuts, for the whole split) kept for the next rounds.
CACHE_BYTES = 256 * 2**20
#: Incremental-update rows whose input magnitudes exceed this many times their result's are
#: recomputed in full (see :func:`_guard_cancellation`): their rounding error could exceed the
#: reference's by more than this factor.
CANCELLATION_RATIO = 16.0
#: Bytes of per-sample certificates (:mod:`lesion.engine._certify`) kept for the whole split, per layer.
CERTIFY_BYTES = 512 * 2**20
#: Bytes budgeted per (lesion, sample, class, input column) of the certificate check: about 4 times
#: its gathered bounds and products, so that a chunk's working set stays in cache (fc1 pairs of the 2020
#: CNN: 22 % less CPU time in all than a budget of 16, which fills the memory budget with the working set).
CERTIFY_ROW_BYTES = 64
_CONV_FN = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}


def fast_outcomes(
    model: nn.Module,
    split: Split,
    lesions: Sequence[Lesion],
    *,
    k: int,
    batch_size: int = 256,
    means: Mapping[str, Tensor] | None = None,
    memory: int | None = None,
    strict: bool = False,
    autocast: str | None = None,
    channels_last: bool = False,
    compile: bool = False,
    on_batch: Callable[[float], None] | None = None,
) -> Iterator[Outcome]:
    """Yield one :class:`Outcome` per lesion, grouped by layer (same predictions as the reference).

    Parameters
    ----------
    memory : int, optional
        Bytes for the tiled activations of one chunk; K = memory // (B * bytes per row after the cut).
        Default: :func:`default_memory`.
    strict : bool, default=False
        Raise `LesionError` where the model (or a layer) cannot be traced, instead of warning and
        using the reference path.
    autocast : {"bf16", "fp16"}, optional
        Evaluate under ``torch.autocast`` in that precision (predictions may then differ from
        float32's; :func:`lesion.sweep` counts by how much).
    channels_last : bool, default=False
        Feed 4-D inputs in channels-last memory format.
    compile : bool, default=False
        ``torch.compile`` the per-lesion part of the network.
    on_batch : callable, optional
        Called after each data batch of a round with the lesions' worth of work it did (progress).
    """
    lesions = list(lesions)
    known = {name: layer.unit_dim for name, layer in check_lesions(model, lesions).items()}
    for lesion in lesions:
        if lesion.method == "mean":
            missing = [n for n in lesion.layers if means is None or n not in means]
            if missing:
                raise LesionError(f"lesion {lesion.key!r} uses method 'mean' but no means were given for {missing}")
    if memory is not None and memory < 1:
        raise LesionError(f"memory must be a positive number of bytes, got {memory}")
    try:
        gm = trace(model)
    except LesionError as error:
        if strict:
            raise
        warnings.warn(f"{error}; using the reference path (one forward per lesion)", stacklevel=2)
        return reference_outcomes(model, split, lesions, k=k, batch_size=batch_size, means=means, autocast=autocast)
    options = _Options(memory or default_memory(model_device(model)), autocast, channels_last, compile, on_batch)
    return _run(model, gm, split, lesions, known, k, batch_size, means, strict, options)


def default_memory(device: torch.device) -> int:
    """The automatic byte budget: :data:`DEFAULT_MEMORY`, or on CUDA an eighth of the free memory
    (the layers after the cut need several times the tiled values for their own activations)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(DEFAULT_MEMORY, free // 8)
    return DEFAULT_MEMORY


@dataclass(frozen=True)
class _Options:
    memory: int
    autocast: str | None
    channels_last: bool
    compile: bool
    on_batch: Callable[[float], None] | None = None


@dataclass
class _Update:
    """Update mode: the next layer's response to the lesioned units alone."""

    layer: UpdateLayer
    index: Tensor  # (K*s,) lesioned units, padded per lesion to s
    valid: Tensor  # (K, s) 1.0 for a lesioned unit, 0.0 for padding
    weight: Tensor  # thin weights of ``layer`` for ``index``
    gain: Tensor  # (K,) per lesion, max over the layer's outputs of the sum of its thin weights' |w|


@dataclass
class _Chunk:
    """K lesions of one layer evaluated in one pass; ``rows``: their slots in the round's results."""

    rows: slice
    cut: Cut
    fill: Tensor  # the replacement after the chain, shape of the cut's source per sample
    lesion: Tensor | _Update  # mask mode: (K, 1, ...) bool mask, broadcast over the source


def _run(
    model: nn.Module,
    gm: torch.fx.GraphModule,
    split: Split,
    lesions: list[Lesion],
    unit_dims: dict[str, int],
    k: int,
    batch_size: int,
    means: Mapping[str, Tensor] | None,
    strict: bool,
    options: _Options,
) -> Iterator[Outcome]:
    device = model_device(model)
    slow = [lesion for lesion in lesions if len(lesion.units) != 1]
    by_layer: dict[str, list[Lesion]] = {}
    for lesion in lesions:
        if len(lesion.units) == 1:
            by_layer.setdefault(lesion.layers[0], []).append(lesion)
    cuts = _plan_cuts(model, gm, split, by_layer, unit_dims, means, strict, options, device)
    slow += [lesion for layer in by_layer if layer not in cuts for lesion in by_layer[layer]]
    fast = [lesion for layer in cuts for lesion in by_layer[layer]]
    n = len(split)
    dtype = _index_dtype(split.n_classes)
    per_round = max(1, ROUND_BYTES // max(1, n * k * torch.empty((), dtype=dtype).element_size()))
    modules = dict(gm.named_modules())
    intact = IntactValues(gm, split, batch_size, device, options.autocast, options.channels_last)
    certificates = _Certificates(_layer_bounds(cuts, n, options, device), k)
    failed: set[str] = set()
    for start in range(0, len(fast), per_round):
        batch = [lesion for lesion in fast[start : start + per_round] if lesion.layers[0] not in failed]
        if not batch:
            continue
        certificates.keep_only({lesion.layers[0] for lesion in batch})
        with eval_mode(model), standard_attention(model), torch.inference_mode():
            chunks, broken = _chunks(batch, cuts, modules, means, min(batch_size, n), options.memory, device)
            tops = torch.empty((len(batch), n, k), dtype=dtype, device=device)
            ties = torch.zeros(len(batch), dtype=torch.long, device=device)
            if chunks:
                broken.update(_evaluate_round(intact, certificates, chunks, k, tops, ties, options))
            for layer, error in broken.items():
                _fall_back(layer, error, strict)
                failed.add(layer)
            tops_host, ties_host = tops.cpu().numpy(), ties.cpu().numpy()
        for i, lesion in enumerate(batch):
            if lesion.layers[0] in failed:
                slow.append(lesion)
            else:
                yield Outcome(lesion, tops_host[i].astype(np.int64), int(ties_host[i]))
    if slow:
        yield from reference_outcomes(model, split, slow, k=k, batch_size=batch_size, means=means, autocast=options.autocast)


def _plan_cuts(
    model: nn.Module,
    gm: torch.fx.GraphModule,
    split: Split,
    by_layer: dict[str, list[Lesion]],
    unit_dims: dict[str, int],
    means: Mapping[str, Tensor] | None,
    strict: bool,
    options: _Options,
    device: torch.device,
) -> dict[str, Cut]:
    """The cut of every layer that qualifies for the fast path (others: warned, or `LesionError` if strict)."""
    cuts: dict[str, Cut] = {}
    if not by_layer:
        return cuts
    example = next(split.batches(max(PROBE_SIZES)))[0].to(device)
    with eval_mode(model), standard_attention(model), torch.inference_mode():
        try:
            propagate_shapes(gm, example)
        except Exception as error:
            _fall_back(None, error, strict)
            return cuts
        for layer, group in by_layer.items():
            try:
                cut = make_cut(gm, layer, unit_dims.get(layer, 1))
            except Exception as error:
                _fall_back(layer, error, strict)
                continue
            if any(lesion.method == "mean" for lesion in group) and tuple(means[layer].shape) != cut.shape:  # type: ignore[index]
                raise LesionError(f"means[{layer!r}] has shape {tuple(means[layer].shape)}; the layer's output per sample is {cut.shape}")  # type: ignore[index]
            if options.compile:
                cut.suffix = torch.compile(cut.suffix, dynamic=True)  # type: ignore[assignment]
            cuts[layer] = cut
    return cuts


def _layer_bounds(cuts: dict[str, Cut], n: int, options: _Options, device: torch.device) -> dict[str, LayerBound]:
    """The certificate constants of every cut that can skip certified samples: a bounded suffix,
    float32 or float64 weights without autocast (half precision rounds beyond the certificates'
    margin) and certificates for the whole split within :data:`CERTIFY_BYTES`. The other cuts lose
    their ``bound`` (so their chunks are sized for the full evaluation of every row)."""
    bounds: dict[str, LayerBound] = {}
    for layer, cut in cuts.items():
        precise = options.autocast is None and cut.update is not None and cut.update.weight.dtype in (torch.float32, torch.float64)
        bound = layer_bound(cut, device) if precise else None
        if bound is not None and 2 * n * len(bound.logits) * bound.weight.shape[1] * 4 <= CERTIFY_BYTES:
            bounds[layer] = bound
        else:
            cut.bound = None
    return bounds


class _Certificates:
    """Each certified layer's :class:`LayerBound` and its per-batch :class:`SampleBounds`, kept
    across rounds (keyed by layer, lesion width and batch offset) until the layer's lesions are done."""

    def __init__(self, layers: dict[str, LayerBound], k: int) -> None:
        self.layers, self.k = layers, k
        self.kept: dict[tuple[str, int, int], SampleBounds] = {}
        self.tables: dict[tuple[str, int], Tensor] = {}

    def keep_only(self, layers: set[str]) -> None:
        self.kept = {key: value for key, value in self.kept.items() if key[0] in layers}
        self.tables = {key: value for key, value in self.tables.items() if key[0] in layers}

    def table(self, cut: Cut, offset: int, values: dict[str, Tensor]) -> Tensor:
        """(in + B, out): the update layer's weight transposed, then the batch's intact output, so that
        one weighted row sum gives a lesioned row: intact output plus its lesioned columns' response."""
        key = (cut.layer, offset)
        if key not in self.tables:
            weight: Tensor = cut.update.weight  # type: ignore[union-attr]
            self.tables[key] = torch.cat([weight.t(), values[cut.cut]]).contiguous()
        return self.tables[key]

    def get(self, chunk: _Chunk, offset: int, values: dict[str, Tensor]) -> SampleBounds | None:
        """The certificates of ``chunk``'s lesions on the batch at ``offset`` (None: not certified)."""
        layer = self.layers.get(chunk.cut.layer)
        if layer is None or not isinstance(chunk.lesion, _Update):
            return None
        key = (chunk.cut.layer, chunk.lesion.valid.shape[1], offset)
        if key not in self.kept:
            cut = chunk.cut
            self.kept[key] = sample_bounds(layer, values[cut.cut], values[cut.source], self.k, key[1])
        return self.kept[key]


def _fall_back(layer: str | None, error: BaseException, strict: bool) -> None:
    """Warn that ``layer``'s lesions (None: all) take the reference path because of ``error``;
    `LesionError` instead when ``strict``."""
    cause = str(error) if isinstance(error, LesionError) else f"{type(error).__name__}: {error}"
    what = f"layer {layer!r}" if layer is not None else "the model"
    if strict:
        raise LesionError(f"the fast engine cannot evaluate {what}: {cause}") from error
    whose = "its" if layer is not None else "all"
    warnings.warn(f"fast engine, {what}: {cause}; {whose} lesions use the reference path (one forward per lesion)", stacklevel=4)


def _index_dtype(n_classes: int) -> torch.dtype:
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if n_classes <= torch.iinfo(dtype).max + 1:
            return dtype
    return torch.int64


def _chunks(
    lesions: list[Lesion],
    cuts: dict[str, Cut],
    modules: dict[str, nn.Module],
    means: Mapping[str, Tensor] | None,
    batch: int,
    memory: int,
    device: torch.device,
) -> tuple[list[_Chunk], dict[str, Exception]]:
    """Split a round's lesions (grouped by layer) into chunks of K = memory // (batch * row bytes);
    also returns the exception of each layer whose chunks could not be built."""
    chunks: list[_Chunk] = []
    failed: dict[str, Exception] = {}
    start = 0
    while start < len(lesions):
        layer, method = lesions[start].layers[0], lesions[start].method
        cut = cuts[layer]
        size = chunk_size(cut, batch, memory)
        stop = start
        while stop < len(lesions) and stop - start < size and lesions[stop].units[0][0] == layer and lesions[stop].method == method:
            stop += 1
        if layer not in failed:
            try:
                fill = fill_value(cut, modules, method, means, device)
                chunks.append(_chunk(slice(start, stop), cut, fill, [lesion.units[0][1] for lesion in lesions[start:stop]], device))
            except Exception as error:  # any failure of the fast path: this layer takes the reference path
                failed[layer] = error
        start = stop
    return [chunk for chunk in chunks if chunk.cut.layer not in failed], failed


def chunk_size(cut: Cut, batch: int, memory: int) -> int:
    """K: how many lesions' tiled values (``batch * cut.row_bytes`` bytes each) fit in ``memory``;
    for a certified cut, whose rows are evaluated only where uncertified (in slices within
    ``memory``), how many lesions' certificate work (:data:`CERTIFY_ROW_BYTES` per class and
    input column) fits."""
    if cut.bound is not None and isinstance(cut.update, nn.Linear):
        classes = cut.bound.final.out_features if cut.bound.final is not None else cut.update.out_features
        columns = cut.update.in_features // cut.shape[cut.unit_dim - 1] if cut.flatten else 1
        return max(1, memory // (batch * CERTIFY_ROW_BYTES * classes * columns))
    return max(1, memory // (batch * cut.row_bytes))


def fill_value(cut: Cut, modules: dict[str, nn.Module], method: str, means: Mapping[str, Tensor] | None, device: torch.device) -> Tensor:
    """The lesioned units' replacement (0 or the mean map) carried through the channel-wise chain, per
    sample: shape of the cut value without the batch dimension."""
    if method == "zero":
        base = torch.zeros(cut.shape, device=device)
    else:
        if means is None or cut.layer not in means:
            raise LesionError(f"method 'mean': no means were given for layer {cut.layer!r}")
        if tuple(means[cut.layer].shape) != cut.shape:
            raise LesionError(f"means[{cut.layer!r}] has shape {tuple(means[cut.layer].shape)}; the layer's output per sample is {cut.shape}")
        base = means[cut.layer].to(device=device, dtype=torch.float32).clone()
    x = base.unsqueeze(0)
    for node in cut.chain:
        x = apply_node(node, modules, x)
    return x[0]


def _chunk(rows: slice, cut: Cut, fill: Tensor, units: list[tuple[int, ...]], device: torch.device) -> _Chunk:
    width = max(len(u) for u in units)
    index = torch.tensor([list(u) + [u[0]] * (width - len(u)) for u in units], device=device)  # (K, s)
    if cut.update is None:
        n_units = fill.shape[cut.unit_dim - 1]
        mask = torch.zeros(len(units), n_units, dtype=torch.bool, device=device)
        mask.scatter_(1, index, True)
        shape = [len(units), 1] + [n_units if d == cut.unit_dim else 1 for d in range(1, fill.dim() + 1)]
        return _Chunk(rows, cut, fill, mask.view(shape))
    valid = torch.tensor([[1.0] * len(u) + [0.0] * (width - len(u)) for u in units], device=device)
    weight: Tensor = cut.update.weight
    if isinstance(cut.update, nn.Linear):  # (out, C*P) -> (K, s*P, out)
        out = weight.shape[0]
        w = weight.view(out, fill.shape[0], -1)[:, index] * valid[None, :, :, None]
        thin = w.permute(1, 2, 3, 0).reshape(len(units), -1, out)
        gain = thin.abs().sum(1).amax(1)
    else:  # (out, C, *kernel) -> (K*out, s, *kernel)
        w = weight[:, index] * valid.view(1, *valid.shape, *[1] * (weight.dim() - 2))
        thin = w.transpose(0, 1).reshape(-1, width, *weight.shape[2:])
        gain = thin.abs().flatten(1).sum(1).view(len(units), -1).amax(1)
    return _Chunk(rows, cut, fill, _Update(cut.update, index.flatten(), valid, thin.contiguous(), gain.float()))


def _lesioned(chunk: _Chunk, values: dict[str, Tensor], peaks: dict[str, Tensor]) -> Tensor:
    """The cut value for the chunk's K lesions, shape (K*B, ...); ``peaks``: max |value| per sample
    of the batch's intact values, filled on first use."""
    source = values[chunk.cut.source]
    if isinstance(chunk.lesion, _Update):  # intact next layer + its response to the lesioned units' change
        k = chunk.rows.stop - chunk.rows.start
        intact = values[chunk.cut.cut]
        change = _change(chunk.lesion, chunk.fill, source)
        b = len(source)
        delta, peak = _thin(chunk.lesion, change, k), _peak(change.reshape(b * k, -1)).view(b, k).t()
        out = intact.unsqueeze(0) + delta
        lesions = torch.arange(k, device=source.device).repeat_interleave(b)
        samples = torch.arange(b, device=source.device).repeat(k)
        guard = _Guard(chunk, source, _intact_peak(peaks, chunk.cut.cut, intact))
        guard(lesions, samples, peak.reshape(-1), lambda rows: delta[lesions[rows], samples[rows]], out, (lesions, samples))
    else:  # replace the units after the chain
        out = torch.where(chunk.lesion, chunk.fill.to(source.dtype), source.unsqueeze(0))
    return out.reshape(-1, *out.shape[2:])


def _intact_peak(peaks: dict[str, Tensor], name: str, intact: Tensor) -> Tensor:
    if name not in peaks:
        peaks[name] = _peak(intact)
    return peaks[name]


def _peak(x: Tensor) -> Tensor:
    """max |x| over all dims but the first: (R, ...) -> (R,)."""
    low, high = torch.aminmax(x.reshape(len(x), -1), dim=1)
    return torch.maximum(-low, high)


@dataclass
class _Guard:
    """Recomputes in full the rows whose incremental update may have lost precision to cancellation.

    ``out = intact + delta`` carries a rounding error of about eps * (|intact| + |delta|) per
    element, where a full recomputation of the layer carries about eps * |out|. A row (lesion,
    sample) is recomputed by the layer itself, from the lesioned input, when ``max |intact| +
    max |delta|`` exceeds :data:`CANCELLATION_RATIO` times ``max |out|`` (a lesioned unit whose
    contribution dwarfs the rest). Cheaply first: ``max |delta| <= gain * peak`` (thin weights'
    gain times the largest change of a lesioned unit) and ``max |out| >= max |intact| - max |delta|``
    clear almost every row without reading ``delta`` or ``out``.
    """

    chunk: _Chunk
    source: Tensor  # (B, C, ...) the update layer's intact input
    scale: Tensor  # (B,) max |intact| of the update layer's output per sample

    def __call__(
        self, lesions: Tensor, samples: Tensor, peak: Tensor, delta: Callable[[Tensor], Tensor], out: Tensor, at: tuple[Tensor, ...]
    ) -> None:
        """Rows R: ``lesions`` (R,) in the chunk, ``samples`` (R,) in the batch, ``peak`` (R,) the largest
        |change| of a lesioned unit; ``delta(rows)`` the thin response of rows ``rows`` (indices into R);
        ``out[at]`` the rows' outputs, rewritten where recomputed."""
        update = self.chunk.lesion
        if not isinstance(update, _Update):
            return
        ratio = CANCELLATION_RATIO
        suspect = update.gain[lesions] * peak * (ratio + 1) > self.scale[samples] * (ratio - 1)
        if not bool(suspect.any()):
            return
        rows = suspect.nonzero()[:, 0]
        where = tuple(index[rows] for index in at)
        rows = rows[_peak(delta(rows)) + self.scale[samples[rows]] > ratio * _peak(out[where])]
        if not len(rows):
            return
        units = update.index.view(len(update.gain), -1)[lesions[rows]]  # (R, s)
        inputs = self.source.index_select(0, samples[rows]).clone()  # (R, C, ...)
        shape = (*units.shape, *inputs.shape[2:])
        fill = self.chunk.fill[units].to(inputs.dtype)
        inputs.scatter_(1, units.view(*units.shape, *[1] * (inputs.dim() - 2)).expand(shape), fill)
        full = update.layer(inputs.flatten(1) if self.chunk.cut.flatten else inputs)
        out[tuple(index[rows] for index in at)] = full.to(out.dtype)


def _change(update: _Update, fill: Tensor, source: Tensor) -> Tensor:
    """The K lesions' change of their units, ``fill - source``: (B, K*s, ...)."""
    return fill.index_select(0, update.index) - source.index_select(1, update.index)


def _thin(update: _Update, change: Tensor, k: int) -> Tensor:
    """The update layer's response (K, B, ...) to the K lesions' ``change`` (B, K*s, ...) alone."""
    weight, layer = update.weight, update.layer
    b = len(change)
    if isinstance(layer, nn.Linear):  # (K, B, s*P) @ (K, s*P, out)
        return torch.bmm(change.reshape(b, k, -1).transpose(0, 1), weight)
    conv = _CONV_FN[weight.dim()]
    delta = conv(change, weight, None, layer.stride, layer.padding, layer.dilation, k)
    return delta.view(b, k, -1, *delta.shape[2:]).transpose(0, 1)


def _certified(
    chunk: _Chunk, certificates: _Certificates, bounds: SampleBounds, values: dict[str, Tensor], peaks: dict[str, Tensor],
    k: int, memory: int, tops: Tensor, ties: Tensor, offset: int,
) -> None:
    """Fill the chunk's rows of ``tops``/``ties`` for one data batch: the intact top-k where the
    lesion is certified harmless (:func:`~lesion.engine._certify.certify`), the suffix on the
    other (lesion, sample) rows, ``memory // cut.row_bytes`` rows at a time. A row's update-layer
    output is one weighted sum of rows of :meth:`_Certificates.table` (``embedding_bag``): its
    intact output plus each lesioned column's change times that column's weights. ``bounds``: the
    chunk's certificates on this batch (:meth:`_Certificates.get`)."""
    update, cut = cast(_Update, chunk.lesion), chunk.cut  # certificates exist for updates only
    source, intact = values[cut.source], values[cut.cut]
    b, n, width = len(source), len(update.gain), update.valid.shape[1]
    change = _change(update, chunk.fill, source).reshape(b, n, width, -1)
    change = (change * update.valid[None, :, :, None]).reshape(b, n, -1)  # (B, K, c), padding zeroed
    per_unit = change.shape[2] // width
    columns = (update.index[:, None] * per_unit + torch.arange(per_unit, device=source.device)).view(n, -1)  # (K, c)
    certified = certify(certificates.layers[cut.layer], bounds, change.permute(1, 2, 0).contiguous(), columns.view(-1))
    lesions, samples = (~certified).nonzero(as_tuple=True)
    tops[chunk.rows, offset : offset + b] = bounds.top.to(tops.dtype)
    if not len(lesions):
        return
    table = certificates.table(cut, offset, values)
    guard = _Guard(chunk, source, _intact_peak(peaks, cut.cut, intact))
    n_inputs = len(table) - b
    step = max(1, memory // cut.row_bytes)
    for start in range(0, len(lesions), step):
        rows_l, rows_s = lesions[start : start + step], samples[start : start + step]
        weights = change[rows_s, rows_l]  # (R, c)
        bags = torch.cat([columns[rows_l], (n_inputs + rows_s)[:, None]], 1)  # (R, c + 1) rows of the table
        out = F.embedding_bag(bags, table, per_sample_weights=torch.cat([weights, weights.new_ones(len(weights), 1)], 1), mode="sum")

        def delta(rows: Tensor, bags: Tensor = bags, weights: Tensor = weights) -> Tensor:
            return F.embedding_bag(bags[rows, :-1], table, per_sample_weights=weights[rows], mode="sum")

        guard(rows_l, rows_s, _peak(weights), delta, out, (torch.arange(len(out), device=out.device),))
        top, tie = topk_and_ties(cut.suffix(out), k)
        tops[chunk.rows.start + rows_l, offset + rows_s] = top.to(tops.dtype)
        ties.index_add_(0, chunk.rows.start + rows_l, tie.long())


class IntactValues:
    """The intact network's values at a round's cuts, batch by batch over the split.

    ``batches(names)`` yields (offset, {name: value (B, ...)}); the values of the last ``names`` are
    kept for the next call when the whole split's fit in :data:`CACHE_BYTES`.
    """

    def __init__(self, gm: fx.GraphModule, split: Split, batch_size: int, device: torch.device, autocast: str | None,
                 channels_last: bool) -> None:
        self.gm, self.split, self.batch_size, self.device = gm, split, batch_size, device
        self.autocast, self.channels_last = autocast, channels_last
        self.modules: dict[tuple[str, ...], fx.GraphModule] = {}
        self.names: tuple[str, ...] = ()
        self.kept: list[tuple[int, dict[str, Tensor]]] | None = None

    def batches(self, names: tuple[str, ...]) -> Iterator[tuple[int, dict[str, Tensor]]]:
        if names == self.names and self.kept is not None:
            yield from self.kept
            return
        if names not in self.modules:
            self.modules[names] = values_module(self.gm, list(names))
        precision = autocast_context(self.autocast, self.device)
        kept: list[tuple[int, dict[str, Tensor]]] | None = []
        offset, size = 0, 0
        for x, _ in self.split.batches(self.batch_size):
            x = x.to(self.device)
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with precision:
                current = dict(zip(names, self.modules[names](x), strict=True))
            size += sum(v.nbytes for v in current.values() if isinstance(v, Tensor))
            if kept is not None and size <= CACHE_BYTES:
                kept.append((offset, current))
            else:
                kept = None
            yield offset, current
            offset += len(x)
        self.names, self.kept = names, kept


def _evaluate_round(
    intact: IntactValues, certificates: _Certificates, chunks: list[_Chunk], k: int, tops: Tensor, ties: Tensor, options: _Options
) -> dict[str, Exception]:
    """Fill ``tops`` (R, N, k) and ``ties`` (R,) for the round's lesions, data batches outside.

    Returns the exception that stopped each layer whose chunks failed (their rows are then unset).
    """
    precision = autocast_context(options.autocast, intact.device)
    names = tuple(sorted({name for chunk in chunks for name in [*chunk.cut.carried, chunk.cut.source]}))
    failed: dict[str, Exception] = {}
    try:
        for offset, current in intact.batches(names):
            b = len(current[chunks[0].cut.source])
            peaks: dict[str, Tensor] = {}
            for chunk in chunks:
                if chunk.cut.layer in failed:
                    continue
                try:
                    n = chunk.rows.stop - chunk.rows.start
                    bounds = certificates.get(chunk, offset, current)
                    if bounds is not None:
                        _certified(chunk, certificates, bounds, current, peaks, k, options.memory, tops, ties, offset)
                        continue
                    with precision:
                        inputs = [_lesioned(chunk, current, peaks)] + [
                            _tile(current[name], n) if tiled else current[name]
                            for name, tiled in zip(chunk.cut.carried[1:], chunk.cut.tiled[1:], strict=True)
                        ]
                        logits = chunk.cut.suffix(*inputs)
                    top, tie = topk_and_ties(logits, k)
                    tops[chunk.rows, offset : offset + b] = top.view(n, b, k).to(tops.dtype)
                    ties[chunk.rows] += tie.view(n, b).sum(1)
                except Exception as error:  # any failure of the fast path: this layer takes the reference path
                    failed[chunk.cut.layer] = error
            if options.on_batch is not None:
                options.on_batch(len(tops) * b / tops.shape[1])
    except Exception as error:  # the intact values themselves: every layer of the round
        for chunk in chunks:
            failed.setdefault(chunk.cut.layer, error)
    return failed


def _tile(value: Tensor, n: int) -> Tensor:
    """``value`` (B, ...) repeated ``n`` times, lesion-major: (n*B, ...), always a fresh copy."""
    return value.repeat(n, *[1] * (value.dim() - 1))
