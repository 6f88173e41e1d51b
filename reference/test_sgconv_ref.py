"""Tests of the reference, in the order of ``reference/sgconv_ref.py``.

Every check compares against a fact computed independently of the code under
test: PyTorch's ``F.interpolate``, ``numpy.interp``, ``numpy.convolve``,
``scipy.signal.convolve``, a two-sided kernel built by hand, closed forms for
constant sub-kernels, and an FFT implementation of the whole layer in PyTorch.
Tolerances come from one helper (``assert_close``) with bounds derived from
float64's eps and the number of terms summed; the derivation sits next to each
bound. On failure a message names the shapes and seed.
"""

import ast
import math
import pathlib

import numpy as np
import pytest
import scipy.signal

from . import (
    cat_kernel,
    conv,
    conv_bidirectional,
    conv_causal,
    gelu,
    init_state,
    kernel,
    kernel_from_raw,
    layer,
    n_scales,
    normaliser,
    num_parameters,
    scale_factor,
    upsample,
)

EPS = np.finfo(np.float64).eps


def assert_close(actual, expected, bound, what):
    """Assert |actual - expected| <= bound elementwise (bound: scalar or array).

    The caller derives ``bound`` from eps, the number of rounded operations and
    the magnitudes involved; ``what`` says how to reproduce a failure.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    err = np.abs(actual - expected)
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), err.shape)
    bad = ~(err <= bound)  # also catches nan
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {err.size} entries off; first at {idx}: "
            f"actual {actual[idx]!r}, expected {expected[idx]!r}, bound {bound[idx]:.3g}"
        )


def sum_bound(n_terms, abs_sum):
    """Rounding bound for two different evaluations of the same sum of n products.

    Each evaluation errs by at most gamma_n * sum|a_i b_i| with gamma_n ~ n * eps/2
    (Higham, Accuracy and Stability, Sec. 3.1); two of them differ by at most twice
    that, n * eps * sum|a_i b_i|. A floor of eps covers exact zeros.
    """
    return n_terms * EPS * np.asarray(abs_sum) + EPS * 1e-300


def test_assert_close_can_fail():
    """The helper itself rejects a wrong answer, including nan."""
    with pytest.raises(AssertionError):
        assert_close(np.ones(3), np.array([1.0, 1.0, 1.0 + 1e-12]), 1e-14, "meta")
    with pytest.raises(AssertionError):
        assert_close(np.array([np.nan]), np.array([0.0]), 1.0, "meta")


# 1. Number of scales N -------------------------------------------------------


@pytest.mark.parametrize(
    "l_max, d, expected",
    [(1024, 64, 5), (1000, 64, 5), (1025, 64, 6), (64, 64, 1), (65, 64, 2), (128, 64, 2),
     (10, 64, 1), (1, 64, 1), (32, 64, 1), (16384, 64, 9), (7, 1, 4)],
)
def test_n_scales_examples(l_max, d, expected):
    assert n_scales(l_max, d) == expected


def test_n_scales_formula_and_coverage():
    """N = max(1, 1 + ceil(log2(l_max/d))) and K = d*2^(N-1) >= l_max, minimal."""
    for d in (1, 3, 16, 64):
        for l_max in range(1, 600, 7):
            N = n_scales(l_max, d)
            assert N == max(1, 1 + math.ceil(math.log2(l_max / d))), (l_max, d)
            assert d * 2 ** (N - 1) >= l_max, (l_max, d, N)
            assert N == 1 or d * 2 ** (N - 2) < l_max, (l_max, d, N)


def test_n_scales_explicit_and_errors():
    assert n_scales(1024, 64, n_scales=3) == 3
    assert n_scales(5, 64, n_scales=7) == 7
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError):
            n_scales(bad, 64)
    with pytest.raises(ValueError):
        n_scales(100, 64, n_scales=0)


# 2. Upsampling ------------------------------------------------------------------


def test_scale_factors():
    assert [scale_factor(i) for i in range(6)] == [1, 1, 2, 4, 8, 16]
    with pytest.raises(ValueError):
        scale_factor(-1)


@pytest.mark.parametrize("d", [1, 2, 5, 64])
@pytest.mark.parametrize("factor", [1, 2, 4, 8])
def test_upsample_linear_matches_numpy_interp(d, factor):
    """numpy.interp at the half-pixel positions max((j+0.5)/s - 0.5, 0) (SPEC step 1)."""
    rng = np.random.default_rng(d * 100 + factor)
    w = rng.standard_normal((2, 3, d))  # (C', H, d)
    out = upsample(w, factor)
    assert out.shape == (2, 3, d * factor)
    x = np.maximum((np.arange(d * factor) + 0.5) / factor - 0.5, 0.0)
    expected = np.stack([[np.interp(x, np.arange(d), w[c, h]) for h in range(3)] for c in range(2)])
    # A two-term blend, evaluated in two orders: a few eps times max|w|.
    assert_close(out, expected, 4 * EPS * np.abs(w).max(), f"interp d={d} s={factor}")


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("d", [1, 3, 7, 64])
@pytest.mark.parametrize("factor", [1, 2, 4, 16])
def test_upsample_matches_torch_interpolate(mode, d, factor):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(7 * d + factor)
    w = rng.standard_normal((2, 3, d))  # (C', H, d)
    kw = {"align_corners": False} if mode == "linear" else {}
    expected = F.interpolate(torch.from_numpy(w), scale_factor=factor, mode=mode, **kw).numpy()
    out = upsample(w, factor, mode)
    assert out.shape == (2, 3, d * factor)
    # Same two-term blend as PyTorch: differences only from rounding of x and lam.
    assert_close(out, expected, 4 * EPS * np.abs(w).max(), f"torch {mode} d={d} s={factor}")


def test_upsample_identity_constant_and_errors():
    w = np.arange(5.0)
    assert np.array_equal(upsample(w, 1), w)
    assert np.array_equal(upsample(w, 1, "nearest"), w)
    assert np.array_equal(upsample(w, 3, "nearest"), np.repeat(w, 3))
    assert np.array_equal(upsample(np.full(4, 2.5), 8), np.full(32, 2.5))
    with pytest.raises(ValueError):
        upsample(w, 0)
    with pytest.raises(ValueError):
        upsample(w, 2, "cubic")


# 3. Cat(S) with decay ----------------------------------------------------------------


@pytest.mark.parametrize("N", [1, 2, 3, 5])
@pytest.mark.parametrize("interpolation", ["linear", "nearest"])
def test_cat_segments_lengths_and_decay(N, interpolation):
    """Constant sub-kernels w_i = 1 upsample to 1, so k_raw is m^(N-1-i) on
    segment i = [0, d), [d, 2d), [2d, 4d), ...: checks lengths d, d, 2d, 4d and the decay."""
    d, H = 4, 3
    m = np.array([2.0, 3.0, 0.5])  # (H,)
    weights = [np.ones((2, H, d)) for _ in range(N)]
    k_raw = cat_kernel(weights, m.reshape(1, H, 1), interpolation=interpolation)
    K = d * 2 ** (N - 1)
    assert k_raw.shape == (2, H, K)
    expected = np.empty((2, H, K))
    edges = [0, d] + [d * 2**j for j in range(1, N)]  # segment starts d*2^(i-1); ends at K
    for i in range(N):
        expected[:, :, edges[i] : edges[i + 1]] = (m ** (N - 1 - i))[None, :, None]
    # Products of at most N-1 factors m: (N-1) roundings.
    assert_close(k_raw, expected, N * EPS * np.abs(expected), f"cat N={N} {interpolation}")


def test_cat_kernel_covers_l_max_and_multiplier_forms():
    rng = np.random.default_rng(0)
    for l_max in (1, 63, 64, 65, 1000, 4096):
        N = n_scales(l_max, 16)
        ws = [rng.standard_normal((1, 2, 16)) for _ in range(N)]
        assert cat_kernel(ws, 2.0).shape[-1] == 16 * 2 ** (N - 1) >= l_max
    ws = [rng.standard_normal((2, 3, 5)) for _ in range(3)]
    a = cat_kernel(ws, np.full((1, 3, 1), 2.0))
    assert np.array_equal(a, cat_kernel(ws, np.array(2.0)))
    assert np.array_equal(a, cat_kernel(ws, np.full(3, 2.0)))
    with pytest.raises(ValueError):
        cat_kernel(ws, np.ones(2))
    with pytest.raises(ValueError):
        cat_kernel(ws[:1] + [np.ones((2, 3, 6))], 2.0)
    with pytest.raises(ValueError):
        cat_kernel([], 2.0)


def test_cat_learnable_decay_power_law():
    """Learnable mode: multiplier 1, k_raw[..., t] = w * (t+1)^(-decay[h])."""
    d, H, N = 3, 2, 3
    decay = np.array([0.5, 1.5])  # (H,)
    k_raw = cat_kernel([np.ones((1, H, d))] * N, np.array(1.0), decay)
    t = np.arange(d * 2 ** (N - 1))
    expected = (t[None, None, :] + 1.0) ** (-decay[None, :, None])
    assert_close(k_raw, expected, 4 * EPS * expected, "learnable decay")


# 4. The normaliser Z ----------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("learnable", [False, True])
def test_unit_row_norms_at_init(bidirectional, learnable):
    state = init_state(3, 200, channels=2, kernel_dim=8, bidirectional=bidirectional,
                       learnable_decay=learnable, decay_min=1.0, decay_max=3.0, rng=1)
    c_rows = 4 if bidirectional else 2
    K = 8 * 2 ** (n_scales(200, 8) - 1)
    assert state["kernel_norm"].shape == (c_rows, 3, 1)
    k = kernel(state, K)
    assert k.shape == (c_rows, 3, K)
    # A norm of K terms: K eps relative.
    assert_close(np.linalg.norm(k, axis=-1), np.ones((c_rows, 3)), K * EPS, "unit norms")


def test_normaliser_is_l2_norm_over_full_length():
    rng = np.random.default_rng(2)
    k_raw = rng.standard_normal((2, 3, 40))  # (C', H, K)
    Z = normaliser(k_raw)
    assert Z.shape == (2, 3)
    assert_close(Z, np.linalg.norm(k_raw, axis=-1), 40 * EPS * Z, "Z")
    with pytest.raises(ValueError):
        normaliser(np.ones(4))


# 5. The kernel for a length L ------------------------------------------------------------


@pytest.mark.parametrize("L", [1, 7, 40, 41, 97])
def test_kernel_from_raw_truncates_or_pads(L):
    rng = np.random.default_rng(L)
    k_raw = rng.standard_normal((2, 3, 40))  # (C', H, K)
    Z = rng.uniform(1.0, 2.0, (2, 3))  # (C', H)
    k = kernel_from_raw(k_raw, Z, L)
    assert k.shape == (2, 3, L)
    n = min(L, 40)
    assert_close(k[..., :n], k_raw[..., :n] / Z[..., None], 0.0, f"divide L={L}")
    assert np.all(k[..., n:] == 0.0)
    assert np.array_equal(k, kernel_from_raw(k_raw, Z[..., None], L))
    with pytest.raises(ValueError):
        kernel_from_raw(k_raw, Z.T, L)
    with pytest.raises(ValueError):
        kernel_from_raw(k_raw, Z, 0)


def test_kernel_uses_stored_Z_and_lazy_Z_when_uninitialised():
    state = init_state(2, 50, kernel_dim=8, rng=3)
    k = kernel(state, 30)
    doubled = dict(state, kernel_norm=2.0 * state["kernel_norm"])
    assert_close(kernel(doubled, 30), 0.5 * k, 0.0, "stored Z is used")
    # A released model saved before its first forward: Z is the norm of current weights.
    lazy = dict(doubled, kernel_norm_initialized=np.array(False))
    assert_close(kernel(lazy, 30), k, 0.0, "lazy Z")
    with pytest.raises(ValueError):
        kernel({"multiplier": np.ones((1, 2, 1))}, 10)


# 6. Parameters and their initial values -------------------------------------------------


def test_init_state_layout_and_values():
    H, C, d, l_max = 5, 3, 4, 30
    state = init_state(H, l_max, channels=C, kernel_dim=d, decay_min=1.5, decay_max=4.0, rng=9)
    N = n_scales(l_max, d)
    expected_keys = {f"kernel_list.{i}" for i in range(N)} | {
        "D", "multiplier", "kernel_norm", "kernel_norm_initialized",
        "output_linear.weight", "output_linear.bias"}
    assert set(state) == expected_keys
    for i in range(N):
        assert state[f"kernel_list.{i}"].shape == (C, H, d)
        assert state[f"kernel_list.{i}"].dtype == np.float64
    assert state["D"].shape == (C, H)
    assert state["multiplier"].shape == (1, H, 1)
    assert np.array_equal(state["multiplier"].ravel(), np.linspace(1.5, 4.0, H))
    assert state["output_linear.weight"].shape == (H, C * H)
    assert state["output_linear.bias"].shape == (H,)
    bound = 1 / math.sqrt(C * H)
    for key in ("output_linear.weight", "output_linear.bias"):
        assert np.all(np.abs(state[key]) <= bound)
    assert state["kernel_norm_initialized"].shape == () and bool(state["kernel_norm_initialized"])
    # Same seed, same state; a Generator works too.
    again = init_state(H, l_max, channels=C, kernel_dim=d, decay_min=1.5, decay_max=4.0,
                       rng=np.random.default_rng(9))
    assert all(np.array_equal(state[k], again[k]) for k in state)


def test_init_state_learnable_and_bidirectional():
    state = init_state(4, 100, channels=2, kernel_dim=16, bidirectional=True,
                       learnable_decay=True, decay_min=0.5, decay_max=1.0, rng=0)
    assert state["multiplier"].shape == () and float(state["multiplier"]) == 1.0
    assert state["decay"].shape == (4,)
    assert np.all((state["decay"] >= 0.5) & (state["decay"] <= 1.0))
    assert state["kernel_list.0"].shape == (4, 4, 16)
    assert state["D"].shape == (2, 4)


def test_num_parameters():
    assert num_parameters(4, 1024) == 5 * 1 * 4 * 64
    assert num_parameters(8, 1000, channels=2, kernel_dim=32, bidirectional=True) == 6 * 4 * 8 * 32
    for kw in ({}, {"bidirectional": True, "channels": 3}, {"n_scales": 2}):
        state = init_state(3, 300, kernel_dim=16, rng=0, **kw)
        count = sum(v.size for key, v in state.items() if key.startswith("kernel_list."))
        assert num_parameters(3, 300, kernel_dim=16, **kw) == count


# 7. The convolution ----------------------------------------------------------------------


def _random_conv_inputs(B, C_rows, C, H, L, Lk, seed):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((B, H, L))  # (B, H, L)
    k = rng.standard_normal((C_rows, H, Lk))  # (C', H, Lk)
    D = rng.standard_normal((C, H))  # (C, H)
    return u, k, D


@pytest.mark.parametrize("L", [1, 2, 7, 13, 64, 100])
@pytest.mark.parametrize("Lk_delta", [-5, 0, 9])
def test_conv_causal_matches_numpy_and_scipy_convolve(L, Lk_delta):
    Lk = max(1, L + Lk_delta)
    B, C, H = 2, 3, 2
    u, k, D = _random_conv_inputs(B, C, C, H, L, Lk, seed=L * 31 + Lk)
    y = conv_causal(u, k, D)
    assert y.shape == (B, C, H, L)
    expected = np.empty_like(y)
    abs_sum = np.empty_like(y)
    for b in range(B):
        for c in range(C):
            for h in range(H):
                full = np.convolve(u[b, h], k[c, h])[:L]
                abs_conv = np.convolve(np.abs(u[b, h]), np.abs(k[c, h]))[:L]
                # Two direct evaluations of the same sums agree to sum_bound.
                assert_close(scipy.signal.convolve(u[b, h], k[c, h], method="direct")[:L],
                             full, sum_bound(L, abs_conv), "scipy vs numpy")
                expected[b, c, h] = full + D[c, h] * u[b, h]
                abs_sum[b, c, h] = abs_conv + np.abs(D[c, h] * u[b, h])
    # At most L + 1 products per output (min(L, Lk) lags plus the skip term).
    assert_close(y, expected, sum_bound(L + 1, abs_sum), f"causal B={B} C={C} H={H} L={L} Lk={Lk}")


def test_conv_causal_without_skip_and_impulse_response():
    """u = delta at t=0 returns the kernel, plus D at lag 0."""
    B, C, H, L = 1, 2, 3, 11
    _, k, D = _random_conv_inputs(B, C, C, H, L, L, seed=5)
    u = np.zeros((B, H, L))
    u[:, :, 0] = 1.0
    y = conv_causal(u, k, D)
    expected = np.broadcast_to(k, (B, C, H, L)).copy()
    expected[..., 0] += D[None]
    assert_close(y, expected, 2 * EPS * np.abs(expected), "impulse")
    assert_close(conv_causal(u, k, None), np.broadcast_to(k, (B, C, H, L)), 0.0, "no skip")


@pytest.mark.parametrize("t0", [0, 1, 6, 12])
def test_conv_causal_is_causal(t0):
    B, C, H, L = 2, 2, 3, 13
    u, k, D = _random_conv_inputs(B, C, C, H, L, L, seed=t0)
    v = u.copy()
    v[..., t0:] = np.random.default_rng(99).standard_normal(v[..., t0:].shape)
    assert np.array_equal(conv_causal(u, k, D)[..., :t0], conv_causal(v, k, D)[..., :t0])
    assert not np.array_equal(conv_causal(u, k, D)[..., t0:], conv_causal(v, k, D)[..., t0:])


def _two_sided(k0, k1, L):
    """Two-sided kernel g of length 2L-1 centred at index L-1: g[L-1+s] = k0[s],
    g[L-1-s] = k1[s-1] (SPEC's layout), built by hand for np.convolve."""
    g = np.zeros(2 * L - 1)
    n0 = min(L, k0.size)
    g[L - 1 : L - 1 + n0] = k0[:n0]
    n1 = min(L - 1, k1.size)
    g[L - 1 - n1 : L - 1] = k1[:n1][::-1]
    return g


@pytest.mark.parametrize("L", [1, 2, 7, 13, 50])
@pytest.mark.parametrize("Lk_delta", [-4, 0, 6])
def test_conv_bidirectional_matches_two_sided_convolve(L, Lk_delta):
    Lk = max(1, L + Lk_delta)
    B, C, H = 2, 2, 3
    u, k, D = _random_conv_inputs(B, 2 * C, C, H, L, Lk, seed=L * 7 + Lk)
    y = conv_bidirectional(u, k, D)
    assert y.shape == (B, C, H, L)
    expected = np.empty_like(y)
    abs_sum = np.empty_like(y)
    for b in range(B):
        for c in range(C):
            for h in range(H):
                g = _two_sided(k[c, h], k[C + c, h], L)
                expected[b, c, h] = np.convolve(u[b, h], g)[L - 1 : 2 * L - 1] + D[c, h] * u[b, h]
                abs_sum[b, c, h] = (np.convolve(np.abs(u[b, h]), np.abs(g))[L - 1 : 2 * L - 1]
                                    + np.abs(D[c, h] * u[b, h]))
    # Up to 2L - 1 lags plus the skip term per output.
    assert_close(y, expected, sum_bound(2 * L, abs_sum), f"bidir B={B} C={C} H={H} L={L} Lk={Lk}")
    if L > 1:
        # Meta: the same check rejects k1[0] put at lag 0 instead of lag -1.
        wrong = y + k[None, C:, :, 0, None] * (u[:, None] - np.roll(u, -1, axis=-1)[:, None])
        with pytest.raises(AssertionError):
            assert_close(wrong, expected, sum_bound(2 * L, abs_sum), "meta")


def test_conv_bidirectional_impulse_and_dispatch():
    """An impulse at p gives k0 at t >= p and k1[p-t-1] at t < p."""
    B, C, H, L, p = 1, 2, 2, 9, 5
    _, k, D = _random_conv_inputs(B, 2 * C, C, H, L, L, seed=11)
    u = np.zeros((B, H, L))
    u[..., p] = 1.0
    y = conv(u, k, D, bidirectional=True)
    expected = np.zeros((B, C, H, L))
    expected[..., p:] = k[None, :C, :, : L - p]
    expected[..., :p] = k[None, C:, :, :p][..., ::-1]
    expected[..., p] += D[None]
    assert_close(y, expected, 2 * EPS * np.abs(expected), "bidir impulse")
    assert np.array_equal(conv(u, k[:C], D), conv_causal(u, k[:C], D))


def test_conv_shape_errors():
    u, k, D = _random_conv_inputs(2, 2, 2, 3, 8, 8, seed=0)
    with pytest.raises(ValueError):
        conv_causal(u[0], k, D)  # u not 3-D
    with pytest.raises(ValueError):
        conv_causal(u, k[:, :2], D)  # H mismatch
    with pytest.raises(ValueError):
        conv_causal(u, k, D[:1])  # D rows != C
    with pytest.raises(ValueError):
        conv_bidirectional(u, k[:1], None)  # odd number of rows
    with pytest.raises(ValueError):
        conv_bidirectional(u, k, D)  # 2 rows means C = 1, but D has 2 rows


# 8. GELU --------------------------------------------------------------------------------


def test_gelu_exact_form():
    x = np.linspace(-8.0, 8.0, 401)
    torch = pytest.importorskip("torch")
    expected = torch.nn.functional.gelu(torch.from_numpy(x), approximate="none").numpy()
    # erf is accurate to a few ulp; then two multiplications.
    assert_close(gelu(x), expected, 8 * EPS * (np.abs(x) + EPS), "gelu vs torch")
    assert gelu(0.0) == 0.0 and gelu(np.array([[1.0]])).shape == (1, 1)
    # Phi(1) = 0.841344746068542948585232545632... (standard normal CDF).
    assert abs(gelu(1.0) - 0.8413447460685429) <= 2 * EPS


# 9. The whole layer ----------------------------------------------------------------------


def _torch_layer(state, u, bidirectional, interpolation):
    """The layer written independently in PyTorch float64, with an FFT convolution of
    length 2L (linear, not circular) and PyTorch's own interpolate/GELU/linear."""
    import torch

    F = torch.nn.functional
    T = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    N = sum(key.startswith("kernel_list.") for key in state)
    mult = T(state["multiplier"])
    pieces = []
    for i in range(N):
        w = T(state[f"kernel_list.{i}"])
        kw = {"align_corners": False} if interpolation == "linear" else {}
        up = F.interpolate(w, scale_factor=2 ** max(0, i - 1), mode=interpolation, **kw)
        pieces.append(up * mult ** (N - 1 - i))
    k = torch.cat(pieces, dim=-1)
    if "decay" in state:
        t = torch.arange(k.shape[-1], dtype=torch.float64)
        k = k * (t + 1)[None, None, :] ** (-T(state["decay"])[None, :, None])
    k = k / T(state["kernel_norm"])
    u = T(u)
    L = u.shape[-1]
    k = F.pad(k, (0, max(0, L - k.shape[-1])))[..., :L]
    D = T(state["D"])
    C = D.shape[0]
    if bidirectional:
        k = F.pad(k[:C], (0, L)) + F.pad(k[C:].flip(-1), (L, 0))  # lag -s sits at 2L - s
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(u, n)[:, None] * torch.fft.rfft(k, n)[None], n)[..., :L]
    y = y + D[None, :, :, None] * u[:, None]
    y = F.gelu(y.reshape(u.shape[0], -1, L))
    out = F.linear(y.transpose(1, 2), T(state["output_linear.weight"]), T(state["output_linear.bias"]))
    return out.transpose(1, 2).numpy(), k.numpy()


