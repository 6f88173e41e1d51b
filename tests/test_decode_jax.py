"""sgconv.jax's decoding: decoder / prefill / step are pure and jit, a lax.scan of step
equals the full layer, donation and pytrees work, float64 sums with 64-bit mode and
compensated float32 sums without it, and the errors."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import reference  # noqa: E402
import sgconv  # noqa: E402
import sgconv.jax as sgj  # noqa: E402
from conformance import oracle  # noqa: E402
from conformance.tolerance import assert_close, layer_bound  # noqa: E402

BK = sgconv.backend("jax")


def _scan(dec, state, xs):
    def body(s, x):
        y, s = sgj.step(dec, s, x)
        return s, y
    return jax.lax.scan(body, state, xs)


def _setup(dtype="float32", **kw):
    options = dict(d_model=3, l_max=40, channels=2, kernel_dim=4, decay_min=0.8, decay_max=2.0)
    options.update(kw)
    config = sgconv.SGConvConfig(**options)
    params = sgj.init(0, config, dtype=dtype)
    u = np.random.default_rng(1).standard_normal((2, 3, 90)).astype(dtype)
    return config, params, u


@pytest.mark.parametrize("mode", [{}, {"interpolation": "nearest"}, {"learnable_decay": True}])
def test_scan_of_step_equals_the_layer(mode):
    config, params, u = _setup(**mode)
    state = oracle.params_state(params, BK)
    dec = sgj.decoder(params)
    assert dec.compensated and dec.accumulate == "float32"             # JAX's default: no x64
    full = np.asarray(sgj.apply(params, jnp.asarray(u)))
    y0, s = sgj.prefill(dec, jnp.asarray(u[..., :25]))
    s, ys = jax.jit(_scan)(dec, s, jnp.asarray(np.moveaxis(u[..., 25:], -1, 0)))
    y = np.concatenate([np.asarray(y0), np.moveaxis(np.asarray(ys), 0, -1)], -1)
    bound = layer_bound(state, config, u, "float32")
    expected = reference.layer(state, u, interpolation=config.interpolation)
    assert_close(y, expected, bound, f"scan of sgconv.jax.step, {mode}")
    assert_close(y, full, 2 * bound, "scan vs sgconv.jax.apply")
    assert int(s.position) == 90


def test_float64_sums_with_x64_and_float64_layers():
    with jax.enable_x64(True):
        config, params, u = _setup()
        dec = sgj.decoder(params)
        assert dec.accumulate == "float64" and not dec.compensated
        y0, s = sgj.prefill(dec, jnp.asarray(u[..., :10]))
        assert s.sums.dtype == jnp.float64 and s.position.dtype == jnp.int64
        s, ys = jax.jit(_scan)(dec, s, jnp.asarray(np.moveaxis(u[..., 10:], -1, 0)))
        full = np.asarray(sgj.apply(params, jnp.asarray(u)))
        y = np.concatenate([np.asarray(y0), np.moveaxis(np.asarray(ys), 0, -1)], -1)
        assert np.abs(y - full).max() <= 1e-5 * np.abs(full).max()
        p64 = sgj.as_jax_params(params, jnp.float64)
        dec64 = sgj.decoder(p64)
        assert dec64.compensated and dec64.accumulate == "float64"
        state = oracle.params_state(p64, BK)
        u64 = u.astype("float64")
        y0, s = sgj.prefill(dec64, jnp.asarray(u64[..., :10]))
        s, ys = jax.jit(_scan)(dec64, s, jnp.asarray(np.moveaxis(u64[..., 10:], -1, 0)))
        y = np.concatenate([np.asarray(y0), np.moveaxis(np.asarray(ys), 0, -1)], -1)
        assert_close(y, reference.layer(state, u64), layer_bound(state, config, u64, "float64"),
                     "float64 layer, compensated float64 sums")


def test_step_is_pure_jits_donates_and_takes_params():
    config, params, u = _setup()
    dec = sgj.decoder(params)
    state = sgj.decode_state(dec, 2)
    x = jnp.asarray(u[..., 0])
    y1, s1 = sgj.step(dec, state, x)
    y2, s2 = sgj.step(dec, state, x)                                   # state unchanged
    assert np.array_equal(y1, y2) and int(state.position) == 0
    y3, _ = sgj.step(params, state, x)                                 # Params work too
    assert np.allclose(y1, y3, atol=1e-6)
    fast = jax.jit(sgj.step, donate_argnums=1)
    y4, s4 = fast(dec, s1, jnp.asarray(u[..., 1]))
    y5, _ = sgj.step(dec, s2, jnp.asarray(u[..., 1]))
    assert np.allclose(y4, y5, atol=1e-6) and int(s4.position) == 2
    leaves = jax.tree_util.tree_leaves(s4)
    assert len(leaves) == 4                                           # history, hi, lo, position
    assert jax.jit(sgj.decoder)(params).coef.shape == dec.coef.shape


def test_prefill_layout_and_errors():
    config, params, u = _setup()
    dec = sgj.decoder(params)
    a, sa = sgj.prefill(dec, jnp.asarray(u[..., :12]))
    b, sb = sgj.prefill(dec, jnp.asarray(u[..., :12].swapaxes(1, 2)), transposed=False)
    assert np.array_equal(np.asarray(a), np.asarray(b).swapaxes(1, 2))
    assert np.array_equal(np.asarray(sa.sums), np.asarray(sb.sums))
    with pytest.raises(ValueError, match="bidirectional"):
        sgj.decoder(sgj.init(0, sgconv.SGConvConfig(d_model=3, l_max=8, bidirectional=True)))
    with pytest.raises(TypeError, match="sgconv.Decoder"):
        sgj.step("dec", sa, jnp.asarray(u[..., 0]))
    with pytest.raises(ValueError, match=r"\(B=2, H=3\)"):
        sgj.step(dec, sa, jnp.asarray(u[:1, :, 0]))
    with pytest.raises(TypeError, match="DecodeState"):
        sgj.step(dec, None, jnp.asarray(u[..., 0]))
    with pytest.raises(ValueError, match="batch must be an int"):
        sgj.decode_state(dec, -1)
