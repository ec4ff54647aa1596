"""Attention heads as units: checked against a hand-written multi-head attention and zeroed out_proj columns."""

import copy
import math
import os
import subprocess
import sys
import textwrap
from contextlib import contextmanager

import pytest
import torch
from torch import nn

import lesion
from lesion import INTACT, Lesion, LesionError, lesioned
from lesion._units import HEADS
from lesion.data import Split


def explicit_heads(mha, query, key, key_padding_mask=None, attn_mask=None):
    """Each head's output before the output projection, written out by hand: (B, Lq, H, d).

    ``query`` (B, Lq, E), ``key`` = value (B, Lk, E); ``key_padding_mask`` (B, Lk) bool, True = ignore;
    ``attn_mask`` (Lq, Lk) bool, True = ignore.
    """
    n_heads = mha.num_heads
    d = mha.embed_dim // n_heads
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)

    def split(x, w, b):  # (B, L, E) -> (B, H, L, d)
        return (x @ w.T + b).unflatten(-1, (n_heads, d)).transpose(1, 2)

    q, k, v = split(query, w_q, b_q), split(key, w_k, b_k), split(key, w_v, b_v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)  # (B, H, Lq, Lk)
    if attn_mask is not None:
        scores = scores.masked_fill(attn_mask, float("-inf"))
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2)


def explicit_attention(mha, query, key, off=(), fill=None, **masks):
    """Hand-written attention output (B, Lq, E) with heads ``off`` zeroed, or set to ``fill`` (Lq or 1, H, d)."""
    heads = explicit_heads(mha, query, key, **masks).clone()
    for h in off:
        heads[:, :, h] = 0 if fill is None else fill[:, h]
    return heads.flatten(2) @ mha.out_proj.weight.T + mha.out_proj.bias


def zero_head_columns(model, name, heads):
    """A copy of ``model`` whose attention ``name`` has the out_proj columns of ``heads`` set to 0."""
    edited = copy.deepcopy(model)
    attention = edited.get_submodule(name)
    d = attention.embed_dim // attention.num_heads
    with torch.no_grad():
        for h in heads:
            attention.out_proj.weight[:, h * d : (h + 1) * d] = 0
    return edited


@contextmanager
def untouched(model):
    """Check on exit that parameters and buffers are bit-identical, no forward is left shadowed and
    PyTorch's attention fast path is as it was."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    yield
    after = model.state_dict()
    assert state.keys() == after.keys()
    assert all(torch.equal(after[k], v) and after[k].dtype == v.dtype for k, v in state.items())
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert torch.backends.mha.get_fastpath_enabled() == fastpath


class SelfAttention(nn.Module):
    """One attention module on (B, L, E) inputs, whatever its batch_first, with fixed masks."""

    def __init__(self, batch_first, key_padding_mask=None, attn_mask=None, dtype=torch.float64):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 4, batch_first=batch_first, dtype=dtype)
        self.masks = {"key_padding_mask": key_padding_mask, "attn_mask": attn_mask}

    def forward(self, x):
        x = x if self.attn.batch_first else x.transpose(0, 1)
        out = self.attn(x, x, x, need_weights=False, **self.masks)[0]
        return out if self.attn.batch_first else out.transpose(0, 1)


def _masks(kind, batch=3, length=5):
    pad = torch.zeros(batch, length, dtype=torch.bool)
    pad[1, 3:] = True
    pad[2, 4:] = True
    causal = torch.ones(length, length, dtype=torch.bool).triu(1)
    return {
        "none": {},
        "padding": {"key_padding_mask": pad},
        "padding+causal": {"key_padding_mask": pad, "attn_mask": causal},
    }[kind]


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("masks", ["none", "padding", "padding+causal"])
def test_head_lesion_equals_hand_written_attention(batch_first, masks):
    torch.manual_seed(0)
    kw = _masks(masks)
    model = SelfAttention(batch_first, **kw).eval()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    explicit_kw = {**kw, "attn_mask": kw.get("attn_mask")}
    with torch.no_grad():
        assert torch.allclose(model(x), explicit_attention(model.attn, x, x, **explicit_kw), atol=1e-12)
    for off in [(0,), (1, 3), (0, 1, 2, 3)]:
        with untouched(model), torch.no_grad(), lesioned(model, Lesion((("attn", off),))):
            got = model(x)
        truth = explicit_attention(model.attn, x, x, off=off, **explicit_kw)
        assert torch.allclose(got, truth, atol=1e-12)
        assert not torch.allclose(got, model(x).detach(), atol=1e-3)  # the lesion did something


@pytest.mark.parametrize("batch_first", [True, False])
def test_zeroed_out_proj_columns_equal_zeroed_heads(batch_first):
    """The classic equivalence, on PyTorch's own module: the truth the other tests compare against."""
    torch.manual_seed(1)
    kw = _masks("padding")
    model = SelfAttention(batch_first, **kw).eval()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    with torch.no_grad():
        edited = zero_head_columns(model, "attn", (2,))(x)
        assert torch.allclose(edited, explicit_attention(model.attn, x, x, off=(2,), **kw), atol=1e-12)
        with lesioned(model, Lesion((("attn", (2,)),))):
            assert torch.allclose(model(x), edited, atol=1e-12)


