"""The JAX backend and sgconv.jax: accuracy against the float64 reference, jit/grad/vmap,
no retracing, pytrees, dtypes, dropout keys, interchange, errors, and jax.config left alone.

Shapes are kept tiny (H <= 6, L <= 300) so that the reference's direct O(L^2) convolution
and the jit compilations (a few dozen small programs) stay within seconds on 2 cores.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import reference  # noqa: E402
import sgconv  # noqa: E402
import sgconv.jax as sgj  # noqa: E402
from sgconv import _ops  # noqa: E402
from sgconv.backends.jax import hartley_irfft  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BK = sgconv.backend("jax")
EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


# --- helpers --------------------------------------------------------------------------------

@pytest.fixture
def x64():
    """JAX's 64-bit mode inside this test only (the context manager restores it)."""
    assert not jax.config.jax_enable_x64, "a previous test left jax_enable_x64 switched on"
    with jax.enable_x64(True):
        yield
    assert not jax.config.jax_enable_x64


def ref_state(params):
    """sgconv.Params (any backend) -> the reference's float64 state dict."""
    return {k: np.asarray(BK.to_numpy(v) if BK.is_native(v) else v, dtype=np.float64)
            for k, v in sgconv.to_state_dict(params).items()}


def ref_layer(params, u, transposed=True):
    cfg = params.config
    return reference.layer(ref_state(params), np.asarray(u, np.float64), cfg.bidirectional,
                           transposed, cfg.interpolation)


def layer_error_bound(params, u, dtype, transposed=True):
    """A bound on ||y - y_ref||_F for the layer computed in ``dtype`` by FFT.

    Derivation (per SPEC "Precision"): an FFT convolution of length n in precision eps
    computes row (b, c, h) with ||delta||_2 <= c eps log2(n) ||u[b,h]||_2 ||k^[c,h]||_inf,
    where k^ is the spectrum of the row's kernel (D folded into lag 0, anti-causal taps
    included) and ||k^||_inf <= ||k0||_1 + |D| + ||k1||_1.  The factor c = 8 covers the
    rfft, the irfft, the spectral product and the kernel construction (each contributing
    a unit-size constant), and N (the number of scales, i.e. powers of m) is added to
    log2(n) for the kernel's own rounding.  GELU is 1.13-Lipschitz and the mixing linear
    multiplies by at most ||W||_2; its own rounding adds C*H eps ||W||_F ||GELU(y)||_F.
    The float64 reference's direct summation adds L eps64 ||u|| ||k||_1 per row.
    """
    cfg = params.config
    eps = EPS[dtype]
    st = ref_state(params)
    u = np.asarray(u, np.float64)
    if not transposed:
        u = u.swapaxes(-1, -2)
    B, H, L = u.shape
    C = cfg.channels
    k = reference.kernel(st, L, cfg.interpolation)                     # (C', H, L)
    D = st["D"]                                                        # (C, H)
    W = st["output_linear.weight"]                                     # (H, C*H)
    spec = np.abs(k[:C]).sum(-1) + np.abs(D)                           # (C, H)
    if cfg.bidirectional:
        spec = spec + np.abs(k[C:]).sum(-1)
    taps = min(L, cfg.kernel_length)
    n = BK.next_fast_len(L + taps)                                     # >= every plan's n
    u_norm = np.linalg.norm(u, axis=-1)                                # (B, H)
    per_row = (8 * eps * (math.log2(max(n, 2)) + cfg.num_scales) + L * EPS["float64"]) \
        * u_norm[:, None, :] * spec[None]                              # (B, C, H)
    conv_err = np.sqrt((per_row ** 2).sum())
    y = reference.conv(u, k, D, cfg.bidirectional).reshape(B, C * H, L)
    g = reference.gelu(y)
    mix_err = C * H * eps * np.linalg.norm(W) * np.linalg.norm(g) + eps * np.linalg.norm(W, 2) \
        * np.linalg.norm(g)
    return np.linalg.norm(W, 2) * 1.13 * conv_err + mix_err


def assert_layer_close(params, u, y, dtype, transposed=True, factor=1.0):
    """Assert ||y - y_ref||_F <= factor * bound, and that the bound is far below ||y_ref||."""
    want = ref_layer(params, u, transposed)
    got = np.asarray(y, np.float64)
    assert got.shape == want.shape
    err = np.linalg.norm(got - want)
    bound = factor * layer_error_bound(params, u, dtype, transposed)
    context = (f"backend=jax dtype={dtype} config={params.config} u.shape={np.shape(u)} "
               f"err={err:.3g} bound={bound:.3g} |y_ref|={np.linalg.norm(want):.3g}")
    # The check only means something if a wrong answer (error ~ |y_ref|) would fail it.
    assert bound < 1e-3 * np.linalg.norm(want), "tolerance too loose to detect errors: " + context
    assert err <= bound, context


