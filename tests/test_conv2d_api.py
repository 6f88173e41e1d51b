"""The 2D SGConv API on the default (NumPy) backend: configuration, parameters, checkpoints,
errors, the prepared layer and the channel-chunk paths.  (Numbers against the reference:
conformance/test_conv2d.py; PyTorch and JAX front ends: test_conv2d_torch.py, _jax.py.)"""

import json

import numpy as np
import pytest

import reference
import sgconv
from conformance import tolerance, tolerance2d
from sgconv import _ops2d


def _params(**kw):
    cfg = sgconv.SGConv2dConfig(**{"d_model": 3, "sizes": (6, 9), "kernel_dim": 2,
                                   "channels": 2, **kw})
    return sgconv.init2d(cfg, seed=1, dtype="float64")


def _state(params):
    return {k: np.asarray(v, dtype=np.float64) for k, v in sgconv.to_state_dict2d(params).items()}


# --- configuration ---------------------------------------------------------------------------

def test_config_sizes_scales_and_parameter_count():
    cfg = sgconv.SGConv2dConfig(96, (56, 14), kernel_dim=8)
    assert cfg.sizes == (56, 14) and cfg.num_scales == (4, 2)     # 1 + ceil(log2(56/8)) = 4
    assert cfg.kernel_lengths == (64, 16) and cfg.kernel_rows == 2
    assert cfg.num_kernel_parameters == (4 + 2) * 2 * 96 * 8
    assert cfg.num_kernel_parameters == reference.num_parameters2d(96, (56, 14), kernel_dim=8)
    assert sgconv.SGConv2dConfig(4, 7).sizes == (7, 7)
    assert sgconv.SGConv2dConfig(4, 7, n_scales=2).num_scales == (2, 2)
    assert sgconv.SGConv2dConfig(4, [7, 3], n_scales=[1, 2]).n_scales == (1, 2)
    hash(cfg)                                                      # static under jit


@pytest.mark.parametrize("kwargs, error, match", [
    ({"sizes": (0, 4)}, ValueError, "SGConv2dConfig.sizes must be >= 1"),
    ({"sizes": (4, 2.5)}, TypeError, "SGConv2dConfig.sizes must be an int"),
    ({"sizes": (1, 2, 3)}, ValueError, "pair"),
    ({"sizes": "8"}, TypeError, "sizes"),
    ({"n_scales": (1, 0)}, ValueError, "n_scales"),
    ({"d_model": 0}, ValueError, "d_model"),
    ({"decay_min": 3.0, "decay_max": 2.0}, ValueError, "decay_min <= decay_max"),
    ({"interpolation": "cubic"}, ValueError, "interpolation"),
])
def test_config_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        sgconv.SGConv2dConfig(**{"d_model": 2, "sizes": (4, 4), **kwargs})


# --- parameters and checkpoints ------------------------------------------------------------------

def test_init2d_draws_the_reference_numbers_on_every_backend():
    cfg = sgconv.SGConv2dConfig(3, (6, 9), kernel_dim=2, channels=2, learnable_decay=True)
    ref = reference.init_state2d(3, (6, 9), channels=2, kernel_dim=2, learnable_decay=True,
                                 rng=4)
    p = sgconv.init2d(cfg, seed=4, dtype="float64")
    st = _state(p)
    for key in ref:
        if key.startswith("kernel_norm"):        # Z by the Gram form here, by sums there
            np.testing.assert_allclose(st[key], ref[key], rtol=64 * tolerance.EPS64)
        else:
            np.testing.assert_array_equal(st[key], ref[key], err_msg=key)
    with pytest.raises(TypeError, match="sgconv.init"):
        sgconv.init2d(sgconv.SGConvConfig(2, 8), seed=0)