def test_unbatched_and_float32_attention():
    torch.manual_seed(2)
    attention = nn.MultiheadAttention(8, 2).eval()
    model = nn.Sequential()
    model.add_module("attn", attention)
    x = torch.randn(6, 8)  # (L, E): no batch dimension
    call = lambda: attention(x, x, x)[0]  # noqa: E731
    with torch.no_grad(), untouched(model), lesioned(model, Lesion((("attn", (1,)),))):
        got = call()
    with torch.no_grad():
        truth = zero_head_columns(model, "attn", (1,)).attn(x, x, x)[0]
    assert got.shape == (6, 8) and torch.allclose(got, truth, atol=1e-6)


class Classifier(nn.Module):
    """A tiny transformer classifier on token ids (B, L); token 0 is padding, ignored by the pooling."""

    def __init__(self, batch_first=True, norm_first=False, vocab=12, size=16, n_heads=4, n_classes=3):
        super().__init__()
        self.batch_first = batch_first
        self.embed = nn.Embedding(vocab, size)
        layer = nn.TransformerEncoderLayer(size, n_heads, 32, dropout=0.0, batch_first=batch_first, norm_first=norm_first)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=batch_first and not norm_first)
        self.out = nn.Linear(size, n_classes)

    def forward(self, tokens):
        pad = tokens == 0
        x = self.embed(tokens)
        x = x if self.batch_first else x.transpose(0, 1)
        h = self.enc(x, src_key_padding_mask=pad)
        h = h if self.batch_first else h.transpose(0, 1)
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        return self.out((h * keep).sum(1) / keep.sum(1))


def _tokens(n=40, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 12, (n, length), generator=g)
    lengths = torch.randint(3, length + 1, (n,), generator=g)
    tokens[torch.arange(length)[None, :] >= lengths[:, None]] = 0  # right padding
    return tokens


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("norm_first", [False, True])
def test_heads_inside_transformer_encoder_layers(batch_first, norm_first):
    torch.manual_seed(3)
    model = Classifier(batch_first, norm_first).eval()
    tokens = _tokens()
    name = "enc.layers.1.self_attn"
    with torch.inference_mode():
        plain = model(tokens)  # PyTorch's fast path where it applies (nested tensors, fused layers)
        edited = zero_head_columns(model, name, (0, 3))
        truth = edited(tokens)
        with untouched(model), lesioned(model, Lesion.of(model, f"{name}:0,3")):
            got = model(tokens)
        with untouched(model), lesioned(model, INTACT):
            intact = model(tokens)
    assert torch.allclose(got, truth, atol=1e-5)
    assert torch.allclose(intact, plain, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-4)


def test_heads_exact_at_every_position_of_an_encoder_layer():
    """Inside one layer, against the hand-written attention: every position, padded ones too."""
    torch.manual_seed(4)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, dtype=torch.float64).eval()
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[0, 4:] = True
    x = torch.randn(3, 6, 16, dtype=torch.float64)

    def by_hand(off):
        attended = explicit_attention(layer.self_attn, x, x, off=off, key_padding_mask=pad)
        h = layer.norm1(x + attended)
        return layer.norm2(h + layer.linear2(torch.relu(layer.linear1(h))))

    with torch.inference_mode(), untouched(layer), lesioned(layer, Lesion((("self_attn", (1, 2)),))):
        got = layer(x, src_key_padding_mask=pad)
    assert torch.allclose(got, by_hand((1, 2)), atol=1e-12)


