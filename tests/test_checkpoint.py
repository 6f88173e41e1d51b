"""Released-checkpoint layout (SPEC "Compatibility") and the .npz file."""

import io
import os
import zipfile

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


# --- files that load cannot use --------------------------------------------------------------

def _good_entries(tmp_path) -> dict:
    """The entries of a file written by sgconv.save (config JSON included), as a dict."""
    cfg = sgconv.SGConvConfig(d_model=3, l_max=40, kernel_dim=4)
    written = sgconv.save(tmp_path / "good.npz", sgconv.init(cfg, seed=1))
    with np.load(written, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _with_config(entries, text) -> dict:
    return {**entries, "__sgconv_config__": np.asarray(text)}


def _write_bytes(data):
    return lambda path, entries: path.write_bytes(data)


def _savez(change):
    return lambda path, entries: np.savez(path, **change(entries))


def _zip_of_text(path, entries):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "hello")


def _good_file_cut(keep):
    def write(path, entries):
        np.savez(path, **entries)
        data = path.read_bytes()
        path.write_bytes(keep(data))
    return write


def _flip_inside_d(data: bytes) -> bytes:
    """One byte of the stored 'D' array's values flipped (the zip's CRC no longer matches)."""
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo("D.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)  # the .npy bytes
    at = start + len(_npy_bytes(np.zeros((1, 3), np.float32))) - 1   # its last value byte
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


BAD_FILES = {
    # name: (how to write it, what the message must say)
    "random bytes": (_write_bytes(bytes(range(7, 250))), r"is not an sgconv parameter file.*"
                     r"\.npz \(zip\) archive .* starts with"),
    "empty": (_write_bytes(b""), r"the file is empty"),
    "a .npy array": (lambda p, e: p.write_bytes(_npy_bytes(np.zeros(3)))," single NumPy array"),
    "truncated": (_good_file_cut(lambda d: d[:len(d) // 2]), r"truncated or corrupted"),
    "corrupted": (_good_file_cut(_flip_inside_d), r"truncated or corrupted.*CRC"),
    "a foreign zip": (_zip_of_text, r"no '__sgconv_config__' entry \(its entries: notes.txt\)"),
    "an npz without config": (_savez(lambda e: {"a": np.zeros(3)}),
                              r"no '__sgconv_config__' entry \(its entries: a\).*from_state_dict"),
    "a pickled entry": (_savez(lambda e: {**e, "extra": np.array([{"x": 1}], dtype=object)}),
                        r"entry 'extra' holds Python objects .* without unpickling"),
    "malformed JSON": (_savez(lambda e: _with_config(e, '{"d_model": 3,')),
                       r"stored configuration is not valid JSON"),
    "JSON not an object": (_savez(lambda e: _with_config(e, "[3, 40]")),
                           r"should be a JSON object of SGConvConfig fields, got list"),
    "config not a string": (_savez(lambda e: {**e, "__sgconv_config__": np.asarray(3)}),
                            r"should be a JSON string, but it is a int64 array"),
    "unknown config field": (_savez(lambda e: _with_config(e, '{"d_model": 3, "l_max": 40, '
                                                                '"width": 9}')),
                             r"unknown fields \['width'\]"),
    "invalid config value": (_savez(lambda e: _with_config(e, '{"d_model": 0, "l_max": 40}')),
                             r"stored configuration is invalid: .*d_model"),
    "config contradicts arrays": (
        _savez(lambda e: _with_config(e, '{"d_model": 16, "l_max": 40, "kernel_dim": 4}')),
        r"its stored configuration says d_model=16 but the arrays say d_model=3"),
    "arrays of the wrong shape": (_savez(lambda e: {**e, "output_linear.bias": np.zeros(5)}),
                                  r"'output_linear.bias' has shape \(5,\), expected \(3,\)"),
    "integer arrays": (_savez(lambda e: {**e, "D": np.zeros((1, 3), dtype=np.int64)}),
                       r"entry 'D' has dtype int64; .* floating-point"),
}


def _npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_load_of_a_bad_file_raises_checkpoint_error_naming_it(tmp_path, name):
    write, message = BAD_FILES[name]
    path = tmp_path / "bad.npz"
    write(path, _good_entries(tmp_path))
    with pytest.raises(sgconv.CheckpointError, match=message) as caught:
        sgconv.load(path)
    text = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert repr(str(path)) in text                                      # names the file
    # never NumPy's advice to pass allow_pickle (load takes no such argument), never a blame
    # on arguments the caller did not pass, and no bare zipfile/NumPy exception escapes
    assert "allow_pickle" not in text and "was given" not in text, text
    assert type(caught.value) is sgconv.CheckpointError


def test_the_good_file_of_those_tests_loads(tmp_path):
    """The bad files above are each one change away from this one, which loads."""
    path = tmp_path / "again.npz"
    np.savez(path, **_good_entries(tmp_path))
    assert sgconv.load(path).config.d_model == 3


def test_save_appends_npz_and_load_finds_it(tmp_path):
    params = sgconv.init(sgconv.SGConvConfig(d_model=2, l_max=16, kernel_dim=4), seed=0)
    written = sgconv.save(tmp_path / "layer", params)
    assert written == str(tmp_path / "layer.npz") and os.path.exists(written)
    assert not os.path.exists(tmp_path / "layer")
    for name in ("layer", "layer.npz"):
        loaded = sgconv.load(tmp_path / name)
        np.testing.assert_array_equal(loaded.D, params.D)
    assert sgconv.save(str(tmp_path / "b.npz"), params) == str(tmp_path / "b.npz")


def test_load_of_a_missing_file_says_which_paths_it_tried(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no sgconv parameter file at '.*nowhere' or "
                                                r"'.*nowhere.npz'"):
        sgconv.load(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"at '.*gone.npz'$"):
        sgconv.load(tmp_path / "gone.npz")


def test_load_arguments_that_are_the_callers_are_not_blamed_on_the_file(tmp_path):
    params = sgconv.init(sgconv.SGConvConfig(d_model=2, l_max=16, kernel_dim=4), seed=0)
    path = sgconv.save(tmp_path / "ok", params)
    with pytest.raises(TypeError, match="parameter dtype must be one of") as caught:
        sgconv.load(path, dtype="int8")
    assert not isinstance(caught.value, sgconv.CheckpointError)
    with pytest.raises(ValueError, match="nope") as caught:
        sgconv.load(path, backend="nope")
    assert not isinstance(caught.value, sgconv.CheckpointError)


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
