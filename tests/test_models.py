"""sgconv.torch models: SGConvBlock, SequenceModel, the baselines and the optimiser groups.

Shapes, the GLU output option against the released module's layout, padding masks (the
valid part of a sequence never depends on its padding, for every layer and norm, causal
and bidirectional, in training and evaluation), the masked batch norm against
nn.BatchNorm1d, the S4D kernel against its formula, and clear errors for bad arguments.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import sgconv  # noqa: E402
from sgconv.torch import (GConv, ModelConfig, Norm, SequenceModel, SGConv,  # noqa: E402
                          SGConvBlock, make_optimizer, parameter_groups)
from sgconv.torch.baselines import DenseConv, LocalConv, S4DConv  # noqa: E402

LAYERS = ("sgconv", "local", "s4d", "dense", "attention")
SMALL = dict(d_model=8, n_layers=2, l_max=48, kernel_dim=4, local_width=3, d_state=8,
             n_heads=2)


def _model(**fields) -> SequenceModel:
    torch.manual_seed(0)
    cfg = dict(SMALL, vocab_size=7, d_output=3)
    cfg.update(fields)
    return SequenceModel(**cfg)


def _tol(length: int, layers: int = 2) -> float:
    """float64: each layer adds an FFT convolution's eps * log2(n) relative error (n ~ 4L at
    most), amplified by the norms and mixing (a factor ~10 per layer, bounded by 100)."""
    eps = np.finfo(np.float64).eps
    return 100 * layers * eps * math.log2(4 * length)


# --- shapes and the block ---------------------------------------------------------------

@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("pool", ["mean", "last"])
def test_output_shapes(layer, pool):
    model = _model(layer=layer, pool=pool, bidirectional=True)
    x = torch.randint(0, 7, (3, 29))
    assert model(x).shape == (3, 3)
    assert model.features(x).shape == (3, 8, 29)
    assert model.encode(x).shape == (3, 8)
    real = _model(layer=layer, pool=pool, vocab_size=None, d_input=2, d_output=1)
    assert real(torch.randn(2, 1, 2)).shape == (2, 1)          # L = 1 works


def test_retrieval_head_takes_pairs():
    model = _model(retrieval=True)
    x1, x2 = torch.randint(0, 7, (4, 20)), torch.randint(0, 7, (4, 13))
    m1 = torch.arange(20)[None] < torch.tensor([20, 3, 9, 1])[:, None]
    out = model(x1, m1, x2)
    assert out.shape == (4, 3)
    e1, e2 = model.encode(x1, m1), model.encode(x2)
    want = model.decoder(torch.cat([e1, e2, e1 * e2, e1 - e2], -1))
    torch.testing.assert_close(out, want)
    with pytest.raises(ValueError, match="takes a pair"):
        model(x1, m1)
    with pytest.raises(ValueError, match="for retrieval models"):
        _model()(x1, m1, x2)


def test_sgconv_block_is_the_lra_block():
    """Post-norm: norm(x + dropout(layer(x))); pre-norm: x + layer(norm(x))."""
    torch.manual_seed(1)
    x = torch.randn(3, 8, 20)
    post = SGConvBlock(8, 20, norm="batch", prenorm=False, bidirectional=True).eval()
    torch.testing.assert_close(post(x), post.norm(x + post.layer(x)))
    pre = SGConvBlock(8, 20, norm="layer", prenorm=True)
    torch.testing.assert_close(pre(x), x + pre.layer(pre.norm(x)))
    assert post.layer.postact == "glu" and post.layer.bidirectional


def test_glu_output_is_the_released_layout():
    """postact='glu': output_linear = Sequential(Linear(C*H, 2H), GLU) with the released
    module's keys, and the layer is conv -> GELU -> Linear(C*H -> 2H) -> a * sigmoid(b)."""
    torch.manual_seed(2)
    layer = SGConv(6, 32, channels=2, bidirectional=True, postact="glu", kernel_dim=4)
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items() if "output" in k}
    assert shapes == {"output_linear.0.weight": (12, 12), "output_linear.0.bias": (12,)}
    u = torch.randn(2, 6, 27, dtype=torch.float64)
    layer = layer.double()
    k = sgconv.torch.functional.kernel(list(layer.kernel_list), layer.multiplier,
                                       layer.kernel_norm, 27)
    z = F.gelu(sgconv.torch.functional.conv(u, k, layer.D, bidirectional=True).reshape(2, 12, 27))
    lin = layer.output_linear[0]
    y = torch.einsum("oi,bil->bol", lin.weight, z) + lin.bias[:, None]
    want = y[:, :6] * torch.sigmoid(y[:, 6:])
    torch.testing.assert_close(layer(u), want, rtol=0, atol=1e-12)
    with sgconv.memory_budget(64):                     # the channel-chunked path, 2H rows
        torch.testing.assert_close(layer(u), want, rtol=0, atol=1e-12)
    wide = SGConv(6, 32, postact="glu", transposed=False).double()
    torch.testing.assert_close(wide(u.transpose(1, 2)).transpose(1, 2).shape, u.shape)
    released = GConv(6, l_max=32, postact="glu")
    released.load_state_dict(GConv(6, l_max=32, postact="glu").state_dict(), strict=True)
    with pytest.raises(ValueError, match="postact='relu' is not supported"):
        SGConv(6, 32, postact="relu")