def data(shape, seed, dtype="float32"):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# A spread of configurations: causal/bidirectional, heads, interpolation, learnable decay,
# decay ranges, and lengths that are 1, prime, odd, < K, == K and > K.
CONFIGS = [
    (dict(d_model=4, l_max=64, kernel_dim=8), 37),                                # L < K
    (dict(d_model=3, l_max=40, kernel_dim=8, channels=2, bidirectional=True), 64),  # L == K
    (dict(d_model=5, l_max=20, kernel_dim=4, decay_min=1.5, decay_max=3.0), 97),  # L > K
    (dict(d_model=4, l_max=50, kernel_dim=8, interpolation="nearest"), 1),
    (dict(d_model=2, l_max=64, kernel_dim=8, learnable_decay=True, decay_min=0.5,
          decay_max=1.0, channels=2), 61),
]


# --- the backend ----------------------------------------------------------------------------

def test_next_fast_len_is_the_smallest_7_smooth_length():
    def smooth(m):
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        return m == 1
    for n in list(range(1, 2000)) + [32767, 65537, 100003]:
        got = BK.next_fast_len(n)
        assert got >= n and smooth(got), n
        assert not any(smooth(m) for m in range(n, got)), n
    assert BK.next_fast_len(32767) == 32768


@pytest.mark.parametrize("n", [1, 2, 3, 8, 15, 16, 17, 63, 64, 1000, 1001])
def test_hartley_irfft_equals_irfft(x64, n):
    """The CPU inverse FFT (forward rfft + Hartley folds) is irfft, cropped, for any complex
    half spectrum: even and odd n, every crop, imaginary parts of bin 0 / Nyquist ignored."""
    F = n // 2 + 1
    rng = np.random.default_rng(n)
    x = rng.standard_normal((3, F)) + 1j * rng.standard_normal((3, F))   # not Hermitian-clean
    want_full = np.fft.irfft(x, n=n, axis=-1)                            # (3, n)
    # FFT rounding: each output sums F terms of size <= 2|x_k|/n over log2(n) stages.
    tol = 8 * EPS["float64"] * max(math.log2(n), 1) * 2 * np.abs(x).sum(-1).max() / n
    for keep in sorted({1, max(n // 2, 1), F, n}):
        got = np.asarray(hartley_irfft(jnp, jnp.asarray(x), n, keep))
        assert got.shape == (3, keep) and got.dtype == np.float64
        np.testing.assert_allclose(got, want_full[:, :keep], rtol=0, atol=tol)
        got_bk = np.asarray(jax.jit(lambda v, keep=keep: BK.irfft_head(v, n, keep))(x))
        np.testing.assert_allclose(got_bk, want_full[:, :keep], rtol=0, atol=tol)


def test_cpu_programs_take_the_forward_fft_path():
    """On CPU the lowered layer has no inverse real FFT: the Hartley path was chosen."""
    if jax.default_backend() != "cpu":
        pytest.skip(f"JAX's default backend is {jax.default_backend()}, not cpu")
    params = sgj.init(0, SMALL)
    u = jnp.asarray(data((2, 3, 40), 1), jnp.float32)
    hlo = jax.jit(lambda p, x: sgj.apply(p, x)).lower(params, u).compile().as_text()
    assert "fft_type=RFFT" in hlo and "IRFFT" not in hlo


def test_backend_reports_itself():
    assert BK.unavailable_reason() is None and BK.differentiable
    assert BK.version().startswith(f"jax {jax.__version__}")
    assert BK.device_description().startswith(jax.default_backend())


def test_float64_numpy_without_x64_is_refused_not_rounded():
    with pytest.raises(TypeError, match="jax_enable_x64"):
        BK.asarray(np.ones((2, 3)))
    with pytest.raises(TypeError, match="jax_enable_x64"):
        BK.cast(jnp.ones(3), "float64")
    # Asking for float32 explicitly is a conversion the caller chose: allowed.
    x = BK.asarray(np.full(3, 1.0 + 2.0 ** -40), dtype="float32")
    assert x.dtype == jnp.float32 and np.all(np.asarray(x) == np.float32(1.0))


def test_missing_jax_names_the_extra():
    code = ("import sys; sys.modules['jax'] = None\n"
            "import sgconv\n"
            "try:\n    sgconv.backend('jax')\nexcept sgconv.BackendUnavailableError as e:\n"
            "    print('backend:', e)\n"
            "try:\n    import sgconv.jax\nexcept sgconv.BackendUnavailableError as e:\n"
            "    print('module:', e)\n"
            "print(sgconv.backend('numpy').name)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("backend:") and "pip install 'sgconv[jax]'" in lines[0]
    assert lines[1].startswith("module:") and "pip install 'sgconv[jax]'" in lines[1]
    assert lines[2] == "numpy"                # the rest of sgconv still works


def test_library_leaves_jax_config_as_found():
    # In a fresh process: snapshot every option, import sgconv, use the backend and
    # sgconv.jax (init, apply, grad, the x64 refusal), snapshot again.
    code = (
        "import jax, numpy as np\n"
        "snap = lambda: {k: repr(getattr(jax.config, k, v)) for k, v in jax.config.values.items()}\n"
        "before = snap()\n"
        "import sgconv, sgconv.jax as sgj\n"
        "cfg = sgconv.SGConvConfig(d_model=2, l_max=16, kernel_dim=4)\n"
        "p = sgj.init(0, cfg)\n"
        "u = np.ones((1, 2, 9), np.float32)\n"
        "jax.grad(lambda p: sgj.apply(p, u).sum())(p)\n"
        "try:\n    sgj.apply(p, u.astype(np.float64))\nexcept TypeError:\n    pass\n"
        "after = snap()\n"
        "print([k for k in before if before[k] != after[k]])\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


# --- accuracy against the reference ---------------------------------------------------------

@pytest.mark.parametrize("cfg_kwargs, L", CONFIGS)
def test_layer_matches_reference_float32(cfg_kwargs, L):
    cfg = sgconv.SGConvConfig(**cfg_kwargs)
    params = sgj.init(3, cfg)
    u = data((2, cfg.d_model, L), seed=L)
    y = sgj.apply(params, u)
    assert y.dtype == jnp.float32 and y.shape == (2, cfg.d_model, L)
    assert_layer_close(params, u, y, "float32")


def test_layer_matches_reference_transposed_and_overlap_add():
    cfg = sgconv.SGConvConfig(d_model=3, l_max=16, kernel_dim=4, bidirectional=True)
    params = sgj.init(5, cfg)
    u = data((2, 3, 200), seed=1)                                      # K = 16 << L = 200
    for block_size in (None, 0, 24):
        assert_layer_close(params, u, sgj.apply(params, u, block_size=block_size), "float32")
    u_blh = np.ascontiguousarray(u.swapaxes(1, 2))                     # (B, L, H)
    y = sgj.apply(params, u_blh, transposed=False)
    assert y.shape == (2, 200, 3)
    assert_layer_close(params, u_blh, y, "float32", transposed=False)


@pytest.mark.parametrize("cfg_kwargs, L", [CONFIGS[1], CONFIGS[4]])
def test_layer_matches_reference_float64_under_x64(x64, cfg_kwargs, L):
    cfg = sgconv.SGConvConfig(**cfg_kwargs)
    params = sgj.init(7, cfg, jnp.float64)
    u = data((2, cfg.d_model, L), seed=2, dtype="float64")
    y = sgj.apply(params, u)
    assert y.dtype == jnp.float64
    assert_layer_close(params, u, y, "float64")


@pytest.mark.parametrize("cfg_kwargs, L", CONFIGS[:3] + CONFIGS[4:])
def test_kernel_matches_reference(cfg_kwargs, L):
    cfg = sgconv.SGConvConfig(**cfg_kwargs)
    params = sgj.init(11, cfg)
    got = np.asarray(sgj.kernel(params, L), np.float64)
    st = ref_state(params)
    want = reference.kernel(st, L, cfg.interpolation)                  # (C', H, L)
    assert got.shape == want.shape == (cfg.kernel_rows, cfg.d_model, L)
    # Per row: each tap is a blend of two weights (rounding <= 3 eps max|w|), times
    # m^(N-1-i) (<= N roundings), over Z; the learnable decay's exp/log adds
    # eps * decay * log(K).  So |dk| <= 8 eps (N + 2 + decay_max log K) * max_i(...).
    N = cfg.num_scales
    m = st["multiplier"].reshape(-1) if not cfg.learnable_decay else np.ones(cfg.d_model)
    Z = st["kernel_norm"][..., 0]                                      # (C', H)
    mags = np.stack([np.abs(st[f"kernel_list.{i}"]).max(-1) * m ** (N - 1 - i)
                     for i in range(N)]).max(0) / Z                    # (C', H)
    extra = cfg.decay_max * math.log(cfg.kernel_length) if cfg.learnable_decay else 0.0
    tol = 8 * EPS["float32"] * (N + 2 + extra) * mags
    assert np.all(tol < 1e-4 * np.abs(want).max(-1))                   # tight enough to bite
    assert np.all(np.abs(got - want).max(-1) <= tol), cfg


def test_unbatched_input_equals_batch_of_one():
    cfg = sgconv.SGConvConfig(d_model=4, l_max=32, kernel_dim=8)
    params = sgj.init(0, cfg)
    u = jnp.asarray(data((4, 30), seed=3))
    np.testing.assert_array_equal(np.asarray(sgj.apply(params, u)),
                                  np.asarray(sgj.apply(params, u[None])[0]))


# --- jit, grad, vmap, retracing -------------------------------------------------------------

SMALL = sgconv.SGConvConfig(d_model=3, l_max=32, kernel_dim=8, channels=2)


def test_jit_matches_eager_and_does_not_retrace():
    params = sgj.init(jax.random.key(0), SMALL)
    traces = []

    def f(p, u):
        traces.append(u.shape)                 # runs only while JAX traces
        return sgj.apply(p, u)

    jf = jax.jit(f)
    u1, u2 = jnp.asarray(data((2, 3, 29), 1)), jnp.asarray(data((2, 3, 29), 2))
    y1 = jf(params, u1)
    y2 = jf(params, u2)
    new = jax.tree.map(lambda x: x * 1.5, params)  # new values, same shapes and config
    jf(new, u1)
    assert len(traces) == 1
    np.testing.assert_allclose(np.asarray(y2), np.asarray(sgj.apply(params, u2)),
                               rtol=0, atol=4 * EPS["float32"] * float(jnp.abs(y2).max()) * 10)
    jf(params, jnp.asarray(data((2, 3, 31), 1)))   # a new length is a new program
    assert len(traces) == 2
    # The library's own compiled core is also reused across eager calls.
    from sgconv.jax import _functional
    before = _functional._apply_jit._cache_size()
    sgj.apply(params, u1)
    sgj.apply(new, u2)
    assert _functional._apply_jit._cache_size() <= before + 1
    assert np.isfinite(np.asarray(y1)).all()


def test_grad_vs_finite_differences_of_the_reference(x64):
    """Directional derivatives <grad, v> (params and input) vs central differences of the
    float64 reference layer, for a causal-learnable and a bidirectional configuration."""
    for cfg in (sgconv.SGConvConfig(d_model=2, l_max=24, kernel_dim=4, channels=2,
                                    learnable_decay=True, decay_min=0.5, decay_max=1.0),
                sgconv.SGConvConfig(d_model=3, l_max=16, kernel_dim=4, bidirectional=True)):
        params = sgj.init(1, cfg, jnp.float64)
        rng = np.random.default_rng(4)
        u = rng.standard_normal((2, cfg.d_model, 21))
        g = rng.standard_normal((2, cfg.d_model, 21))
        loss = lambda p, x: jnp.vdot(sgj.apply(p, x), g)  # noqa: E731
        gp, gu = jax.grad(loss, argnums=(0, 1))(params, jnp.asarray(u))
        # The state (multiplier m and Z) takes no gradient.
        assert not np.any(np.asarray(gp.kernel_norm)) and not np.any(np.asarray(gp.multiplier))
        mask = sgj.trainable(params)
        v = jax.tree.map(lambda x, t: jnp.asarray(rng.standard_normal(x.shape)) * t,
                         params, mask)
        vu = rng.standard_normal(u.shape)
        analytic = float(sum(jnp.vdot(a, b) for a, b in
                             zip(jax.tree.leaves(gp), jax.tree.leaves(v)))) + float(np.vdot(gu, vu))

        def f(eps):
            p = jax.tree.map(lambda x, d: x + eps * d, params, v)
            return float(np.vdot(ref_layer(p, u + eps * vu), g))

        h = 1e-3
        d_h = (f(h) - f(-h)) / (2 * h)
        d_h2 = (f(h / 2) - f(-h / 2)) / h
        # Central differences err by ~h^2 f'''/6, so |d_h - d_h2| ~ 3x the error of d_h2;
        # rounding adds ~ eps64 L |terms| / h.
        terms = float(np.abs(ref_layer(params, u)).ravel() @ np.abs(g).ravel())
        tol = abs(d_h - d_h2) + 2 * EPS["float64"] * 21 * terms / h
        assert tol < 1e-5 * abs(analytic), (cfg, tol, analytic)
        assert abs(analytic - d_h2) <= tol, (cfg, analytic, d_h2, tol)


def test_value_and_grad_and_vmap():
    params = sgj.init(jax.random.key(1), SMALL)
    u = jnp.asarray(data((4, 2, 3, 17), 5))                             # (M, B, H, L)
    ys = jax.vmap(lambda x: sgj.apply(params, x))(u)
    for i in range(4):
        np.testing.assert_allclose(np.asarray(ys[i]), np.asarray(sgj.apply(params, u[i])),
                                   rtol=0, atol=1e-5 * float(jnp.abs(ys).max()))
    loss = lambda p, x: jnp.mean(sgj.apply(p, x) ** 2)  # noqa: E731
    val, (gp, gu) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, u[0])
    assert np.isclose(float(val), float(loss(params, u[0])), rtol=1e-5)
    assert jax.tree.structure(gp) == jax.tree.structure(params) and gu.shape == u[0].shape
    # vmap over parameters: an ensemble drawn with vmapped init.
    ens = jax.vmap(lambda k: sgj.init(k, SMALL))(jax.random.split(jax.random.key(2), 3))
    assert ens.D.shape == (3, 2, 3) and ens.config == SMALL
    out = jax.vmap(sgj.apply, in_axes=(0, None))(ens, u[0])
    member = jax.tree.map(lambda x: x[1], ens)
    np.testing.assert_allclose(np.asarray(out[1]), np.asarray(sgj.apply(member, u[0])),
                               rtol=0, atol=1e-5 * float(jnp.abs(out).max()))
    assert not np.allclose(np.asarray(out[0]), np.asarray(out[1]))


# --- prepare: the spectrum computed once, for inference ---------------------------------------

@pytest.mark.parametrize("cfg_kwargs, L", CONFIGS)
def test_prepared_equals_apply(cfg_kwargs, L):
    """apply(prepare(params, L), u) is apply(params, u): layouts, unbatched input, jit, vmap."""
    params = sgj.init(3, sgconv.SGConvConfig(**cfg_kwargs))
    H = params.config.d_model
    fast = sgj.prepare(params, L)
    assert isinstance(fast, sgj.Prepared) and fast.length == L and fast.dtype == jnp.float32
    assert len(jax.tree.leaves(fast)) == 3                   # spectrum, out_weight, out_bias
    u = jnp.asarray(data((2, H, L), 8))
    want = sgj.apply(params, u)
    scale = float(jnp.abs(want).max())
    close = lambda a, b: np.testing.assert_allclose(  # noqa: E731
        np.asarray(a), np.asarray(b), rtol=0, atol=1e-5 * scale)
    close(sgj.apply(fast, u), want)
    close(jax.jit(sgj.apply)(fast, u), want)
    close(sgj.apply(fast, u.swapaxes(1, 2), transposed=False), want.swapaxes(1, 2))
    close(sgj.apply(fast, u[1]), want[1])
    close(jax.vmap(lambda x: sgj.apply(fast, x))(u[:, None])[:, 0], want)


def test_prepared_blocks_dropout_x64_and_errors(x64):
    cfg = sgconv.SGConvConfig(d_model=3, l_max=16, kernel_dim=4)
    params = sgj.init(5, cfg)                                          # float32
    u = jnp.asarray(data((2, 3, 200), 9))
    # overlap-add plan fixed at prepare time
    fast = sgj.prepare(params, 200, block_size=32)
    assert fast.plan.block == 32
    np.testing.assert_allclose(np.asarray(sgj.apply(fast, u)), np.asarray(sgj.apply(params, u)),
                               rtol=0, atol=1e-5 * float(jnp.abs(sgj.apply(params, u)).max()))
    # dropout: the same key gives the same mask as apply
    k = jax.random.key(4)
    np.testing.assert_allclose(np.asarray(sgj.apply(fast, u, dropout=0.5, key=k)),
                               np.asarray(sgj.apply(params, u, dropout=0.5, key=k,
                                                    block_size=32)), rtol=0, atol=1e-5)
    # float64 under x64: prepared in float64, equal to apply in float64
    fast64 = sgj.prepare(params, 200, dtype=jnp.float64)
    u64 = u.astype(jnp.float64)
    assert fast64.dtype == jnp.float64 and fast64.spectrum.dtype == jnp.complex128
    np.testing.assert_allclose(np.asarray(sgj.apply(fast64, u64)),
                               np.asarray(sgj.apply(params, u64)), rtol=0, atol=1e-12)
    # errors that say what was expected
    with pytest.raises(ValueError, match=r"length 200, got u of length 199.*prepare\(params, 199\)"):
        sgj.apply(fast, u[..., :199])
    with pytest.raises(TypeError, match=r"computes in float32.*dtype='float64'"):
        sgj.apply(fast, u64)
    with pytest.raises(ValueError, match="block_size is fixed"):
        sgj.apply(fast, u, block_size=0)
    with pytest.raises(ValueError, match="length must be an int L >= 1"):
        sgj.prepare(params, 0)
    with pytest.raises(TypeError, match="expected sgconv.Params"):
        sgj.prepare(fast, 200)
    with pytest.raises(ValueError, match=r"\(B, H, L\)"):
        sgj.apply(fast, u[None])


def test_forward_mode_jvp_agrees_with_reverse_mode(x64):
    """jax.jvp and jax.jacfwd work too: <J v, g> from forward mode equals <v, J^T g> from
    reverse mode, for a direction v in the parameters and the input together."""
    cfg = sgconv.SGConvConfig(d_model=3, l_max=16, kernel_dim=4, bidirectional=True)
    params = sgj.init(2, cfg, jnp.float64)
    rng = np.random.default_rng(7)
    u = jnp.asarray(rng.standard_normal((2, 3, 13)))
    g = jnp.asarray(rng.standard_normal((2, 3, 13)))
    v = jax.tree.map(lambda x, t: jnp.asarray(rng.standard_normal(x.shape)) * t,
                     params, sgj.trainable(params))
    vu = jnp.asarray(rng.standard_normal(u.shape))
    y, jv = jax.jvp(sgj.apply, (params, u), (v, vu))
    np.testing.assert_allclose(np.asarray(y), np.asarray(sgj.apply(params, u)), rtol=0,
                               atol=1e-12 * float(jnp.abs(y).max()))
    gp, gu = jax.grad(lambda p, x: jnp.vdot(sgj.apply(p, x), g), argnums=(0, 1))(params, u)
    reverse = float(sum(jnp.vdot(a, b) for a, b in
                        zip(jax.tree.leaves(gp), jax.tree.leaves(v)))) + float(jnp.vdot(gu, vu))
    forward = float(jnp.vdot(jv, g))
    assert abs(forward - reverse) <= 1e-10 * (abs(reverse) + float(jnp.abs(jv).sum())), \
        (forward, reverse)
    # jacfwd of a scalar function of u: a forward-mode gradient equal to reverse mode's.
    jf = jax.jacfwd(lambda x: jnp.vdot(sgj.apply(params, x), g))(u)
    np.testing.assert_allclose(np.asarray(jf), np.asarray(gu), rtol=0,
                               atol=1e-10 * float(jnp.abs(gu).max()))


# --- init -----------------------------------------------------------------------------------

def test_init_int_seed_equals_core_init():
    cfg = sgconv.SGConvConfig(d_model=3, l_max=40, kernel_dim=4, channels=2,
                              learnable_decay=True, decay_min=0.5, decay_max=2.0)
    a, b = sgj.init(123, cfg), sgconv.init(cfg, 123)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b.to("numpy"))):
        np.testing.assert_array_equal(np.asarray(x), y)
    assert a.backend == "jax"


def test_init_with_key():
    cfg = sgconv.SGConvConfig(d_model=64, l_max=96, kernel_dim=16, channels=2,
                              bidirectional=True)
    p = sgj.init(jax.random.key(0), cfg)
    again = sgj.init(jax.random.PRNGKey(0), cfg)                        # legacy key, same data
    other = sgj.init(jax.random.key(1), cfg)
    for x, y in zip(jax.tree.leaves(p), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(p.D), np.asarray(other.D))
    N, Cp, H, d = cfg.num_scales, 4, 64, 16
    assert [w.shape for w in p.kernels] == [(Cp, H, d)] * N
    assert p.D.shape == (2, H) and p.out_weight.shape == (H, 2 * H) and p.decay is None
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(p))
    # Z makes every row of the full kernel unit-norm (float32 rounding: K terms).
    k = np.asarray(sgj.kernel(p, cfg.kernel_length), np.float64)
    np.testing.assert_allclose(np.linalg.norm(k, axis=-1), 1.0, rtol=0,
                               atol=4 * cfg.kernel_length * EPS["float32"])
    np.testing.assert_array_equal(np.asarray(p.multiplier), np.full(H, 2.0, np.float32))
    # Distributions (SPEC): w, D ~ N(0, 1); W, b ~ U(-1/sqrt(CH), 1/sqrt(CH)).  Means
    # within 5 standard errors, the spread within 5 standard errors of the variance.
    w = np.concatenate([np.asarray(x).ravel() for x in p.kernels])
    assert abs(w.mean()) < 5 / math.sqrt(w.size) and abs(w.var() - 1) < 5 * math.sqrt(2 / w.size)
    bound = 1 / math.sqrt(2 * H)
    W = np.asarray(p.out_weight).ravel()
    assert np.abs(W).max() <= bound and abs(W.var() - bound ** 2 / 3) < 5 * bound ** 2 * 0.3 \
        / math.sqrt(W.size)


def test_init_dtypes():
    cfg = sgconv.SGConvConfig(d_model=2, l_max=16, kernel_dim=4)
    with pytest.raises(TypeError, match="jax_enable_x64"):
        sgj.init(jax.random.key(0), cfg, jnp.float64)
    with pytest.raises(TypeError, match="jax_enable_x64"):
        sgj.init(0, cfg, "float64")
    with pytest.raises(TypeError, match="dtype must be one of"):
        sgj.init(0, cfg, jnp.int32)
    p = sgj.init(jax.random.key(0), cfg, jnp.bfloat16)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(p))
    with pytest.raises(TypeError, match="SGConvConfig"):
        sgj.init(cfg, jax.random.key(0))


