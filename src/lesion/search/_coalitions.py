"""Many coalitions of units of one layer per pass: per-class top-1 counts and loss sums, nothing else.

When every player is a set of units of one layer (method zero or mean), a coalition's lesion only
replaces some units of that layer's output. The engine's cut (:func:`~lesion.engine._split_graph.make_cut`
without the incremental update) splits the traced network after the layer's channel-wise chain
(activation, pooling...): per data batch the intact values at the cut are computed once (and kept
for the whole split when they fit in :data:`~lesion.engine._fast.CACHE_BYTES`), and per chunk of K
coalitions the cut value is the intact one with each coalition's units replaced by the chain's image
of the replacement, ``(K·B, ...)`` rows through the rest of the network. Each row is the very
computation of one forward with those units lesioned from the cut on (no incremental update, so no
rounding by cancellation to guard), only batched; top-1 is the engine's
(:func:`~lesion.engine.topk_and_ties`) and the loss comes from the same logits. Only the counts per
class and the loss sums leave the device.

Chains of cumulative lesions (:meth:`LayerCoalitions.evaluate_chains`, and with one order per sample
:meth:`LayerCoalitions.sample_chains`) run every prefix's rows of a data batch together; a prefix whose
new player leaves a sample unchanged copies the previous prefix's outcome for it. (The engine's
incremental update — the next layer's intact output plus a cumulative sum of the players' thin
contributions along each order — was tried for the chains: on the 2019 MLP its gathers and float64
cumulative sums cost more than the 20→10 Linear they replace, so rows are recomputed from the cut.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from lesion._errors import LesionError
from lesion._forward import standard_attention
from lesion._lesion import Lesion, check_lesions
from lesion.data import Split
from lesion.engine import EngineOptions, eval_mode, model_device, topk_and_ties
from lesion.engine._fast import IntactValues, default_memory, fill_value
from lesion.engine._reference import autocast_context
from lesion.engine._split_graph import (
    PROBE_SIZES,
    Cut,
    make_cut,
    propagate_shapes,
    trace,
)


class LayerCoalitions:
    """Evaluates coalitions of ``players`` (lesions of units of one layer) many at a time.

    Build with :meth:`plan`, which returns None where this path does not apply (then one engine call
    per coalition does the work).
    """

    def __init__(self, model: nn.Module, split: Split, gm: fx.GraphModule, cut: Cut, players: Sequence[Lesion],
                 fill: Tensor, options: EngineOptions) -> None:
        self.model, self.split, self.cut, self.fill, self.options = model, split, cut, fill, options
        self.device = model_device(model)
        n_units = fill.shape[cut.unit_dim - 1]
        membership = torch.zeros(len(players), n_units, dtype=torch.float32)
        for i, player in enumerate(players):
            membership[i, list(player.units[0][1])] = 1.0
        self.membership = membership.to(self.device)  # (n players, units of the layer)
        owner = torch.full((n_units,), len(players), dtype=torch.long)  # each unit's player (n: none)
        for i, player in enumerate(players):
            owner[list(player.units[0][1])] = i
        self.owner = owner.to(self.device)
        self.intact = IntactValues(gm, split, options.batch_size, self.device, options.autocast, options.channels_last)
        if options.compile:
            self.cut.suffix = torch.compile(self.cut.suffix, dynamic=True)  # type: ignore[assignment]

    @classmethod
    def plan(cls, model: nn.Module, split: Split, players: Sequence[Lesion], options: EngineOptions,
             means: Mapping[str, Tensor] | None) -> LayerCoalitions | None:
        """The evaluator, or None when the players span several layers, the engine is ``reference``,
        or the layer's cut does not qualify (`LesionError` instead with ``engine="fast"``)."""
        layers = {name for player in players for name in player.layers}
        if options.engine == "reference" or len(layers) != 1 or any(len(p.units) != 1 for p in players):
            return None
        layer = layers.pop()
        unit_dim = check_lesions(model, players)[layer].unit_dim
        try:
            gm = trace(model)
            example = next(split.batches(max(PROBE_SIZES)))[0].to(model_device(model))
            with eval_mode(model), standard_attention(model), torch.inference_mode():
                propagate_shapes(gm, example)
                cut = make_cut(gm, layer, unit_dim, incremental=False)
                fill = fill_value(cut, dict(gm.named_modules()), players[0].method, means, model_device(model))
        except Exception as error:  # any cause: one forward per coalition instead (the engine then says why)
            if options.engine == "fast":
                reason = str(error) if isinstance(error, LesionError) else f"{type(error).__name__}: {error}"
                raise LesionError(f"engine 'fast': cannot evaluate coalitions of layer {layer!r} together: {reason}") from error
            return None
        return cls(model, split, gm, cut, players, fill, options)

    def evaluate(self, members: np.ndarray, loss: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Correct top-1 counts per class (C, n_classes) and, with ``loss``, summed cross-entropy (C,)
        of the coalitions ``members`` (C, n players) bool: True where the player is lesioned."""
        n_classes = self.split.n_classes
        masks = torch.as_tensor(np.asarray(members, dtype=np.float32), device=self.device) @ self.membership > 0
        counts = torch.zeros(len(masks), n_classes, dtype=torch.float64, device=self.device)
        losses = torch.zeros(len(masks), dtype=torch.float64, device=self.device)
        precision = autocast_context(self.options.autocast, self.device)
        memory = self.options.memory or default_memory(self.device)
        with eval_mode(self.model), standard_attention(self.model), torch.inference_mode():
            for carried, labels in self._intact():
                b = len(labels)
                size = max(1, memory // (b * self.cut.row_bytes))
                onehot = F.one_hot(labels, n_classes).double()
                for start in range(0, len(masks), size):
                    chunk = masks[start : start + size]
                    with precision:
                        logits = self._suffix(chunk, carried)
                    correct = _top1_correct(logits, labels.repeat(len(chunk)))
                    counts[start : start + len(chunk)] += correct.view(len(chunk), b).double() @ onehot
                    if loss:
                        tiled = labels.repeat(len(chunk))
                        per_row = F.cross_entropy(logits.double(), tiled, reduction="none")
                        losses[start : start + len(chunk)] += per_row.view(len(chunk), b).sum(1)
        return counts.cpu().numpy(), (losses.cpu().numpy() if loss else None)

    def evaluate_chains(self, orders: np.ndarray, loss: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`evaluate` of every proper prefix of each order: ``orders`` (P, n) player indices ->
        counts (P, n-1, n_classes) and, with ``loss``, summed cross-entropy (P, n-1); prefix ``j``
        (0-based) lesions the players ``orders[p, :j+1]``. (See :meth:`_chains`.)
        """
        order = torch.as_tensor(np.asarray(orders), dtype=torch.long, device=self.device)
        chains, steps, n_classes = len(order), order.shape[1] - 1, self.split.n_classes
        counts = torch.zeros(chains * steps, n_classes, dtype=torch.float64, device=self.device)
        losses = torch.zeros(chains * steps, dtype=torch.float64, device=self.device)
        for _, labels, correct, loss_rows in self._chains(order, steps, loss):
            onehot = F.one_hot(labels, n_classes).double()
            counts += correct[:, 1:].reshape(chains * steps, -1).double() @ onehot
            if loss:
                losses += loss_rows[:, 1:].reshape(chains * steps, -1).sum(1)
        shape = (chains, steps)
        return counts.view(*shape, n_classes).cpu().numpy(), (losses.view(shape).cpu().numpy() if loss else None)

    def sample_chains(self, orders: np.ndarray, loss: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Each sample along its own order: ``orders`` (D, N, n), one order per draw and sample ->
        top-1 correct (D, N, n+1) bool and, with ``loss``, the cross-entropy (D, N, n+1), where
        ``[d, b, j]`` has the first ``j`` players of ``orders[d, b]`` lesioned (0: intact, n: all).
        """
        order = torch.as_tensor(np.asarray(orders), dtype=torch.long, device=self.device)
        draws, n_samples, n = order.shape
        correct = np.zeros((draws, n_samples, n + 1), dtype=bool)
        losses = np.zeros((draws, n_samples, n + 1)) if loss else None
        for offset, labels, chain, loss_rows in self._chains(order, n, loss):
            rows = slice(offset, offset + len(labels))
            correct[:, rows] = chain.transpose(1, 2).cpu().numpy()
            if losses is not None:
                losses[:, rows] = loss_rows.transpose(1, 2).cpu().numpy()
        return correct, losses

    def _chains(self, order: Tensor, steps: int, loss: bool) -> Iterator[tuple[int, Tensor, Tensor, Tensor]]:
        """Per data batch of B samples: its offset, labels, and top-1 correct (P, steps+1, B) bool (and
        the cross-entropy, float64) with the first ``0..steps`` players of each order lesioned;
        ``order``: (P, n) shared by every sample, or (P, N, n) one per sample.

        Where the player a prefix adds has units equal to their replacement on a sample (a ReLU unit
        already at 0, for a zero lesion), that sample's cut value is the previous prefix's, so its
        outcome is copied instead of computed again.
        """
        shared = order.dim() == 2
        n = order.shape[-1]
        if shared:
            members = F.one_hot(order[:, :steps], n).cumsum(1) > 0  # (P, steps, n)
            shared_masks = members.flatten(0, 1).float() @ self.membership > 0  # (P*steps, units)
        else:  # each player's position in each sample's order, then each unit's (n + 1: never lesioned)
            position = torch.empty_like(order).scatter_(-1, order, torch.arange(n, device=self.device).expand_as(order))
            position = torch.cat([position, torch.full_like(position[..., :1], n + 1)], -1)
        precision = autocast_context(self.options.autocast, self.device)
        size = max(1, (self.options.memory or default_memory(self.device)) // self.cut.row_bytes)
        positions = torch.arange(1, steps + 1, device=self.device).view(1, steps, 1)
        offset = 0
        with eval_mode(self.model), standard_attention(self.model), torch.inference_mode():
            for carried, labels in self._intact():
                b = len(labels)
                # (P, steps, B): the player each prefix adds, per sample
                added = order[:, :steps, None].expand(-1, -1, b) if shared else order[:, offset : offset + b, :steps].transpose(1, 2)
                source = carried[0]
                moved = (source != self.fill.to(source.dtype)).movedim(self.cut.unit_dim, 1)
                moved = moved.reshape(b, moved.shape[1], -1).any(2)  # (B, units): the unit differs from its replacement
                changes = moved.float() @ self.membership.t() > 0  # (B, n): the player changes the sample
                active = changes.t().gather(0, added.reshape(-1, b)).view(added.shape)  # (P, steps, B)
                if not shared:  # (P, B, units): the prefix length from which each unit is lesioned, minus 1
                    unit_position = position[:, offset : offset + b][..., self.owner]
                correct = torch.zeros(len(order), steps + 1, b, dtype=torch.bool, device=self.device)
                loss_rows = torch.zeros(len(order), steps + 1, b, dtype=torch.float64, device=self.device)
                with precision:
                    intact = self.cut.suffix(*carried)
                correct[:, 0] = _top1_correct(intact, labels)
                if loss:
                    loss_rows[:, 0] = F.cross_entropy(intact.double(), labels, reduction="none")
                rows = active.nonzero(as_tuple=True)
                for start in range(0, len(rows[0]), size):
                    p, j, sample = (r[start : start + size] for r in rows)
                    row_masks = shared_masks[p * steps + j] if shared else unit_position[p, sample] <= j.unsqueeze(1)
                    with precision:
                        logits = self._rows(row_masks, sample, carried)
                    correct[p, j + 1, sample] = _top1_correct(logits, labels[sample])
                    if loss:
                        loss_rows[p, j + 1, sample] = F.cross_entropy(logits.double(), labels[sample], reduction="none")
                last = torch.where(active, positions, 0).cummax(1).values  # the latest prefix computed for the sample
                last = torch.cat([torch.zeros_like(last[:, :1]), last], 1)
                yield offset, labels, correct.gather(1, last), loss_rows.gather(1, last)
                offset += b

    def _rows(self, masks: Tensor, samples: Tensor, carried: list[Tensor]) -> Tensor:
        """Logits (R, classes) of R (coalition, sample) rows: ``masks`` (R, units), ``samples`` (R,) in the batch."""
        cut = self.cut
        source = carried[0].index_select(0, samples)
        shape = [len(masks)] + [source.shape[d] if d == cut.unit_dim else 1 for d in range(1, source.dim())]
        lesioned = torch.where(masks.view(shape), self.fill.to(source.dtype), source)
        inputs = [lesioned] + [
            value.index_select(0, samples) if tiled else value for value, tiled in zip(carried[1:], cut.tiled[1:], strict=True)
        ]
        return self.cut.suffix(*inputs)

    def _suffix(self, masks: Tensor, carried: list[Tensor]) -> Tensor:
        """Logits (K·B, classes) of the K coalitions ``masks`` (K, units) on one data batch."""
        cut, k = self.cut, len(masks)
        source = carried[0]
        shape = [k, 1] + [source.shape[d] if d == cut.unit_dim else 1 for d in range(1, source.dim())]
        lesioned = torch.where(masks.view(shape), self.fill.to(source.dtype), source.unsqueeze(0))
        inputs = [lesioned.reshape(-1, *source.shape[1:])] + [
            value.repeat(k, *[1] * (value.dim() - 1)) if tiled else value
            for value, tiled in zip(carried[1:], cut.tiled[1:], strict=True)
        ]
        return self.cut.suffix(*inputs)

    def _intact(self) -> Iterator[tuple[list[Tensor], Tensor]]:
        """Per data batch: the intact values the suffix takes (``cut.carried``) and the labels (kept for
        the whole split when they fit, as the engine's)."""
        names = tuple(self.cut.carried)
        for offset, values in self.intact.batches(names):
            carried = [values[name] for name in names]
            yield carried, self.split.labels[offset : offset + len(carried[0])].to(self.device)

def _top1_correct(logits: Tensor, labels: Tensor) -> Tensor:
    """Whether the engine's top-1 (:func:`~lesion.engine.topk_and_ties`) is the label: (R, classes),
    (R,) -> (R,) bool. The label's logit against the row's largest; rows where it ties with another
    class's go through ``topk`` itself, so ties break as the engine's do."""
    logits = logits.float()
    own = logits.gather(1, labels.view(-1, 1))[:, 0]
    best = logits.amax(1)
    correct = own >= best
    shared = correct & ((logits == best.unsqueeze(1)).sum(1) > 1)
    if bool(shared.any()):
        rows = shared.nonzero()[:, 0]
        top, _ = topk_and_ties(logits[rows], 1)
        correct[rows] = top[:, 0] == labels[rows]
    return correct