# --- masks ----------------------------------------------------------------------------------

def _padded_batch(model_vocab: int, lengths, total: int, filler: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, model_vocab, (len(lengths), max(lengths)), generator=g)
    pad = torch.full((len(lengths), total), filler)
    pad[:, :x.shape[1]] = x
    mask = torch.arange(total)[None] < torch.tensor(lengths)[:, None]
    return torch.where(mask, pad, filler), mask


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("norm", ["batch", "layer"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_padding_never_changes_the_valid_part(layer, norm, bidirectional):
    """Evaluation: each sequence alone equals its valid part in a padded batch (junk
    tokens in the padding).  Training (batch statistics): the same batch padded with other
    junk and to another length gives the same outputs and the same running statistics."""
    lengths = [23, 5, 17, 1]
    model = _model(layer=layer, norm=norm, bidirectional=bidirectional).double()
    x, mask = _padded_batch(7, lengths, 31, filler=6, seed=3)
    x2, mask2 = _padded_batch(7, lengths, 40, filler=2, seed=3)
    tol = _tol(40)

    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = model(x, mask)
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(before)
    out2 = model(x2, mask2)
    torch.testing.assert_close(out2, out, rtol=tol, atol=tol)
    for k in stats:
        torch.testing.assert_close(model.state_dict()[k], stats[k], rtol=tol, atol=tol)

    model.eval()
    features = model.features(x, mask)
    out = model(x, mask)
    for i, n in enumerate(lengths):
        alone = model.features(x[i:i + 1, :n])
        torch.testing.assert_close(features[i:i + 1, :, :n], alone, rtol=tol, atol=tol)
        torch.testing.assert_close(out[i:i + 1], model(x[i:i + 1, :n]), rtol=tol, atol=tol)


def test_unmasked_bidirectional_model_does_see_padding():
    """The check above can fail: without the mask a bidirectional model reads the padding."""
    model = _model(bidirectional=True).double().eval()
    x, mask = _padded_batch(7, [10, 4], 16, filler=6, seed=0)
    alone = model(x[1:2, :4])
    assert not torch.allclose(model(x)[1:2], alone, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model(x, mask)[1:2], alone, rtol=_tol(16), atol=_tol(16))


def test_masked_batch_norm_is_batch_norm_of_the_valid_tokens():
    torch.manual_seed(4)
    H = 5
    x = torch.randn(3, H, 11, dtype=torch.float64)
    mask = torch.arange(11)[None] < torch.tensor([11, 2, 7])[:, None]
    norm, ref = Norm("batch", H).double(), torch.nn.BatchNorm1d(H).double()
    packed = torch.cat([x[i, :, :n] for i, n in enumerate([11, 2, 7])], -1)[None]  # (1, H, 20)
    y, y_ref = norm(x, mask), ref(packed)
    torch.testing.assert_close(torch.cat([y[i, :, :n] for i, n in enumerate([11, 2, 7])], -1),
                               y_ref[0])
    torch.testing.assert_close(norm.running_var, ref.running_var)
    torch.testing.assert_close(norm.running_mean, ref.running_mean)
    # without a mask, and in evaluation, exactly nn.BatchNorm1d (same state_dict keys)
    norm2, ref2 = Norm("batch", H).double(), torch.nn.BatchNorm1d(H).double()
    assert norm2.state_dict().keys() == ref2.state_dict().keys()
    torch.testing.assert_close(norm2(x), ref2(x))
    norm2.eval(), ref2.eval()
    torch.testing.assert_close(norm2(x, mask), ref2(x))


@pytest.mark.parametrize("mask, error, match", [
    (torch.ones(2, 9, dtype=torch.bool), ValueError, r"shape \(B, L\) = \(2, 10\)"),
    (torch.ones(2, 10), TypeError, "bool tensor"),
    (torch.tensor([[True] * 5 + [False, True] + [False] * 3, [True] * 10]), ValueError, "prefix"),
    (torch.tensor([[False] * 10, [True] * 10]), ValueError, "no valid position"),
])
def test_bad_masks(mask, error, match):
    with pytest.raises(error, match=match):
        _model()(torch.zeros(2, 10, dtype=torch.long), mask)


def test_bad_inputs_and_configs():
    model = _model()
    with pytest.raises(TypeError, match="integer token ids"):
        model(torch.zeros(2, 10))
    with pytest.raises(ValueError, match="outside"):
        model(torch.full((2, 10), 7))
    with pytest.raises(ValueError, match="shape \\(B, L\\)"):
        model(torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="d_input=2"):
        _model(vocab_size=None, d_input=2)(torch.zeros(2, 10, 3))
    with pytest.raises(ValueError, match="unknown norm 'group'"):
        Norm("group", 4)
    with pytest.raises(ValueError, match="norm='group' is not known"):
        ModelConfig(norm="group", vocab_size=3)
    with pytest.raises(ValueError, match="layer='lstm' is not known"):
        ModelConfig(layer="lstm", vocab_size=3)
    with pytest.raises(ValueError, match="exactly one of vocab_size"):
        ModelConfig()
    with pytest.raises(ValueError, match="multiple of n_heads"):
        ModelConfig(layer="attention", d_model=6, n_heads=4, vocab_size=3)
    with pytest.raises(ValueError, match="d_state must be even"):
        ModelConfig(d_state=7, vocab_size=3)


# --- the baselines' kernels -----------------------------------------------------------------

def test_s4d_kernel_is_the_formula():
    """K[c,h,l] = 2 Re sum_n C (exp(dt A) - 1) / A exp(l dt A), summed term by term."""
    torch.manual_seed(5)
    layer = S4DConv(3, 8, bidirectional=True, dtype=torch.float64)
    L = 41
    dt = torch.exp(layer.log_dt)[:, None]
    A = torch.complex(-torch.exp(layer.log_A_real), layer.A_imag)
    C = torch.view_as_complex(layer.C)
    want = torch.stack([2 * (C * (torch.exp(dt * A) - 1) / A * torch.exp(l * dt * A)).sum(-1).real
                        for l in range(L)], -1)
    torch.testing.assert_close(layer.kernel(L), want, rtol=1e-12, atol=1e-12)
    # S4D-Lin initialisation: A = -1/2 + i pi n, dt in [0.001, 0.1]
    torch.testing.assert_close(A[0, :3], torch.tensor([-0.5, -0.5 + math.pi * 1j,
                                                       -0.5 + 2 * math.pi * 1j],
                                                      dtype=torch.complex128))
    assert ((dt >= 0.001) & (dt <= 0.1)).all()


def test_local_conv_reaches_only_its_width():
    """An impulse at t0 moves only outputs t0-width..t0+width-1 (before the mixing)."""
    torch.manual_seed(6)
    width = 5
    for bidirectional in (False, True):
        layer = LocalConv(4, width, bidirectional=bidirectional).double()
        u = torch.zeros(1, 4, 40, dtype=torch.float64)
        base = layer(u)
        u[0, :, 20] = 1.0
        moved = (layer(u) - base).abs().amax(1)[0] > 1e-9      # FFT rounding is ~1e-16
        lo, hi = (20, 20 + width - 1) if not bidirectional else (20 - width, 20 + width - 1)
        assert moved[lo:hi + 1].all() and not moved[:lo].any() and not moved[hi + 1:].any()
    assert LocalConv(4, 9).kernel(5).shape == (1, 4, 5)             # L < width: first L taps
    assert DenseConv(4, 30).kernel(50).shape == (1, 4, 30)           # zero beyond l_max


# --- optimiser ----------------------------------------------------------------------------

def test_parameter_groups():
    model = _model(layer="sgconv")
    groups = parameter_groups(model)
    by_name = {g["name"]: g for g in groups}
    kernels = {id(p) for blk in model.blocks for p in blk.layer.kernel_list}
    assert {id(p) for p in by_name["kernels"]["params"]} == kernels
    assert by_name["kernels"]["lr"] == 0.001 and by_name["kernels"]["weight_decay"] == 0.05
    assert by_name["weights"]["lr"] == 0.01 and by_name["weights"]["weight_decay"] == 0.05
    no_decay = {id(p) for p in by_name["biases and norms"]["params"]}
    assert {id(model.blocks[0].norm.weight), id(model.decoder.bias)} <= no_decay
    assert by_name["biases and norms"]["weight_decay"] == 0.0
    every = [id(p) for g in groups for p in g["params"]]
    assert sorted(every) == sorted(id(p) for p in model.parameters())   # each exactly once

    groups = parameter_groups(model, kernel_lr=0.002, kernel_weight_decay=0.0, lr=0.1)
    kernel_group = next(g for g in groups if g["name"] == "kernels")
    assert (kernel_group["lr"], kernel_group["weight_decay"]) == (0.002, 0.0)

    s4d = _model(layer="s4d")                          # S4's rule: A and dt without decay
    kernel_group = next(g for g in parameter_groups(s4d) if g["name"] == "kernels")
    layer = s4d.blocks[0].layer
    assert {id(layer.log_dt), id(layer.A_imag)} <= {id(p) for p in kernel_group["params"]}
    assert kernel_group["weight_decay"] == 0.0 and kernel_group["lr"] == 0.001

    opt = make_optimizer(model, lr=0.02)
    assert isinstance(opt, torch.optim.AdamW) and len(opt.param_groups) == 3
    with pytest.raises(ValueError, match="weight_decay"):
        parameter_groups(model, weight_decay=-1)


def test_a_training_step_moves_kernels_at_their_rate():
    model = _model(layer="sgconv")
    opt = make_optimizer(model, weight_decay=0.0)
    w = model.blocks[0].layer.kernel_list[0]
    lin = model.blocks[0].layer.output_linear[0].weight
    w0, lin0 = w.detach().clone(), lin.detach().clone()
    x = torch.randint(0, 7, (4, 30))
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
    opt.step()
    # Adam's first step moves every weight by about its lr
    assert float((w.detach() - w0).abs().max()) == pytest.approx(0.001, rel=0.01)
    assert float((lin.detach() - lin0).abs().max()) == pytest.approx(0.01, rel=0.01)


# --- generation: SequenceModel.generate decodes step by step -------------------------------

def _language_model(prenorm: bool, seed: int = 0) -> SequenceModel:
    """A small causal SGConv language model, one optimiser step in (so batch norm's running
    statistics are not the identity), in evaluation mode."""
    torch.manual_seed(seed)
    model = SequenceModel(d_model=8, n_layers=2, l_max=64, kernel_dim=4, vocab_size=11,
                          d_output=11, prenorm=prenorm, norm="batch", bidirectional=False)
    x = torch.randint(0, 11, (4, 40))
    loss = F.cross_entropy(model.positions(x)[:, :-1].reshape(-1, 11), x[:, 1:].reshape(-1))
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    return model.eval()


@pytest.mark.parametrize("prenorm", [False, True])
def test_generate_equals_recomputing_the_whole_sequence(prenorm):
    """Greedy generation by steps picks the tokens that recomputing positions() over the
    whole sequence picks, and every step's logits equal that recomputation's, past l_max."""
    model = _language_model(prenorm)
    prompt = torch.randint(0, 11, (3, 20), generator=torch.Generator().manual_seed(1))
    steps = 60                                               # 20 + 60 > l_max = 64
    out, logits = model.generate(prompt, steps, temperature=0, return_logits=True)
    assert out.shape == (3, 80) and logits.shape == (3, steps, 11)
    assert torch.equal(out[:, :20], prompt)
    with torch.no_grad():
        full = model.positions(out)                          # (3, 80, 11)
    want = full[:, 19:79]
    scale = want.abs().max()
    assert (logits - want).abs().max() <= 1e-4 * scale
    assert torch.equal(out[:, 20:], want.argmax(-1))
    # the comparison can fail: a wrong position gives other logits
    assert (logits - full[:, 18:78]).abs().max() > 1e-2 * scale


def test_generate_samples_reproducibly_and_checks_its_model():
    model = _language_model(False)
    prompt = torch.randint(0, 11, (2, 5))
    a = model.generate(prompt, 7, temperature=0.8, generator=torch.Generator().manual_seed(3))
    b = model.generate(prompt, 7, temperature=0.8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (2, 12)
    assert torch.equal(model.generate(prompt, 0), prompt)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt, 3, temperature=-1.0)
    with pytest.raises(ValueError, match="steps"):
        model.generate(prompt, -1)
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        model.generate(prompt, 3)
    classifier = SequenceModel(d_model=8, n_layers=1, l_max=16, kernel_dim=4, vocab_size=11,
                               d_output=3, bidirectional=True).eval()
    with pytest.raises(ValueError, match="bidirectional=False.*vocab_size = d_output"):
        classifier.generate(prompt, 3)
    with pytest.raises(TypeError, match="integer token ids"):
        model.eval().generate(torch.randn(2, 5), 3)


def test_glu_layer_steps_equal_its_forward():
    """SGConv(postact='glu').step applies the GLU as forward does (2H -> H)."""
    torch.manual_seed(0)
    layer = SGConv(6, 32, kernel_dim=4, postact="glu").eval()
    u = torch.randn(2, 6, 40)
    with torch.no_grad():
        full = layer(u)
        y, state = layer.prefill(u[..., :10])
        steps = []
        for t in range(10, 40):
            y_t, state = layer.step(u[..., t], state)
            steps.append(y_t)
    assert torch.allclose(y, full[..., :10], atol=1e-5)
    assert torch.allclose(torch.stack(steps, -1), full[..., 10:], atol=1e-5)