# --- dtypes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_inputs_compute_in_float32_and_return_input_dtype(dtype):
    params = sgj.init(2, SMALL)
    u = jnp.asarray(data((2, 3, 45), 6)).astype(dtype)
    y = sgj.apply(params, u)
    assert y.dtype == jnp.dtype(dtype)
    y32 = np.asarray(sgj.apply(params, u.astype(jnp.float32)), np.float64)
    # Same float32 computation, rounded once to the half dtype at the end: within half an
    # ulp of the half type, plus the float32 computation's own error (bound above).
    half_eps = float(jnp.finfo(dtype).eps)
    err = np.abs(np.asarray(y.astype(jnp.float32), np.float64) - y32)
    f32 = layer_error_bound(params, np.asarray(u.astype(jnp.float32)), "float32")
    assert np.all(err <= 0.5 * half_eps * np.abs(y32) + f32)
    assert err.max() > 0                      # it really was rounded to the half dtype


def test_mixed_parameter_and_input_dtypes(x64):
    params32 = sgj.init(4, SMALL)
    u = data((1, 3, 20), 7, "float64")
    y = sgj.apply(params32, u)                # float32 parameters, float64 input
    assert y.dtype == jnp.float64
    assert_layer_close(params32, u, y, "float64")


def test_non_float_input_is_refused():
    params = sgj.init(0, SMALL)
    with pytest.raises(TypeError, match="real floating"):
        sgj.apply(params, np.ones((1, 3, 8), np.int32))
    with pytest.raises(TypeError, match="jax_enable_x64"):
        sgj.apply(params, np.ones((1, 3, 8)))


