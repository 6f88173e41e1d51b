"""sgconv.jax's 2D functions: jit, grad and vmap, key and seed init, the prepared layer,
checkpoints through sgconv.save/load, and jax.config left alone."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import reference  # noqa: E402
import sgconv  # noqa: E402
import sgconv.jax as sgj  # noqa: E402
from conformance import tolerance2d  # noqa: E402
from conformance.tolerance import assert_close  # noqa: E402

CFG = sgconv.SGConv2dConfig(3, (7, 10), channels=2, kernel_dim=2)


def _state(params):
    return {k: np.asarray(v, dtype=np.float64) for k, v in sgconv.to_state_dict2d(params).items()}


def _u(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def test_apply2d_jits_vmaps_and_matches_reference():
    params = sgj.init2d(jax.random.key(0), CFG)
    u = _u((2, 3, 7, 10))
    y = jax.jit(sgj.apply2d)(params, u)
    st = _state(params)
    u64 = np.asarray(u, np.float64)
    assert_close(np.asarray(y), reference.layer2d(st, u64),
                 tolerance2d.layer2d_bound(st, CFG, u64, "float32"), "jit(apply2d)")
    assert jnp.array_equal(jax.vmap(lambda x: sgj.apply2d(params, x))(u), y)   # unbatched
    cl = sgj.apply2d(params, jnp.moveaxis(u, 1, 3), transposed=False)
    assert jnp.array_equal(jnp.moveaxis(cl, 3, 1), y)
    fast = sgj.prepare2d(params, (7, 10))
    assert float(jnp.abs(sgj.apply2d(fast, u) - y).max()) <= 1e-6 * float(jnp.abs(y).max())
    with pytest.raises(ValueError, match="prepare2d"):
        sgj.apply2d(fast, u[..., :9])


def test_grad_reaches_trained_leaves_only():
    params = sgj.init2d(1, CFG)                                     # int seed: NumPy's numbers
    np.testing.assert_array_equal(np.asarray(params.D), sgconv.init2d(CFG, seed=1).D)
    u = _u((2, 3, 7, 10), 1)
    g = jax.jit(jax.grad(lambda p: jnp.sum(sgj.apply2d(p, u) ** 2)))(params)
    assert isinstance(g, sgconv.Params2d)
    for w in g.kernels_x + g.kernels_y:
        assert float(jnp.abs(w).sum()) > 0
    for state in (g.multiplier_x, g.kernel_norm_x, g.multiplier_y, g.kernel_norm_y):
        assert not jnp.any(state)                                  # m and Z are not trained
    mask = sgj.trainable2d(params)
    assert mask.kernels_y == (True,) * len(params.kernels_y) and mask.kernel_norm_x is False
    assert jax.tree_util.tree_structure(mask) == jax.tree_util.tree_structure(params)


def test_init2d_with_keys_vmaps_and_has_unit_rows():
    keys = jax.random.split(jax.random.key(2), 3)
    ensemble = jax.vmap(lambda k: sgj.init2d(k, CFG))(keys)
    assert ensemble.kernels_x[0].shape == (3, 4, 3, 2)
    one = sgj.init2d(keys[0], CFG)
    kx, ky = sgj.kernel2d(one, CFG.kernel_lengths)
    for k in (kx, ky):
        np.testing.assert_allclose(np.linalg.norm(np.asarray(k), axis=-1), 1.0, rtol=1e-5)
    assert not jnp.array_equal(ensemble.D[0], ensemble.D[1])


def test_dropout_needs_a_key_and_checkpoints_load_as_jax(tmp_path):
    params = sgj.init2d(3, CFG)
    u = _u((1, 3, 7, 10), 3)
    with pytest.raises(ValueError, match="key"):
        sgj.apply2d(params, u, dropout=0.2)
    a = sgj.apply2d(params, u, dropout=0.2, key=jax.random.key(4))
    assert jnp.array_equal(a, sgj.apply2d(params, u, dropout=0.2, key=jax.random.key(4)))
    assert jnp.array_equal(sgj.apply2d(params, u, dropout=0.2, deterministic=True),
                           sgj.apply2d(params, u))
    sgconv.save(tmp_path / "p.npz", params)
    loaded = sgconv.load(tmp_path / "p.npz", backend="jax")
    assert isinstance(loaded, sgconv.Params2d) and loaded.backend == "jax"
    assert jnp.array_equal(sgj.apply2d(loaded, u), sgj.apply2d(params, u))
    assert not jax.config.jax_enable_x64