@pytest.mark.parametrize("batch_first", [True, False])
def test_heads_of_decoder_self_and_cross_attention(batch_first):
    torch.manual_seed(5)
    layer = nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, batch_first=batch_first).eval()
    tgt, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    if not batch_first:
        tgt, memory = tgt.transpose(0, 1), memory.transpose(0, 1)
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    memory_pad = torch.zeros(2, 7, dtype=torch.bool)
    memory_pad[1, 5:] = True

    def run(model):
        return model(tgt, memory, tgt_mask=causal, memory_key_padding_mask=memory_pad)

    for name in ("self_attn", "multihead_attn"):
        with torch.inference_mode():
            truth = run(zero_head_columns(layer, name, (1,)))
            with untouched(layer), lesioned(layer, Lesion.of(layer, f"{name}:1")):
                got = run(layer)
        assert torch.allclose(got, truth, atol=1e-5)
        assert not torch.allclose(got, run(layer), atol=1e-3)


def test_a_zeroed_head_passes_no_gradient_to_its_projections():
    torch.manual_seed(6)
    model = SelfAttention(True)
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    with untouched(model), lesioned(model, Lesion((("attn", (1,)),))):
        model(x).sum().backward()
    grad = model.attn.in_proj_weight.grad.unflatten(0, (3, 4, 2))  # (q/k/v, head, head_dim, E)
    assert grad[:, 1].abs().sum() == 0 and grad[:, [0, 2, 3]].abs().sum() > 0


def test_unit_means_of_heads_and_mean_lesions():
    torch.manual_seed(7)
    model = SelfAttention(True).eval()
    data = [torch.randn(4, 5, 8, dtype=torch.float64) for _ in range(3)]
    means = lesion.unit_means(model, ["attn"], [(x, None) for x in data])
    with torch.no_grad():
        truth = torch.cat([explicit_heads(model.attn, x, x) for x in data]).mean(0)  # (L, H, d)
    assert means["attn"].shape == (5, 4, 2) and torch.allclose(means["attn"].double(), truth, atol=1e-6)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    mean = Lesion((("attn", (0, 2)),), "mean")
    with torch.no_grad(), untouched(model), lesioned(model, mean, means):
        got = model(x)
    with torch.no_grad():
        assert torch.allclose(got, explicit_attention(model.attn, x, x, off=(0, 2), fill=means["attn"].double()), atol=1e-6)
    # averaged over positions too: (1, H, d), usable on sequences of any length
    flat = {"attn": means["attn"].mean(0, keepdim=True)}
    longer = torch.randn(2, 9, 8, dtype=torch.float64)
    with torch.no_grad(), lesioned(model, mean, flat):
        got = model(longer)
    with torch.no_grad():
        assert torch.allclose(got, explicit_attention(model.attn, longer, longer, off=(0, 2), fill=flat["attn"].double()), atol=1e-6)
    with pytest.raises(LesionError, match="means of layer 'attn' have shape"), torch.no_grad(), lesioned(model, mean, means):
        model(longer)
    with pytest.raises(LesionError, match="one length"):
        lesion.unit_means(model, ["attn"], [(x, None), (longer, None)])


def test_layers_lists_heads_and_only_modules_that_run():
    model = Classifier()
    found = lesion.layers(model)  # probed with a made (1, 1) token input: the model starts with an Embedding
    assert [(layer.name, layer.kind, layer.n_units) for layer in found] == [
        ("enc.layers.0.self_attn", HEADS, 4),
        ("enc.layers.0.linear1", "Linear", 32),
        ("enc.layers.0.linear2", "Linear", 16),
        ("enc.layers.1.self_attn", HEADS, 4),
        ("enc.layers.1.linear1", "Linear", 32),
        ("enc.layers.1.linear2", "Linear", 16),
        ("out", "Linear", 3),
    ]
    assert lesion.layers(model, example=_tokens(2)) == found
    assert lesion.layers(model, probe=False) == found
    with pytest.raises(LesionError, match="example: the model's forward pass failed"):
        lesion.layers(model, example=torch.zeros(2, 3, 4))