# --- dropout --------------------------------------------------------------------------------

def test_dropout_needs_a_key_and_is_reproducible():
    params = sgj.init(0, SMALL)
    u = jnp.asarray(data((2, 3, 40), 8))
    with pytest.raises(ValueError, match="random key"):
        sgj.apply(params, u, dropout=0.2)
    with pytest.raises(TypeError, match="JAX random key"):
        sgj.apply(params, u, dropout=0.2, key="seed")
    clean = np.asarray(sgj.apply(params, u))
    off = np.asarray(sgj.apply(params, u, dropout=0.2, deterministic=True))
    np.testing.assert_array_equal(off, clean)
    k = jax.random.key(3)
    a = np.asarray(sgj.apply(params, u, dropout=0.2, key=k))
    b = np.asarray(sgj.apply(params, u, dropout=0.2, key=jax.random.PRNGKey(3)))
    c = np.asarray(sgj.apply(params, u, dropout=0.2, key=jax.random.key(4)))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, clean) and not np.allclose(a, c)


def test_dropout_mask_statistics():
    x = jnp.ones((200, 500), jnp.float32)
    rate = 0.3
    y = np.asarray(BK.dropout(x, rate, jax.random.key(0)))
    kept = y != 0
    assert np.allclose(y[kept], 1 / (1 - rate), rtol=EPS["float32"])
    # Zero fraction within 5 binomial standard deviations of the rate.
    assert abs((~kept).mean() - rate) < 5 * math.sqrt(rate * (1 - rate) / x.size)