@pytest.mark.parametrize("learnable", [False, True])
def test_save_load_dispatch_on_the_stored_kind(tmp_path, learnable):
    """sgconv.save/load write and read 2D and 1D parameters alike; the file says which."""
    p2 = _params(learnable_decay=learnable, decay_min=1.5, interpolation="nearest")
    p1 = sgconv.init(sgconv.SGConvConfig(3, 20), seed=0)
    sgconv.save(tmp_path / "two.npz", p2)
    sgconv.save(tmp_path / "one.npz", p1)
    with np.load(tmp_path / "two.npz") as f:
        assert json.loads(str(f["__sgconv_config__"]))["kind"] == "sgconv2d"
    q2, q1 = sgconv.load(tmp_path / "two.npz"), sgconv.load(tmp_path / "one.npz")
    assert isinstance(q2, sgconv.Params2d) and isinstance(q1, sgconv.Params)
    assert q2.config == p2.config and q1.config == p1.config
    for name, value in p2.arrays().items():
        other = getattr(q2, name)
        for a, b in (zip(value, other) if name.startswith("kernels_") else [(value, other)]):
            assert (a is None and b is None) or np.array_equal(a, b), name
    u = np.random.default_rng(0).standard_normal((2, 3, 6, 9))
    np.testing.assert_array_equal(sgconv.apply2d(q2, u), sgconv.apply2d(p2, u))
    q = sgconv.load(tmp_path / "two.npz", dtype="float32")
    assert q.dtype == "float32"


def test_from_state_dict2d_checks_the_layout():
    sd = sgconv.to_state_dict2d(_params())
    assert sgconv.from_state_dict2d(sd, sizes=(6, 9)).config.num_scales == (3, 4)
    with pytest.raises(ValueError, match="missing"):
        sgconv.from_state_dict2d({k: v for k, v in sd.items() if k != "kernel_norm_y"})
    with pytest.raises(ValueError, match="unexpected keys"):
        sgconv.from_state_dict2d({**sd, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match="channels=1 was given"):
        sgconv.from_state_dict2d(sd, channels=1)
    with pytest.raises(ValueError, match="n_scales"):
        sgconv.from_state_dict2d(sd, n_scales=(1, 1))
    with pytest.raises(TypeError, match="unknown configuration keywords"):
        sgconv.from_state_dict2d(sd, l_max=4)
    bad = dict(sd)
    bad["kernel_norm_x"] = bad["kernel_norm_x"][:1]
    with pytest.raises(ValueError, match="kernel_norm_x"):
        sgconv.from_state_dict2d(bad)


def test_params2d_moves_between_backends_bit_for_bit():
    pytest.importorskip("torch")
    p = _params()
    q = p.to("torch").to("numpy")
    assert q.backend == "numpy" and p.to("torch").backend == "torch"
    np.testing.assert_array_equal(q.kernels_y[1], p.kernels_y[1])
    assert "Params2d(" in repr(p) and "num_parameters" in repr(p)


# --- the operator ------------------------------------------------------------------------------

@pytest.mark.parametrize("image", [(6, 9), (1, 1), (1, 9), (13, 2), (17, 23), (3, 5)])
def test_apply2d_crops_and_pads_the_kernels(image):
    """Images smaller than the built sizes crop the axis kernels; larger ones pad them with
    zeros (outputs there see no taps past K): equal to the reference either way."""
    p = _params()
    st = _state(p)
    u = np.random.default_rng(sum(image)).standard_normal((2, 3) + image)
    tolerance.assert_close(sgconv.apply2d(p, u), reference.layer2d(st, u),
                           tolerance2d.layer2d_bound(st, p.config, u, "float64"), f"{image}")


def test_kernel2d_zero_pads_past_k_and_conv2d_takes_short_kernels():
    p = _params(n_scales=(1, 1))                                   # K = d = 2 per axis
    kx, ky = sgconv.kernel2d(p, (5, 4))
    assert kx.shape == (4, 3, 5) and ky.shape == (4, 3, 4)
    assert not kx[..., 2:].any() and not ky[..., 2:].any()
    u = np.random.default_rng(0).standard_normal((1, 3, 5, 4))
    full = sgconv.conv2d(u, kx, ky, p.D)
    short = sgconv.conv2d(u, kx[..., :2], ky[..., :1 + 1], p.D)
    np.testing.assert_allclose(short, full, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 2, None])
