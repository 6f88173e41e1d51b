"""Step-by-step decoding (sgconv._decode, sgconv.decoder / prefill / step): the run
decomposition against the kernel itself, the decoder's outputs against the float64
reference (tolerance rule of conformance/tolerance.py), the state, and the errors.

The backends' own front ends are in test_decode_torch.py and test_decode_jax.py; the
conformance property (every backend, drawn examples, the long horizon) in
conformance/test_decoding.py.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import reference
import sgconv
from conformance import oracle
from conformance.tolerance import assert_close, layer_bound
from sgconv import _decode

BK = sgconv.backend("numpy")


def _config(**kw):
    base = dict(d_model=3, l_max=40, channels=2, kernel_dim=5, decay_min=0.7, decay_max=2.5)
    base.update(kw)
    return sgconv.SGConvConfig(**base)


def _trained(config, dtype="float64", seed=0):
    """Parameters moved away from their initial values (Z kept, as after training)."""
    params = sgconv.init(config, seed=seed, dtype=dtype, backend="numpy")
    rng = np.random.default_rng(seed + 1)
    kernels = tuple((0.5 * w + rng.standard_normal(w.shape)).astype(dtype)
                    for w in params.kernels)
    return params.replace(kernels=kernels)


def _reconstruct(dec, length):
    """The kernel k[:length] (P, C, H runs -> (length, C, H)) rebuilt from the decoder's
    runs: k[a_p + r] = alpha_p + beta_p r, D taken back out of lag 0."""
    geometry = dec.runs
    alpha, beta = np.asarray(dec.alpha), np.asarray(dec.beta)
    k = np.zeros((geometry.span,) + alpha.shape[1:])
    for p, (a, l) in enumerate(zip(geometry.starts, geometry.lengths)):
        k[a:a + l] = alpha[p] + beta[p] * np.arange(l)[:, None, None]
    k[0] -= np.asarray(dec.arrays["D"])
    return k[:length]


# --- the run decomposition ---------------------------------------------------------------

@pytest.mark.parametrize("N", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("d", [2, 3, 5, 8])
def test_run_count_is_the_spec_formula(N, d):
    """Linear: P = 2d + (N-2)(d+1) (N >= 2), d (N = 1); nearest: N d.  Contiguous, from 0 to K."""
    for interpolation, expected in (("linear", d if N == 1 else 2 * d + (N - 2) * (d + 1)),
                                    ("nearest", N * d)):
        cfg = _config(kernel_dim=d, n_scales=N, interpolation=interpolation)
        r = _decode.runs(cfg)
        assert r.count == expected, (interpolation, d, N, r.count)
        assert r.starts[0] == 0 and np.all(r.starts[1:] == r.ends[:-1])
        assert r.ends[-1] == r.span == cfg.kernel_length
        assert r.taps == (d if N == 1 else 2 * d + (N >= 3 and interpolation == "linear"))


def test_runs_match_spec_description():
    """Scale i >= 2 (s = 2^(i-1)): s/2 clamped taps of w[0], d - 1 stretches of s, s/2 taps
    of w[d-1], starting where the scale starts."""
    d, N = 4, 5
    cfg = _config(kernel_dim=d, n_scales=N)
    r = _decode.runs(cfg)
    offset = 2 * d
    for i in range(2, N):
        s = 2 ** (i - 1)
        sel = np.flatnonzero(r.scale == i)
        assert list(r.lengths[sel]) == [s // 2] + [s] * (d - 1) + [s // 2]
        assert r.starts[sel[0]] == offset
        assert (r.lo[sel[0]], r.slope[sel[0]]) == (0, 0.0)            # constant w[0]
        assert r.lo[sel[-1]] == r.hi[sel[-1]] == d - 1                 # constant w[d-1]
        assert np.allclose(r.slope[sel[1:-1]], 1.0 / s)
        offset += d * s


def test_d_equal_one_has_one_run_per_scale():
    r = _decode.runs(_config(kernel_dim=1, n_scales=4))
    assert r.count == 4 and list(r.lengths) == [1, 1, 2, 4]


@pytest.mark.parametrize("length", [1, 7, 17, 40])
def test_runs_cut_at_length(length):
    """L < K cuts the runs at L: fewer of them, the last one shorter."""
    cfg = _config(kernel_dim=5, n_scales=4)                            # K = 40
    whole, cut = _decode.runs(cfg), _decode.runs(cfg, length)
    assert cut.span == length and cut.ends[-1] == length
    assert cut.count == np.count_nonzero(whole.starts < length)
    assert np.all(cut.lengths <= whole.lengths[:cut.count])


@pytest.mark.parametrize("interpolation", ["linear", "nearest"])
@pytest.mark.parametrize("N", [1, 2, 4, 6])
def test_runs_rebuild_the_kernel(interpolation, N):
    """alpha_p + beta_p r on every run equals sgconv.kernel and the float64 reference
    kernel (float64 weights: agreement to a few ulps of the kernel's scale)."""
    cfg = _config(kernel_dim=5, n_scales=N, interpolation=interpolation)
    params = _trained(cfg)
    dec = sgconv.decoder(params)
    K = cfg.kernel_length
    rebuilt = np.moveaxis(_reconstruct(dec, K), 0, -1)                # (C, H, K)
    k = np.asarray(sgconv.kernel(params, K))
    ref = reference.kernel(oracle.params_state(params, BK), K, interpolation)
    scale = np.abs(ref).max()
    assert np.abs(rebuilt - k).max() <= 64 * np.finfo(float).eps * scale
    assert np.abs(rebuilt - ref).max() <= 64 * np.finfo(float).eps * scale
    # the check can fail: the kernel rebuilt one lag off is far outside it
    wrong = np.roll(rebuilt, 1, axis=-1)
    assert np.abs(wrong - ref).max() > 1e3 * 64 * np.finfo(float).eps * scale


# --- the decoder against the reference ---------------------------------------------------

def _decode_all(dec, u, prefix, transposed=True):
    """prefill u[..., :prefix] (or an empty state) then step: (B, H, L) in u's dtype."""
    parts = []
    if prefix:
        x = u[..., :prefix] if transposed else u[..., :prefix].swapaxes(1, 2)
        y, state = sgconv.prefill(dec, x, transposed=transposed)
        parts.append(y if transposed else y.swapaxes(1, 2))
    else:
        state = sgconv.decode_state(dec, u.shape[0])
    for t in range(prefix, u.shape[-1]):
        y, state = sgconv.step(dec, state, u[..., t])
        parts.append(y[..., None])
    return np.concatenate(parts, axis=-1), state


CASES = [
    dict(),                                                             # linear, N from l_max
    dict(interpolation="nearest"),
    dict(learnable_decay=True),                                         # the O(K) dot product
    dict(kernel_dim=1, l_max=8),                                        # d = 1
    dict(n_scales=1, l_max=3),                                          # single taps only
    dict(channels=1, kernel_dim=8, l_max=64, decay_min=2.0, decay_max=2.0),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_prefill_then_steps_equal_the_reference(case, dtype):
    cfg = _config(**CASES[case])
    params = _trained(cfg, dtype, seed=case)
    state = oracle.params_state(params, BK)
    K = cfg.kernel_length
    L = 2 * K + 7                                                       # past K: zero lags
    u = np.random.default_rng(case).standard_normal((3, cfg.d_model, L)).astype(dtype)
    expected = reference.layer(state, u, interpolation=cfg.interpolation)
    bound = layer_bound(state, cfg, u, dtype)
    dec = sgconv.decoder(params)
    for prefix in (0, 1, K - 1, K + 3, L):
        y, final = _decode_all(dec, u, prefix)
        assert y.dtype == np.dtype(dtype)
        assert int(final.position) == L
        what = f"case {CASES[case]} {dtype} prefix {prefix} of L={L}"
        if prefix:
            assert_close(y[..., :prefix], expected[..., :prefix],
                         layer_bound(state, cfg, u[..., :prefix], dtype), what + " (prefill)")
        assert_close(y[..., prefix:], expected[..., prefix:], bound[..., prefix:],
                     what + " (steps)")


def test_layouts_and_half_precision():
    cfg = _config()
    params = _trained(cfg, "float32")
    u = np.random.default_rng(1).standard_normal((2, cfg.d_model, 30)).astype("float32")
    a, _ = _decode_all(sgconv.decoder(params), u, 11, transposed=True)
    b, _ = _decode_all(sgconv.decoder(params), u, 11, transposed=False)
    assert np.array_equal(a, b)
    # float16 input: computed in float32, returned in float16
    y, state = sgconv.prefill(params, u[..., :5].astype("float16"))
    y_t, state = sgconv.step(params, state, u[..., 5].astype("float16"))
    assert y.dtype == y_t.dtype == np.float16
    assert state.history.dtype == np.float32 and state.sums.dtype == np.float64


def test_streams_are_independent():
    """Each of B streams decodes as it would alone."""
    cfg = _config()
    dec = sgconv.decoder(_trained(cfg, "float64"))
    u = np.random.default_rng(2).standard_normal((3, cfg.d_model, 25))
    together, _ = _decode_all(dec, u, 6)
    for b in range(3):
        alone, _ = _decode_all(dec, u[b:b + 1], 6)
        assert np.array_equal(alone[0], together[b])


def test_state_shapes_dtypes_and_memory():
    cfg = sgconv.SGConvConfig(d_model=4, l_max=256, kernel_dim=8)      # N = 6, K = 256
    dec = sgconv.decoder(sgconv.init(cfg, seed=0))
    P, T = dec.runs.count, dec.taps
    assert P == 2 * 8 + 4 * 9 and T == 2 * 8 + 1
    state = sgconv.decode_state(dec, 5)
    assert state.history.shape == (257, 5, 4) and state.history.dtype == np.float32
    assert state.sums.shape == (2, P - T, 5, 4) and state.sums.dtype == np.float64
    assert state.sums_lo is None and int(state.position) == 0 and state.batch == 5
    assert state.nbytes == 257 * 5 * 4 * 4 + 2 * (P - T) * 5 * 4 * 8 + 8
    assert dec.alpha.shape == dec.beta.shape == (P, 1, 4)
    # float64 layers keep compensated double words (a low word per sum)
    dec64 = sgconv.decoder(sgconv.init(cfg, seed=0, dtype="float64"))
    state64 = sgconv.decode_state(dec64, 2)
    assert dec64.compensated and state64.sums_lo.shape == state64.sums.shape


def test_step_updates_state_in_place_and_returns_it():
    cfg = _config()
    dec = sgconv.decoder(sgconv.init(cfg, seed=0))
    state = sgconv.decode_state(dec, 1)
    _, new = sgconv.step(dec, state, np.ones((1, cfg.d_model), np.float32))
    assert new.history is state.history and int(new.position) == 1


# --- errors ------------------------------------------------------------------------------

def test_bidirectional_raises():
    params = sgconv.init(_config(bidirectional=True), seed=0)
    for call in (lambda: sgconv.decoder(params),
                 lambda: sgconv.prefill(params, np.zeros((1, 3, 4), np.float32)),
                 lambda: sgconv.step(params, None, np.zeros((1, 3), np.float32))):
        with pytest.raises(ValueError, match="bidirectional"):
            call()


def test_bad_arguments_raise_clear_errors():
    cfg = _config()
    params = sgconv.init(cfg, seed=0)
    dec = sgconv.decoder(params)
    _, state = sgconv.prefill(dec, np.zeros((2, 3, 5), np.float32))
    with pytest.raises(TypeError, match="Decoder .* or sgconv.Params"):
        sgconv.step("params", state, np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="DecodeState"):
        sgconv.step(dec, (1, 2), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"u_t must be one time step of shape \(B=2, H=3\)"):
        sgconv.step(dec, state, np.zeros((2, 3, 1), np.float32))
    with pytest.raises(ValueError, match=r"\(B=2, H=3\)"):
        sgconv.step(dec, state, np.zeros((1, 3), np.float32))
    with pytest.raises(TypeError, match="u_t must be a real floating array"):
        sgconv.step(dec, state, np.zeros((2, 3), np.int64))
    with pytest.raises(TypeError, match="computes in float32, but the input computes in "
                                        "float64"):
        sgconv.step(dec, state, np.zeros((2, 3), np.float64))
    other = sgconv.decoder(sgconv.init(_config(l_max=80), seed=0))
    with pytest.raises(ValueError, match="made for another layer"):
        sgconv.step(other, state, np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="batch must be an int >= 1"):
        sgconv.decode_state(dec, 0)
    with pytest.raises(ValueError, match="u must have 3 dimensions"):
        sgconv.prefill(dec, np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="d_model=3"):
        sgconv.prefill(dec, np.zeros((1, 4, 5), np.float32))


def test_generic_functions_run_on_jax_eagerly():
    """sgconv.decode_state / step with the JAX backend active, no jit (every operation is
    dispatched on its own, seconds of compilation: prefill is left to sgconv.jax's jitted
    one, test_decode_jax.py): equal to the reference."""
    jax = pytest.importorskip("jax")
    cfg = sgconv.SGConvConfig(d_model=2, l_max=8, kernel_dim=2)       # N = 3: one run of 2
    u = np.random.default_rng(3).standard_normal((1, 2, 4)).astype("float32")
    with sgconv.using("jax"):
        params = sgconv.init(cfg, seed=0, backend="jax")
        dec = sgconv.decoder(params)
        state, ys = sgconv.decode_state(dec, 1), []
        for t in range(4):
            y, state = sgconv.step(dec, state, jax.numpy.asarray(u[..., t]))
            ys.append(np.asarray(y)[..., None])
        ref_state = oracle.params_state(params, sgconv.backend("jax"))
    y = np.concatenate(ys, -1)
    assert_close(y, reference.layer(ref_state, u), layer_bound(ref_state, cfg, u, "float32"),
                 "sgconv.step on the jax backend, eager")


def test_import_sgconv_still_imports_no_framework():
    code = ("import sys, sgconv; sgconv.decoder; "
            "print(sorted(m for m in ('torch', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