# --- the layer object -----------------------------------------------------------------------

def test_layer_object_is_a_pytree_and_trains():
    layer = sgj.SGConv.init(jax.random.key(0), SMALL)
    leaves, treedef = jax.tree.flatten(layer)
    assert len(leaves) == SMALL.num_scales + 5     # w_i, m, Z, D, W, b; no decay leaf
    assert isinstance(jax.tree.unflatten(treedef, leaves), sgj.SGConv)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(layer)[0]]
    assert ".params.kernel_norm" in paths and ".params.kernels[0]" in paths
    other = sgj.SGConv.init(0, sgconv.SGConvConfig(d_model=3, l_max=32, kernel_dim=8))
    assert jax.tree.structure(other) != treedef                         # config is static
    u = jnp.asarray(data((2, 3, 25), 9))
    target = jnp.asarray(data((2, 3, 25), 10))

    @jax.jit
    def loss(layer):
        return jnp.mean((layer(u) - target) ** 2)

    grads = jax.grad(loss)(layer)
    assert isinstance(grads, sgj.SGConv) and grads.config == SMALL
    gnorm = math.sqrt(sum(float(jnp.vdot(g, g)) for g in jax.tree.leaves(grads)))
    new = jax.tree.map(lambda p, g: p - (1e-2 / gnorm) * g, layer, grads)  # optax-style SGD
    assert float(loss(new)) < float(loss(layer))
    np.testing.assert_array_equal(np.asarray(new.params.kernel_norm),
                                  np.asarray(layer.params.kernel_norm))
    np.testing.assert_array_equal(np.asarray(new.params.multiplier),
                                  np.asarray(layer.params.multiplier))
    assert loss._cache_size() == 1                                     # new values, no retrace
    mask = layer.trainable()
    assert jax.tree.structure(mask) == treedef
    assert [bool(m) for m in jax.tree.leaves(mask)].count(False) == 2
    with pytest.raises(AttributeError, match="immutable"):
        layer.dropout = 0.5


