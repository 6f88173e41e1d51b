"""sgconv.jax.models: the JAX sequence model gives the PyTorch model's outputs for the same
weights (evaluation and training, running statistics included), weights move both ways,
and it works under jit and grad."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from sgconv import ModelConfig  # noqa: E402
from sgconv.jax import models as sjm  # noqa: E402
from sgconv.torch import SequenceModel  # noqa: E402

CONFIGS = {
    "lra": dict(vocab_size=11, d_output=5, norm="batch", prenorm=False, bidirectional=True,
                kernel_dim=4),
    "prenorm-real-last": dict(d_input=3, d_output=1, norm="layer", prenorm=True, pool="last",
                              postact=None, channels=2),
    "retrieval": dict(vocab_size=11, d_output=3, retrieval=True, bidirectional=True,
                      kernel_dim=2, decay_min=1.5, decay_max=3.0),
}
LENGTHS = [37, 20, 5, 1]


def _tol(length: int, layers: int) -> float:
    """float32 on both sides, different FFT code: each layer's FFT convolution carries
    ~eps log2(n) relative error (n <= 4L), and the norms, GLU and mixing amplify it by a
    modest factor (taken as 20 per layer)."""
    return 20 * layers * np.finfo(np.float32).eps * math.log2(4 * length)


def _pair(name: str):
    torch.manual_seed(0)
    model = SequenceModel(d_model=16, n_layers=2, l_max=40, **CONFIGS[name])
    B, L = len(LENGTHS), max(LENGTHS)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 11, (B, L), generator=g) if model.config.vocab_size else \
        torch.randn(B, L, 3, generator=g)
    mask = torch.arange(L)[None] < torch.tensor(LENGTHS)[:, None]
    args = (x, mask) + ((x.flip(0), mask.flip(0)) if model.config.retrieval else ())
    return model, args, tuple(jnp.asarray(a.numpy()) for a in args)


def _close(a, b, tol):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(1.0, float(np.abs(b).max()))
    assert np.abs(a - b).max() <= tol * scale, (np.abs(a - b).max(), tol * scale)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_jax_model_equals_torch_model(name):
    model, targs, jargs = _pair(name)
    tol = _tol(max(LENGTHS), 2)
    jmodel = sjm.SequenceModel.from_torch(model)
    assert jmodel.num_parameters() == model.num_parameters()

    model.train()                                   # batch statistics, running averages
    y_train = model(*targs).detach().numpy()
    y_jax, updated = sjm.apply(jmodel, *jargs, train=True)
    _close(y_jax, y_train, tol)
    state = model.state_dict()
    for key, value in updated.state.items():
        _close(value, state[key].numpy(), tol)

    model.eval()                                    # running statistics
    _close(updated(*jargs), model(*targs).detach().numpy(), tol)
    _close(jax.jit(lambda m, *a: m(*a))(updated, *jargs), model(*targs).detach().numpy(), tol)


def test_weights_move_both_ways_and_init_matches_the_layout():
    cfg = ModelConfig(vocab_size=11, d_output=4, d_model=16, n_layers=2, l_max=40,
                      bidirectional=True, kernel_dim=4)
    jmodel = sjm.SequenceModel.init(jax.random.key(0), cfg)
    torch_model = SequenceModel(cfg)
    torch_model.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in
                                 jmodel.to_state_dict().items()}, strict=True)
    torch_model.eval()
    x = np.random.default_rng(0).integers(0, 11, (3, 25))
    _close(jmodel(jnp.asarray(x)), torch_model(torch.as_tensor(x)).detach().numpy(),
           _tol(25, 2))
    # Z of a fresh JAX model is the norm of each raw kernel row: the layer's kernel has unit rows
    layer = torch_model.blocks[0].layer
    k = layer(torch.zeros(1, 16, 64), return_kernel=True)[1]      # (C', H, 64), K = 64 here
    assert layer.config.kernel_length == 64
    np.testing.assert_allclose(k.norm(dim=-1).detach().numpy(), 1.0, rtol=1e-5)


@pytest.fixture(scope="module")
def small():
    """One small model with dropout for the tests below (JAX compiles once per shape)."""
    cfg = ModelConfig(vocab_size=11, d_output=3, d_model=8, n_layers=1, l_max=16,
                      kernel_dim=4, dropout=0.2)
    return sjm.SequenceModel.init(1, cfg)


def test_grad_and_dropout(small):
    model = small
    x = jnp.asarray(np.random.default_rng(1).integers(0, 11, (2, 16)))

    def loss(m, key):
        out, _ = sjm.apply(m, x, train=True, key=key)
        return jnp.sum(out ** 2)

    grads = jax.grad(loss)(model, jax.random.key(3))
    assert all(float(jnp.abs(g).max()) > 0 for k, g in grads.params.items()
               if "kernel_list" in k or k == "decoder.weight")
    assert all(float(jnp.abs(g).max()) == 0 for g in grads.state.values())   # state: no grad
    a, _ = sjm.apply(model, x, train=True, key=jax.random.key(4))
    b, _ = sjm.apply(model, x, train=True, key=jax.random.key(5))
    assert not np.allclose(a, b)                                              # dropout acts
    with pytest.raises(ValueError, match="needs a key"):
        sjm.apply(model, x, train=True)
    assert jax.tree.structure(model.trainable()) == jax.tree.structure(model)


def test_errors(small):
    model, cfg = small, small.config
    x = jnp.zeros((2, 10), jnp.int32)
    with pytest.raises(ValueError, match=r"shape \(B, L\) = \(2, 10\)"):
        model(x, jnp.ones((2, 9), bool))
    with pytest.raises(ValueError, match="prefix"):
        model(x, jnp.asarray([[True] * 4 + [False, True] + [False] * 4, [True] * 10]))
    with pytest.raises(TypeError, match="integer token ids"):
        model(jnp.zeros((2, 10)))
    with pytest.raises(ValueError, match="SGConv models only"):
        sjm.SequenceModel.init(0, cfg.replace(layer="s4d"))
    state = model.to_state_dict()
    state.pop("decoder.bias")
    with pytest.raises(ValueError, match="missing \\['decoder.bias'\\]"):
        sjm.SequenceModel.from_state_dict(cfg, state)
    with pytest.raises(ValueError, match="does not use"):
        sjm.SequenceModel.from_state_dict(cfg, {**model.to_state_dict(), "extra": np.ones(1)})
