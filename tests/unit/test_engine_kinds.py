"""The kinds of models on which the fast engine once gave wrong predictions or crashed: now each
is exact, or falls back to the reference path with a warning (checked against the truth)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from differential import check, singles_and_pairs, split_of
from torch import nn

from lesion import Lesion, LesionError, evaluate, unit_means
from lesion.engine._split_graph import make_cut, propagate_shapes, trace


def _maxout(pool: type[nn.Module]) -> nn.Module:
    """Pooling over a Linear's features (maxout): the pool acts on dim 1 of a (B, F) tensor."""
    return nn.Sequential(OrderedDict(fc1=nn.Linear(6, 12), pool=pool(2), relu=nn.ReLU(), fc2=nn.Linear(6, 8), out=nn.Linear(8, 5)))


class TrainingFlags(nn.Module):
    """Hand-written research code: functional dropout and batch norm that follow ``self.training``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 10)
        self.register_buffer("running_mean", torch.randn(10) * 0.3)
        self.register_buffer("running_var", torch.rand(10) + 0.5)
        self.out = nn.Linear(10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.batch_norm(self.fc1(x), self.running_mean, self.running_var, training=self.training)
        return self.out(F.dropout(F.relu(h), 0.5, self.training))


class InPlace(nn.Module):
    """In-place statements whose results are not re-bound."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 8)
        self.fc3 = nn.Linear(8, 8)
        self.out = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h.relu_()
        out = self.fc2(h)
        out.add_(h)
        y = self.fc3(out)
        torch.tanh_(y)
        return self.out(y)


def _batch_statistics() -> nn.Module:
    """Normalisation with batch statistics after a lesioned layer."""
    return nn.Sequential(OrderedDict(
        fc1=nn.Linear(6, 8), bn=nn.BatchNorm1d(8, track_running_stats=False), relu=nn.ReLU(),
        fc2=nn.Linear(8, 8), out=nn.Linear(8, 4),
    ))  # fmt: skip