def test_layer_object_options_and_vmap():
    layer = sgj.SGConv(sgconv.init(SMALL, 5), transposed=False, dropout=0.1)
    u = jnp.asarray(data((2, 19, 3), 11))                                # (B, L, H)
    y = layer(u, deterministic=True)
    np.testing.assert_array_equal(
        np.asarray(y), np.asarray(sgj.apply(layer.params, u, transposed=False)))
    with pytest.raises(ValueError, match="random key"):
        layer(u)
    per_example = jax.vmap(lambda x, k: layer(x, key=k))(u, jax.random.split(jax.random.key(0), 2))
    assert per_example.shape == u.shape and per_example.dtype == jnp.float32
    assert layer.kernel(19).shape == (2, 3, 19)
    assert "SGConv(" in repr(layer) and "dropout=0.1" in repr(layer)


# --- interchange ----------------------------------------------------------------------------

def test_released_state_dict_gives_reference_outputs():
    state = reference.init_state(d_model=3, l_max=48, kernel_dim=8, channels=2,
                                 bidirectional=True, rng=3)             # float64 arrays
    u = data((2, 3, 50), 12)
    with pytest.raises(TypeError, match="jax_enable_x64"):
        sgconv.from_state_dict(state, backend="jax")                    # float64, x64 off
    params = sgconv.from_state_dict(state, dtype="float32", backend="jax")
    assert params.backend == "jax"
    y = sgj.apply(params, u)
    want = reference.layer(state, u, bidirectional=True)
    # The bound is for the float32-rounded parameters; add their rounding effect on y
    # (relative eps32 in each array, propagated through a layer that is linear in k, D and W
    # apart from GELU): eps32 * 4 * |y| at most per element, taken normwise.
    err = np.linalg.norm(np.asarray(y, np.float64) - want)
    bound = layer_error_bound(params, u, "float32") + 4 * EPS["float32"] * (
        np.linalg.norm(want) + np.linalg.norm(ref_layer(params, u)))
    assert err <= bound < 1e-3 * np.linalg.norm(want)