def test_channel_chunks_on_both_sides_of_the_memory_budget(chunk):
    """Chunked (forced, or chosen under a tiny budget) == all channels at once; the budget
    really splits the channels below the threshold and not above it."""
    p = _params()
    u = np.random.default_rng(2).standard_normal((2, 3, 6, 9))
    whole = sgconv.apply2d(p, u, channel_chunk=3)
    plan = _ops2d.plan2d(sgconv.backend("numpy"), p.config, (6, 9))
    per_channel = 2 * 2 * plan.x.n * plan.y.n * 8                  # B C nx ny itemsize
    assert _ops2d.choose_channel_chunk(p.config, 2, plan, 8) is None
    with sgconv.memory_budget(per_channel):
        assert _ops2d.choose_channel_chunk(p.config, 2, plan, 8) == 1
        got = sgconv.apply2d(p, u, channel_chunk=chunk)
    np.testing.assert_allclose(got, whole, rtol=1e-13, atol=1e-13)


def test_prepared_layer_equals_apply_and_checks_its_size_and_dtype():
    p = _params()
    u = np.random.default_rng(3).standard_normal((2, 3, 6, 9))
    fast = sgconv.prepare2d(p, (6, 9))
    assert fast.sizes == (6, 9) and fast.spectrum.shape[:2] == (2, 3)
    np.testing.assert_allclose(sgconv.apply2d(fast, u), sgconv.apply2d(p, u), atol=1e-13)
    with pytest.raises(ValueError, match=r"prepare2d\(params, \(6, 8\)\)"):
        sgconv.apply2d(fast, u[..., :8])
    with pytest.raises(TypeError, match="computes in float64"):
        sgconv.apply2d(fast, u.astype(np.float32))


def test_dropout_is_seeded_and_inverted():
    p = _params()
    u = np.random.default_rng(4).standard_normal((2, 3, 6, 9))
    a = sgconv.apply2d(p, u, dropout=0.5, rng=7)
    np.testing.assert_array_equal(a, sgconv.apply2d(p, u, dropout=0.5, rng=7))
    assert not np.allclose(a, sgconv.apply2d(p, u))


@pytest.mark.parametrize("u, kwargs, error, match", [
    (np.zeros((3, 6, 9)), {}, ValueError, "the 1D layer is sgconv.apply"),
    (np.zeros((1, 4, 6, 9)), {}, ValueError, "d_model=3"),
    (np.zeros((1, 6, 9, 3)), {}, ValueError, "transposed=False"),
    (np.zeros((1, 3, 0, 9)), {}, ValueError, "empty image"),
    (np.zeros((1, 3, 6, 9), dtype=np.int64), {}, TypeError, "real floating"),
    (np.zeros((1, 3, 6, 9)), {"transposed": 1}, TypeError, "transposed must be a bool"),
    (np.zeros((1, 3, 6, 9)), {"dropout": 1.0}, ValueError, "dropout"),
    (np.zeros((1, 3, 6, 9)), {"channel_chunk": 0}, ValueError, "channel_chunk"),
])
def test_apply2d_errors(u, kwargs, error, match):
    with pytest.raises(error, match=match):
        sgconv.apply2d(_params(), u, **kwargs)


def test_conv2d_and_kernel2d_errors():
    u = np.zeros((1, 3, 6, 9))
    k = np.zeros((4, 3, 6))
    with pytest.raises(ValueError, match="taps but the image has X=6"):
        sgconv.conv2d(u, np.zeros((4, 3, 7)), np.zeros((4, 3, 9)))
    with pytest.raises(ValueError, match="even number of rows"):
        sgconv.conv2d(u, np.zeros((3, 3, 6)), np.zeros((3, 3, 9)))
    with pytest.raises(ValueError, match="same rows"):
        sgconv.conv2d(u, k, np.zeros((2, 3, 9)))
    with pytest.raises(ValueError, match=r"D must have shape \(C=2, H=3\)"):
        sgconv.conv2d(u, k, np.zeros((4, 3, 9)), np.zeros((1, 3)))
    with pytest.raises(TypeError, match="Params2d"):
        sgconv.kernel2d(sgconv.init(sgconv.SGConvConfig(3, 8)), (4, 4))
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        sgconv.kernel2d(_params(), (0, 3))
    with pytest.raises(TypeError, match="1D parameters go to sgconv.apply"):
        sgconv.apply2d(sgconv.init(sgconv.SGConvConfig(3, 8)), u)