class SequenceFirst(nn.Module):
    """A Linear applied to a (T, B, F) tensor before a sequence-first LSTM."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 8)
        self.lstm = nn.LSTM(8, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, 4)
        h, _ = self.lstm(torch.relu(self.proj(x.transpose(0, 1))))
        return self.out(h[-1])


def _massive(kind: str, scale: float = 1e6) -> nn.Module:
    """Unit 0 of the first layer outputs ``scale``: its contribution to the next layer dwarfs the
    others' ("massive activations"); without the guard its lesion flips predictions (float32
    cancellation in the incremental update)."""
    torch.manual_seed(3)
    if kind == "linear":
        first: nn.Linear | nn.Conv2d = nn.Linear(8, 16)
        layers = [first, nn.ReLU(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10)]
    else:
        first = nn.Conv2d(2, 6, 3, padding=1)
        layers = [first, nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)]
    with torch.no_grad():
        first.weight[0] = 0.0
        first.bias[0] = scale  # type: ignore[index]
    return nn.Sequential(*layers).eval()


@pytest.mark.parametrize("pool", [nn.MaxPool1d, nn.AvgPool1d])
def test_pooling_over_a_linears_features(pool: type[nn.Module]) -> None:
    model = _maxout(pool).eval()
    split = split_of(torch.randn(40, 6), 5)
    lesions = [*singles_and_pairs(model, ["fc1", "fc2"]), Lesion((("fc1", tuple(range(0, 12, 3))),))]
    assert check(model, split, lesions, fast="exact") == "exact"
    means = unit_means(model, ["fc1", "fc2"], [(split.inputs, split.labels)])
    check(model, split, singles_and_pairs(model, ["fc1"], "mean"), means=means, fast="exact")


def test_model_passed_in_training_mode() -> None:
    model = TrainingFlags().train()
    split = split_of(torch.randn(40, 6), 4)
    check(model, split, singles_and_pairs(model, ["fc1", "out"]), fast="exact")
    assert model.training


def test_in_place_statements_before_the_lesioned_layer() -> None:
    model = InPlace().eval()
    split = split_of(torch.randn(40, 6), 4)
    check(model, split, singles_and_pairs(model, ["fc1", "fc2", "fc3", "out"]), fast="exact")


def test_batch_statistics_after_the_cut_fall_back() -> None:
    model = _batch_statistics().eval()
    split = split_of(torch.randn(40, 6), 4)
    # the statistics are those of each data batch: the truth sees the whole split as one batch
    check(model, split, singles_and_pairs(model, ["fc1"]), batch_size=40, fast="fallback")
    check(model, split, singles_and_pairs(model, ["fc2", "out"]), batch_size=40, fast="exact")  # after them: exact


def test_sequence_first_tensors_fall_back() -> None:
    model = SequenceFirst().eval()
    split = split_of(torch.randn(24, 5, 4), 3)
    check(model, split, singles_and_pairs(model, ["proj"]), fast="fallback")
    check(model, split, singles_and_pairs(model, ["out"]), fast="exact")


@pytest.mark.parametrize(("kind", "shape"), [("linear", (8,)), ("conv", (2, 4, 4))])
def test_cancellation_in_the_incremental_update(kind: str, shape: tuple[int, ...]) -> None:
    model = _massive(kind)
    split = split_of(torch.randn(400, *shape), 10)
    lesions = [Lesion((("0", (0,)),)), Lesion((("0", (0, 5)),)), Lesion((("0", (3,)),))]
    check(model, split, lesions, k=3, batch_size=50, fast="exact")


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, 4)
        h = self.fc(x)
        return self.out(self.attn(h, h, h, need_weights=False)[0].mean(1))


def test_multihead_attention_lesions_take_the_reference_path() -> None:
    gm = trace(_Attention().eval())
    propagate_shapes(gm, torch.randn(2, 5, 4))
    with pytest.raises(LesionError, match="MultiheadAttention"):
        make_cut(gm, "attn", 1)
    assert make_cut(gm, "fc", -1).unit_dim == 2


def test_any_failure_of_the_fast_path_falls_back_or_is_a_lesion_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from lesion.engine import _fast

    def broken(*args: object) -> None:
        raise IndexError("index 12 is out of bounds")

    model = nn.Sequential(OrderedDict(fc1=nn.Linear(4, 6), relu=nn.ReLU(), out=nn.Linear(6, 3))).eval()
    split = split_of(torch.randn(20, 4), 3)
    lesions = singles_and_pairs(model, ["fc1", "out"])
    monkeypatch.setattr(_fast, "_change", broken)  # a bug inside the fast path, for fc1's update only
    with pytest.warns(UserWarning, match=r"layer 'fc1': IndexError: index 12.*reference path") as caught:
        list(evaluate(model, split, lesions, k=2))
    assert len(caught) == 1
    with pytest.raises(LesionError, match="IndexError"):
        list(evaluate(model, split, lesions, engine="fast"))
    assert check(model, split, lesions) == "fallback"


class _Guarded(nn.Module):
    """fc1 -> one operation the fast path must not tile across, or a write it cannot make explicit -> out."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.fc1 = nn.Linear(6, 8)
        self.softmax = nn.Softmax(dim=0)
        self.register_buffer("order", torch.randperm(20))
        self.attn = nn.MultiheadAttention(8, 2)  # sequence-first, given (B, 1, 8): attends across samples
        self.out = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "input_written":
            x.relu_()
        h = self.fc1(x)
        if self.kind == "batch_mean":
            h = h - h.mean(0)
        elif self.kind == "softmax_module_dim0":
            h = self.softmax(h)
        elif self.kind == "index_batch":
            h = h[self.order]
        elif self.kind == "item_assignment":
            h[:, 0] = 0.0
        elif self.kind == "sequence_first_attention_on_batch_first":
            a = h.unsqueeze(1)
            h = h + 10.0 * self.attn(a, a, a, need_weights=False)[0].squeeze(1)
        elif self.kind == "view_read_after_write":
            view = h.view(-1, 2, 4)
            h.mul_(2.0)
            h = view.flatten(1) + h
        return self.out(torch.tanh(h))


@pytest.mark.parametrize(
    "kind",
    [
        "batch_mean", "softmax_module_dim0", "index_batch", "sequence_first_attention_on_batch_first",
        "item_assignment", "view_read_after_write", "input_written",
    ],
)  # fmt: skip
def test_operations_that_cannot_be_tiled_or_made_explicit_fall_back(kind: str) -> None:
    model = _Guarded(kind).eval()
    split = split_of(torch.randn(20, 6), 4)
    # one data batch of the whole split: operations along the batch dim see the same batch everywhere
    check(model, split, singles_and_pairs(model, ["fc1"]), batch_size=20, fast="fallback")