def test_npz_numpy_and_other_backends_give_the_same_outputs(tmp_path):
    cfg = sgconv.SGConvConfig(d_model=3, l_max=30, kernel_dim=4, channels=2)
    params_np = sgconv.init(cfg, 9)                                       # NumPy float32
    u = data((2, 3, 33), 13)
    y = np.asarray(sgj.apply(params_np, u))                              # converted on the fly
    params_jax = sgconv.jax.as_jax_params(params_np)
    np.testing.assert_array_equal(y, np.asarray(sgj.apply(params_jax, u)))
    path = tmp_path / "p.npz"
    sgconv.save(path, params_jax)
    loaded = sgconv.load(path, backend="jax")
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params_jax)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(sgj.apply(loaded, u)), y)
    # The NumPy backend computes the same layer (both float32: twice the bound).
    y_np = sgconv.apply(params_np, u)
    assert np.linalg.norm(y_np - y) <= 2 * layer_error_bound(params_np, u, "float32")
    # The generic operator under sgconv.using('jax') is the same computation.
    with sgconv.using("jax"):                    # jitted: one compile, not one per op
        y_gen = jax.jit(lambda p, x: sgconv.apply(p, x))(params_jax, jnp.asarray(u))
        assert isinstance(y_gen, jax.Array)
    assert np.linalg.norm(np.asarray(y_gen) - y) <= 2 * layer_error_bound(params_np, u, "float32")
    try:
        sgconv.backend("torch")
    except ImportError:                          # BackendUnavailableError, or not written yet
        return                                   # no torch backend here: nothing more to check
    else:
        params_torch = params_np.to("torch")
        np.testing.assert_array_equal(np.asarray(sgj.apply(params_torch, u)), y)


