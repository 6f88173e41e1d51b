"""Released-checkpoint layout (SPEC "Compatibility") and the .npz file."""

import numpy as np
import pytest

import reference
import sgconv


def released_layout(C, H, d, N, bidirectional, rng):
    """A state_dict with the released module's names and shapes, written from SPEC."""
    Cp = 2 * C if bidirectional else C
    sd = {"D": rng.standard_normal((C, H)).astype("float32")}
    for i in range(N):
        sd[f"kernel_list.{i}"] = rng.standard_normal((Cp, H, d)).astype("float32")
    sd["multiplier"] = np.linspace(1.5, 3.0, H, dtype="float32").reshape(1, H, 1)
    sd["kernel_norm"] = rng.uniform(0.5, 2.0, (Cp, H, 1)).astype("float32")
    sd["kernel_norm_initialized"] = np.asarray(True)
    sd["output_linear.weight"] = rng.standard_normal((H, C * H)).astype("float32")
    sd["output_linear.bias"] = rng.standard_normal((H,)).astype("float32")
    return sd


@pytest.fixture(autouse=True)
def numpy_backend():
    with sgconv.using("numpy"):
        yield


@pytest.mark.parametrize("bidirectional", [False, True])
def test_state_dict_round_trip_is_exact(bidirectional):
    rng = np.random.default_rng(0)
    sd = released_layout(2, 3, 4, 5, bidirectional, rng)
    params = sgconv.from_state_dict(sd, decay_min=1.5, decay_max=3.0)
    cfg = params.config
    assert (cfg.d_model, cfg.channels, cfg.kernel_dim, cfg.num_scales, cfg.bidirectional) == \
        (3, 2, 4, 5, bidirectional)
    assert params.dtype == "float32"
    back = sgconv.to_state_dict(params)
    assert set(back) == set(sd)
    for key, value in sd.items():
        assert back[key].shape == value.shape, key
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_kernel_uses_stored_z():
    rng = np.random.default_rng(1)
    sd = released_layout(1, 2, 4, 3, False, rng)
    params = sgconv.from_state_dict(sd, dtype="float64")
    K = params.config.kernel_length
    sd64 = {key: np.asarray(v, dtype=np.float64) for key, v in sd.items()}
    # The reference divides by the stored kernel_norm: Z is read, not recomputed.
    np.testing.assert_allclose(sgconv.kernel(params, K), reference.kernel(sd64, K), rtol=1e-12)
    norms = np.linalg.norm(sgconv.kernel(params, K), axis=-1)
    assert np.abs(norms - 1.0).min() > 0.1  # the stored Z is not the weights' norm


def test_uninitialised_checkpoint_gets_z_from_its_weights():
    rng = np.random.default_rng(2)
    sd = released_layout(1, 2, 4, 3, True, rng)
    sd["kernel_norm_initialized"] = np.asarray(False)
    sd["kernel_norm"] = np.ones_like(sd["kernel_norm"])
    params = sgconv.from_state_dict(sd, dtype="float64")
    norms = np.linalg.norm(sgconv.kernel(params, params.config.kernel_length), axis=-1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-12)


def test_state_dict_from_torch_tensors():
    torch = pytest.importorskip("torch")
    sd = released_layout(1, 2, 4, 2, False, np.random.default_rng(3))
    params = sgconv.from_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()})
    assert params.backend == "numpy"
    np.testing.assert_array_equal(params.kernels[1], sd["kernel_list.1"])


def test_bad_state_dicts_say_what_is_wrong():
    sd = released_layout(1, 2, 4, 2, False, np.random.default_rng(4))
    with pytest.raises(ValueError, match=r"missing \['output_linear.bias'\]"):
        sgconv.from_state_dict({k: v for k, v in sd.items() if k != "output_linear.bias"})
    with pytest.raises(ValueError, match=r"unexpected keys \['extra'\]"):
        sgconv.from_state_dict({**sd, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match=r"'kernel_list.1' has shape \(1, 2, 5\), expected \(1, 2, 4\)"):
        sgconv.from_state_dict({**sd, "kernel_list.1": np.zeros((1, 2, 5))})
    with pytest.raises(ValueError, match=r"d_model=5 was given but the arrays say d_model=2"):
        sgconv.from_state_dict(sd, d_model=5)
    with pytest.raises(ValueError, match=r"n_scales=3 was given but the arrays hold 2"):
        sgconv.from_state_dict(sd, n_scales=3)
    with pytest.raises(TypeError, match=r"unknown configuration keywords \['width'\]"):
        sgconv.from_state_dict(sd, width=3)
    with pytest.raises(ValueError, match=r"'multiplier' has shape \(2,\), expected \(1, 2, 1\)"):
        sgconv.from_state_dict({**sd, "multiplier": np.ones(2)})
    with pytest.raises(TypeError, match="expects a mapping"):
        sgconv.from_state_dict([1, 2])


@pytest.mark.parametrize("learnable", [False, True])
def test_npz_round_trip_keeps_config_and_outputs(tmp_path, learnable):
    cfg = sgconv.SGConvConfig(d_model=3, l_max=40, kernel_dim=4, channels=2, bidirectional=True,
                              decay_min=1.5, decay_max=2.5, learnable_decay=learnable)
    params = sgconv.init(cfg, seed=7, dtype="float64")
    path = tmp_path / "layer.npz"
    sgconv.save(path, params)
    with np.load(path, allow_pickle=False) as f:  # readable without pickle
        assert "__sgconv_config__" in f.files
    loaded = sgconv.load(path)
    assert loaded.config == cfg and loaded.dtype == "float64"
    u = np.random.default_rng(0).standard_normal((2, 3, 50))
    np.testing.assert_array_equal(sgconv.apply(loaded, u), sgconv.apply(params, u))


def test_load_rejects_foreign_npz(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(ValueError, match="not an sgconv parameter file"):
        sgconv.load(path)


def test_same_seed_same_numbers_and_layout():
    cfg = sgconv.SGConvConfig(d_model=4, l_max=64, kernel_dim=8, channels=3)
    a, b = sgconv.init(cfg, seed=3, dtype="float64"), sgconv.init(cfg, seed=3, dtype="float64")
    c = sgconv.init(cfg, seed=4, dtype="float64")
    for x, y, z in zip(a.kernels, b.kernels, c.kernels):
        np.testing.assert_array_equal(x, y)
        assert not np.array_equal(x, z)
    assert a.kernels[0].shape == (3, 4, 8) and a.D.shape == (3, 4)
    assert a.out_weight.shape == (4, 12) and a.out_bias.shape == (4,)
    assert a.kernel_norm.shape == (3, 4) and a.multiplier.shape == (4,)
    bound = 1 / np.sqrt(12)  # nn.Linear(C*H, H) bounds
    assert np.abs(a.out_weight).max() <= bound and np.abs(a.out_bias).max() <= bound
    f32 = sgconv.init(cfg, seed=3)
    assert f32.dtype == "float32"
    np.testing.assert_array_equal(f32.kernels[2], a.kernels[2].astype("float32"))