@pytest.mark.parametrize(
    "bidirectional, learnable, interpolation, L",
    [(False, False, "linear", 37), (True, False, "linear", 37), (False, True, "nearest", 64),
     (True, True, "linear", 1), (False, False, "nearest", 150)],
)
def test_layer_matches_independent_torch_fft(bidirectional, learnable, interpolation, L):
    pytest.importorskip("torch")
    B, H, C, d, l_max, seed = 2, 3, 2, 8, 100, 4
    state = init_state(H, l_max, channels=C, kernel_dim=d, decay_min=1.2, decay_max=2.5,
                       bidirectional=bidirectional, learnable_decay=learnable,
                       interpolation=interpolation, rng=seed)
    u = np.random.default_rng(seed + 1).standard_normal((B, H, L))  # (B, H, L)
    out = layer(state, u, bidirectional=bidirectional, interpolation=interpolation)
    assert out.shape == (B, H, L)
    expected, k = _torch_layer(state, u, bidirectional, interpolation)
    # FFT convolution of length n errs by about eps*log2(n)*||u||_2*||k||_2 (factor 8
    # for the constant); GELU is 1.13-Lipschitz; the mixing layer adds sum_i |W_oi| times that.
    n = 2 * L
    conv_err = 8 * EPS * math.log2(n) * np.linalg.norm(u, axis=-1).max() * (
        np.linalg.norm(k, axis=-1).max() + np.abs(state["D"]).max())
    W = state["output_linear.weight"]
    bound = 1.13 * conv_err * np.abs(W).sum(axis=1).max() + 8 * C * H * EPS * np.abs(expected).max()
    what = f"layer bidir={bidirectional} learnable={learnable} {interpolation} B={B} H={H} C={C} L={L} seed={seed}"
    assert_close(out, expected, bound, what)