# --- errors ---------------------------------------------------------------------------------

def test_errors_say_what_was_expected():
    params = sgj.init(0, SMALL)
    u = jnp.ones((2, 3, 10))
    with pytest.raises(ValueError, match="d_model=3"):
        sgj.apply(params, jnp.ones((2, 4, 10)))
    with pytest.raises(ValueError, match="unbatched"):
        sgj.apply(params, jnp.ones(10))
    with pytest.raises(ValueError, match=r"dropout must be .* \[0, 1\)"):
        sgj.apply(params, u, dropout=1.0)
    with pytest.raises(TypeError, match=r"deterministic must be a bool \(True or False\)"):
        sgj.apply(params, u, deterministic=jnp.asarray(True))
    with pytest.raises(ValueError, match="block_size"):
        sgj.apply(params, u, block_size=-1)
    with pytest.raises(TypeError, match="sgconv.Params"):
        sgj.apply({"D": 1}, u)
    with pytest.raises(ValueError, match="length"):
        sgj.kernel(params, 0)
    with pytest.raises(ValueError, match="single key"):
        sgj.apply(params, u, dropout=0.1, key=jax.random.split(jax.random.key(0), 2))
    with pytest.raises(TypeError, match="jax array"):
        sgconv.apply(params, u)                     # numpy backend active, jax arrays given
    params64 = sgconv.init(SMALL, 0, dtype="float64")            # NumPy float64, x64 off
    with pytest.raises(TypeError, match=r"jax_enable_x64.*as_jax_params\(params, jnp.float32\)"):
        sgj.apply(params64, u)
    assert sgj.as_jax_params(params64, jnp.float32).dtype == "float32"   # the suggested fix
    torch = sys.modules.get("torch")
    if torch is not None:
        with pytest.raises(TypeError, match="torch"):
            sgj.apply(params, torch.ones(2, 3, 10))


# --- the documentation's examples -----------------------------------------------------------

def test_docs_examples_run():
    """The code blocks of docs/jax.md run in order (Flax/Equinox blocks when installed)."""
    import re
    with open(os.path.join(ROOT, "docs", "jax.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    assert len(blocks) >= 5
    ns = {}
    ran = 0
    for block in blocks:
        if "sgconv.load(" in block:
            continue                               # needs files and a torch checkpoint
        needs = [m for m in ("flax", "equinox") if f"import {m}" in block]
        if any(_missing(m) for m in needs):
            continue
        exec(compile(block, "docs/jax.md", "exec"), ns)
        ran += 1
        if "sgj.SGConv.init" in block and "class" not in block:   # the layer-object block
            assert jax.tree.structure(ns["grads"]) == jax.tree.structure(ns["layer"])
            assert ns["y"].shape == ns["u"].shape
    assert ran >= 2


def _missing(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is None