def test_selections_and_plans_on_heads():
    model = Classifier()
    assert lesion.select(lesion.layers(model), "*.self_attn") == {
        "enc.layers.0.self_attn": (0, 1, 2, 3),
        "enc.layers.1.self_attn": (0, 1, 2, 3),
    }
    assert Lesion.of(model, "enc.layers.0.self_attn:0-2").key == "enc.layers.0.self_attn:0-2"
    single = lesion.single(model, "*.self_attn")
    assert [les.key for les in single][:2] == ["enc.layers.0.self_attn:0", "enc.layers.0.self_attn:1"]
    assert len(single) == 8
    pairs = lesion.pairs(model, "enc.layers.1.self_attn", method="mean")
    assert len(pairs) == 6 and pairs.lesions[0].key == "enc.layers.1.self_attn:0-1@mean"


def test_out_proj_is_refused_with_the_heads_to_lesion_instead():
    model = Classifier()
    name = "enc.layers.0.self_attn.out_proj"
    expected = r"never runs as a module.*'enc\.layers\.0\.self_attn:0-3'"
    with pytest.raises(LesionError, match=expected):
        Lesion.of(model, f"{name}:0")
    with pytest.raises(LesionError, match=expected), lesioned(model, Lesion(((name, (0,)),))):
        pass
    with pytest.raises(LesionError, match=expected):
        lesion.unit_means(model, [name], [(_tokens(2), None)])
    with pytest.raises(LesionError, match=expected):
        lesion.layers(model, include=[name])
    with pytest.raises(LesionError, match=expected):
        lesion.single(model, name)


class Unused(nn.Module):
    """A model with a registered module its forward never calls: the template of nn.TransformerEncoder."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(12, 16)
        self.template = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(self.template, 1, enable_nested_tensor=False)
        self.out = nn.Linear(16, 3)

    def forward(self, tokens):
        return self.out(self.enc(self.embed(tokens)).mean(1))


def test_a_module_that_never_runs_is_not_listed_and_its_lesion_is_refused():
    model = Unused().eval()
    names = [layer.name for layer in lesion.layers(model)]
    assert "enc.layers.0.self_attn" in names and not any(n.startswith("template") for n in names)
    with pytest.raises(LesionError, match=r"'template\.self_attn' did not run"):
        Lesion.of(model, "template.self_attn:0")
    tokens = _tokens(4)
    refused = pytest.raises(LesionError, match=r"'template\.self_attn' did not run in the model's forward pass")
    with untouched(model), lesioned(model, Lesion((("template.self_attn", (0,)),))), refused:
        model(tokens)
    refused = pytest.raises(LesionError, match=r"'template\.linear1' did not run")
    with untouched(model), lesioned(model, Lesion((("template.linear1", (0,)),))), refused:
        model(tokens)
    with pytest.raises(LesionError, match="did not run"):
        lesion.unit_means(model, ["template.linear1"], [(tokens, None)])
    model(tokens)  # the model works as before


def test_unbatched_convolution_input_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(0), nn.Linear(3 * 4 * 4, 2))
    with lesioned(model, Lesion((("0", (1,)),))), pytest.raises(LesionError, match="without a batch dimension"):
        model(torch.randn(1, 6, 6))


def _split(n=60, seed=0):
    tokens = _tokens(n, seed=seed)
    return Split("tokens", tokens, torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(seed)), ("a", "b", "c"))


def test_sweep_of_heads_matches_zeroed_out_proj_columns(tmp_path):
    torch.manual_seed(8)
    model = Classifier().eval()
    split = _split()
    plan = lesion.single(model, "*.self_attn")
    with untouched(model):
        run = lesion.sweep(model, split, plan, tmp_path / "run", engine="reference", batch_size=16)
    with torch.inference_mode():
        plain = model(split.inputs).argmax(1).numpy()
        assert (run.topk("intact")[:, 0] == plain).all()
        changed = 0
        for les in plan:
            ((name, (head,)),) = les.units
            truth = zero_head_columns(model, name, (head,))(split.inputs).argmax(1).numpy()
            assert (run.topk(les.key)[:, 0] == truth).all(), les.key
            changed += int((truth != plain).sum())
    assert changed > 0


def test_sweep_of_mean_head_lesions_matches_the_hand_written_replacement(tmp_path):
    torch.manual_seed(9)
    model = SelfAttentionClassifier().eval()
    split = Split("x", torch.randn(48, 5, 8), torch.randint(0, 3, (48,)), ("a", "b", "c"))
    plan = lesion.pairs(model, "attn", method="mean")
    with untouched(model):
        run = lesion.sweep(model, split, plan, tmp_path / "run", engine="reference", batch_size=16)
    with torch.no_grad():
        heads = explicit_heads(model.attn, split.inputs, split.inputs)
        means = heads.mean(0)
        for les in plan:
            ((_, off),) = les.units
            attended = explicit_attention(model.attn, split.inputs, split.inputs, off=off, fill=means)
            truth = model.out(attended.mean(1)).argmax(1).numpy()
            assert (run.topk(les.key)[:, 0] == truth).all(), les.key


class SelfAttentionClassifier(nn.Module):
    """Attention, mean over positions, a Linear: the logits are linear in every head's output."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 4, batch_first=True)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        return self.out(self.attn(x, x, x, need_weights=False)[0].mean(1))