def test_layer_transposed_and_errors():
    state = init_state(3, 20, channels=2, kernel_dim=4, rng=0)
    u = np.random.default_rng(1).standard_normal((2, 3, 17))  # (B, H, L)
    out = layer(state, u)
    assert out.shape == (2, 3, 17)
    out_t = layer(state, np.swapaxes(u, 1, 2), transposed=False)
    assert out_t.shape == (2, 17, 3)
    assert np.array_equal(out_t, np.swapaxes(out, 1, 2))
    with pytest.raises(ValueError):
        layer(state, u[:, :2])  # wrong H
    with pytest.raises(ValueError):
        layer(state, u[0])  # not 3-D
    with pytest.raises(ValueError):
        layer(state, u, bidirectional=True)  # 2 kernel rows but bidirectional needs 4


# The oracle stays independent ---------------------------------------------------------------


def _sgconv_imports(path):
    """The statements of a source file that import sgconv: ``import sgconv...``, ``from sgconv...
    import``, a relative import that climbs out of this package (installed, the folder above
    is ``sgconv``), or importlib.import_module / __import__ of an sgconv name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [("." * node.level) + (node.module or "")]
            if node.level > 1:
                found.append(f"{path.name}:{node.lineno}: relative import above the package")
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__")):
            names = [node.args[0].value]
        found += [f"{path.name}:{node.lineno}: {name}" for name in names
                  if name == "sgconv" or name.startswith("sgconv.")]
    return found


def test_reference_never_imports_sgconv(tmp_path):
    """The oracle stays independent of the product, wherever it sits: in a checkout
    (``reference/``) or installed (``sgconv.reference``); this test checks the files beside it.

    Importing ``sgconv.reference`` imports its parent package ``sgconv`` first, so that import
    cannot show independence.  Instead: (1) no source file of the reference imports sgconv, and
    (2) in a fresh interpreter, started in an empty folder and isolated from PYTHONPATH, the
    reference's files are loaded by location under a name of their own and run a layer, after
    which no module named sgconv or sgconv.* has been imported."""
    import subprocess
    import sys

    here = pathlib.Path(__file__).resolve().parent
    sources = sorted(p for p in here.glob("*.py") if not p.name.startswith("test_"))
    assert {p.name for p in sources} >= {"__init__.py", "sgconv_ref.py"}, sources
    offending = [hit for p in sources for hit in _sgconv_imports(p)]
    assert not offending, offending

    code = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location(\n"
        f"    'oracle_alone', {str(here / '__init__.py')!r},\n"
        f"    submodule_search_locations=[{str(here)!r}])\n"
        "ref = importlib.util.module_from_spec(spec)\n"
        "sys.modules['oracle_alone'] = ref\n"
        "spec.loader.exec_module(ref)\n"
        "s = ref.init_state(2, 16, kernel_dim=4, rng=0)\n"
        "ref.layer(s, [[[1.0] * 5] * 2])\n"
        "ref.layer2d(ref.init_state2d(2, 4, kernel_dim=2, rng=0), [[[[1.0] * 3] * 2] * 2])\n"
        "assert sorted(ref.__all__) == sorted(sys.modules['oracle_alone.sgconv_ref'].__all__\n"
        "                                     + sys.modules['oracle_alone.sgconv2d_ref'].__all__)\n"
        "bad = sorted(m for m in sys.modules if m == 'sgconv' or m.startswith('sgconv.'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
