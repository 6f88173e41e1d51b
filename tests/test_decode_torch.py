"""sgconv.torch.SGConv.prefill / step / init_state: equal to the module's forward (and the
float64 reference), both layouts, no_grad and inference_mode, independent streams, the
decoder cache following parameter updates and .to(), a stack of layers stepped as one
model, and the errors (gradients, dropout in training, bidirectional)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import reference  # noqa: E402
import sgconv  # noqa: E402
from conformance import oracle  # noqa: E402
from conformance.tolerance import assert_close, layer_bound  # noqa: E402
from sgconv.torch import SGConv  # noqa: E402

BK = sgconv.backend("torch")


def _layer(seed=0, **kw):
    torch.manual_seed(seed)
    options = dict(channels=2, kernel_dim=4, l_max=40)
    options.update(kw)
    return SGConv(3, **options).eval()


def _decode(layer, u, prefix):
    """prefill (or init_state) then step: the outputs in the layer's layout."""
    time_axis = -1 if layer.transposed else 1
    take = (lambda t: u[..., t]) if layer.transposed else (lambda t: u[:, t])
    L = u.shape[time_axis]
    if prefix:
        y, state = layer.prefill(u.narrow(time_axis, 0, prefix))
        parts = [y]
    else:
        state, parts = layer.init_state(u.shape[0], dtype=u.dtype, device=u.device), []
    for t in range(prefix, L):
        y, state = layer.step(take(t), state)
        parts.append(y.unsqueeze(time_axis))
    return torch.cat(parts, dim=time_axis), state


@pytest.mark.parametrize("transposed", [True, False])
@pytest.mark.parametrize("mode", ["cat_randn", "cat_randn_nearest", "cat_randn_learnable"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_steps_equal_forward_and_reference(transposed, mode, dtype):
    layer = _layer(transposed=transposed, mode=mode, dtype=dtype)
    shape = (2, 3, 90) if transposed else (2, 90, 3)
    u = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        full = layer(u)
        for prefix in (0, 1, 33):
            y, state = _decode(layer, u, prefix)
            assert y.dtype == dtype and int(state.position) == 90
            # both within the rule of the reference, so within twice it of each other
            x = (u if transposed else u.transpose(1, 2)).double().numpy()
            ref_state = oracle.params_state(sgconv.from_state_dict(
                {k: v for k, v in layer.state_dict().items()}), sgconv.backend("numpy"))
            bound = layer_bound(ref_state, layer.config, x, str(dtype)[6:])
            expected = reference.layer(ref_state, x, False, True, layer.config.interpolation)
            if not transposed:
                bound, expected = bound.swapaxes(1, 2), expected.swapaxes(1, 2)
            assert_close(y.numpy(), expected, bound, f"{mode} transposed={transposed} "
                         f"{dtype} prefix {prefix}")
            assert_close(y.numpy(), full.numpy(), 2 * bound, "steps vs forward")


def test_no_grad_and_independent_streams():
    layer = _layer()
    u = torch.randn(3, 3, 30, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        together, _ = _decode(layer, u, 7)
        for b in range(3):
            alone, _ = _decode(layer, u[b:b + 1], 7)
            assert torch.equal(alone[0], together[b])


def test_state_is_tensors_and_moves():
    layer = _layer()
    with torch.inference_mode():
        _, state = layer.prefill(torch.randn(2, 3, 10))
    for x in (state.history, state.sums, state.position):
        assert isinstance(x, torch.Tensor)
    assert state.sums.dtype == torch.float64 and state.history.dtype == torch.float32
    moved = state.to("cpu")
    assert torch.equal(moved.history, state.history) and moved.sums.dtype == torch.float64
    with pytest.raises(TypeError, match="moves torch tensors"):
        sgconv.decode_state(sgconv.decoder(sgconv.init(layer.config, seed=0)), 1).to("cpu")


def test_decoder_cache_follows_parameters_and_dtype():
    layer = _layer()
    u = torch.randn(1, 3, 20, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before, _ = _decode(layer, u, 5)
        layer.kernel_list[2].mul_(-1.5)                                # an in-place update
        layer.output_linear.bias.add_(1.0)
        after, _ = _decode(layer, u, 5)
        assert not torch.allclose(before, after)
        assert torch.allclose(after, layer(u), atol=1e-5)
        layer.double()                                                 # new dtype
        y64, state = _decode(layer, u.double(), 5)
        assert y64.dtype == torch.float64 and state.history.dtype == torch.float64
        assert torch.allclose(y64, layer(u.double()), atol=1e-12)


def test_a_stack_of_layers_steps_as_one_model():
    """A residual model of SGConv blocks decodes by stepping every block in turn, each with
    its own state: x_t -> x_t + block(norm(x_t)) -> ...  (how a model of blocks steps)."""
    torch.manual_seed(0)
    blocks = torch.nn.ModuleList(SGConv(4, 32, kernel_dim=4, transposed=False) for _ in range(3))
    norms = torch.nn.ModuleList(torch.nn.LayerNorm(4) for _ in range(3))
    torch.nn.ModuleList([blocks, norms]).eval()
    x = torch.randn(2, 50, 4)

    def forward(x):
        for block, norm in zip(blocks, norms):
            x = x + block(norm(x))
        return x

    with torch.inference_mode():
        full = forward(x)
        states, h, outs = [], x[:, :20], None
        for block, norm in zip(blocks, norms):
            y, state = block.prefill(norm(h))
            states.append(state)
            h = h + y
        outs = [h]
        for t in range(20, 50):
            h = x[:, t]
            for i, (block, norm) in enumerate(zip(blocks, norms)):
                y, states[i] = block.step(norm(h), states[i])
                h = h + y
            outs.append(h[:, None])
    assert torch.allclose(torch.cat(outs, 1), full, atol=2e-5)


def test_errors():
    layer = _layer()
    u_t = torch.randn(1, 3)
    with pytest.raises(RuntimeError, match="torch.no_grad"):
        layer.prefill(torch.randn(1, 3, 4))                            # parameters need grads
    with torch.no_grad():
        state = layer.init_state(1)
        train = _layer(dropout=0.1).train()
        with pytest.raises(RuntimeError, match="layer.eval"):
            train.step(u_t, train.init_state(1))
        with pytest.raises(ValueError, match="bidirectional"):
            _layer(bidirectional=True).init_state(1)
        with pytest.raises(ValueError, match="bidirectional"):
            _layer(bidirectional=True).prefill(torch.randn(1, 3, 4))
        with pytest.raises(TypeError, match="torch.Tensor"):
            layer.step(np.zeros((1, 3), np.float32), state)
        with pytest.raises(TypeError, match="DecodeState"):
            layer.step(u_t, None)
        with pytest.raises(ValueError, match=r"\(B=1, H=3\)"):
            layer.step(torch.randn(2, 3), state)
        with pytest.raises(TypeError, match="holds float32 inputs"):
            layer.step(u_t.double(), state)
        with pytest.raises(ValueError, match="made for another layer"):
            _layer(l_max=100).step(u_t, state)
        with pytest.raises(ValueError, match="batch_size must be an int"):
            layer.init_state(0)