@pytest.mark.parametrize("inputs", ["vectors", "tokens"])
def test_first_order_estimate_of_heads_is_exact_where_the_logits_are_linear_in_them(inputs):
    torch.manual_seed(10)
    if inputs == "vectors":
        model, name = SelfAttentionClassifier().eval(), "attn"
        x = torch.randn(64, 5, 8)
    else:  # integer inputs: nothing before the heads can carry a gradient of the input
        model, name = nn.Sequential(nn.Embedding(12, 8), SelfAttentionClassifier()).eval(), "1.attn"
        x = torch.randint(0, 12, (64, 5))
    split = Split("x", x, torch.randint(0, 3, (64,)), ("a", "b", "c"))
    for method in ("zero", "mean"):
        means = lesion.unit_means(model, [name], split.batches(64)) if method == "mean" else None
        with untouched(model):
            table = lesion.estimate(model, split, [name], method=method, means=means)
        overall = table[table["class"] == "overall"].set_index("unit")["accuracy"]
        for head in range(4):
            (outcome,) = lesion.evaluate(model, split, [Lesion(((name, (head,)),), method)], means=means, engine="reference", k=1)
            exact = (outcome.topk[:, 0] == split.labels.numpy()).mean()
            assert overall[head] == pytest.approx(exact), (method, head)


def test_capture_of_heads_is_head_major(tmp_path):
    torch.manual_seed(11)
    model = SelfAttentionClassifier().eval()
    split = Split("x", torch.randn(6, 5, 8), torch.zeros(6, dtype=torch.long), ("a",))
    acts = lesion.capture_activations(model, split, ["attn"], tmp_path / "acts.npy")
    with torch.no_grad():
        truth = explicit_heads(model.attn, split.inputs, split.inputs).movedim(2, 1)  # (N, H, L, d)
    assert acts.shapes["attn"] == (4, 5, 2)
    assert torch.allclose(torch.from_numpy(acts.layer("attn").copy()), truth.flatten(1), atol=1e-6)
    neurons = acts.neurons()
    assert (neurons["unit"].to_numpy() == torch.arange(4).repeat_interleave(10).numpy()).all()


FACTORY = """
from torch import nn

class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(12, 16)
        self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True), 2)
        self.unused = nn.Linear(16, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, tokens):
        return self.out(self.enc(self.embed(tokens)).mean(1))

def tiny():
    return Classifier()
"""


def test_cli_layers_lists_heads_and_not_what_never_runs(tmp_path):
    (tmp_path / "tinymodels.py").write_text(textwrap.dedent(FACTORY))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "lesion", "layers", *args], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    out = cli("--model", "tinymodels:tiny")
    assert "enc.layers.1.self_attn" in out and "MultiheadAttention heads" in out
    assert "out_proj" not in out and "unused" not in out and "probe" not in out
    assert "Listed without a probe forward" in cli("--model", "meyes2020-cnn")
    probed = cli("--model", "meyes2020-cnn", "--model-arg", "image_size=8", "--data", "digits")
    assert "conv3" in probed and "Listed without" not in probed
