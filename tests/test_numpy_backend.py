"""The NumPy backend against the float64 reference, on random configurations."""

import numpy as np
import pytest

import reference
import sgconv
from sgconv import _ops
from conformance.tolerance import assert_close, conv_bound, kernel_bound, layer_bound

CASES = [
    # d_model, channels, kernel_dim, l_max, L, bidirectional
    (3, 1, 4, 32, 32, False),      # L = l_max
    (2, 2, 4, 32, 17, False),      # L < l_max, prime
    (2, 2, 4, 32, 17, True),
    (4, 3, 3, 20, 1, False),       # L = 1
    (4, 3, 3, 20, 1, True),
    (2, 1, 5, 30, 99, False),      # L > K (kernel zero-padded), odd
    (2, 2, 5, 30, 101, True),      # prime, bidirectional, L > K
    (1, 2, 8, 8, 63, True),        # N = 1
    (5, 1, 2, 64, 127, False),
]


@pytest.fixture(autouse=True)
def numpy_backend():
    with sgconv.using("numpy"):
        yield


def _state64(params):
    return {k: np.asarray(v, dtype=np.float64) for k, v in sgconv.to_state_dict(params).items()}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("H,C,d,l_max,L,bidirectional", CASES)
def test_layer_kernel_and_conv_match_reference(H, C, d, l_max, L, bidirectional, dtype):
    seed = hash((H, C, d, l_max, L, bidirectional)) % 2**32
    cfg = sgconv.SGConvConfig(d_model=H, l_max=l_max, channels=C, kernel_dim=d,
                              bidirectional=bidirectional, decay_min=1.5, decay_max=3.0)
    params = sgconv.init(cfg, seed=seed, dtype=dtype)
    state = _state64(params)
    u = np.random.default_rng(seed).standard_normal((2, H, L)).astype(dtype)
    where = f"H={H} C={C} d={d} l_max={l_max} L={L} bi={bidirectional} {dtype} seed={seed}"

    k = sgconv.kernel(params, L)
    assert k.shape == (cfg.kernel_rows, H, L) and k.dtype == dtype
    k_ref = reference.kernel(state, L)
    assert_close(k, k_ref, kernel_bound(state, cfg, L, dtype), "kernel " + where)

    y = sgconv.conv(u, k, params.D, bidirectional=bidirectional)
    u64, k64 = u.astype(np.float64), np.asarray(k, dtype=np.float64)
    y_ref = reference.conv(u64, k64, state["D"], bidirectional)
    assert y.shape == (2, C, H, L) and y.dtype == dtype
    assert_close(y, y_ref, conv_bound(u64, k64, state["D"], bidirectional, dtype), "conv " + where)

    out = sgconv.apply(params, u)
    out_ref = reference.layer(state, u64, bidirectional=bidirectional)
    assert out.shape == (2, H, L) and out.dtype == dtype
    assert_close(out, out_ref, layer_bound(state, cfg, u64, dtype), "layer " + where)


@pytest.mark.parametrize("transposed", [True, False])
def test_transposed_layout(transposed):
    cfg = sgconv.SGConvConfig(d_model=3, l_max=16, kernel_dim=4, channels=2)
    params = sgconv.init(cfg, seed=1, dtype="float64")
    u = np.random.default_rng(1).standard_normal((2, 3, 21))
    state = _state64(params)
    expected = reference.layer(state, u)
    got = sgconv.apply(params, u if transposed else u.swapaxes(1, 2), transposed=transposed)
    got = got if transposed else got.swapaxes(1, 2)
    assert_close(got, expected, layer_bound(state, cfg, u, "float64"), f"transposed={transposed}")


@pytest.mark.parametrize("variant", [dict(interpolation="nearest"), dict(learnable_decay=True)])
def test_released_variants_match_reference(variant):
    cfg = sgconv.SGConvConfig(d_model=3, l_max=40, kernel_dim=4, channels=2, bidirectional=True,
                              decay_min=0.5, decay_max=1.5, **variant)
    params = sgconv.init(cfg, seed=5, dtype="float64")
    state = _state64(params)
    interp = cfg.interpolation
    k_ref = reference.kernel(state, 50, interpolation=interp)
    assert_close(sgconv.kernel(params, 50), k_ref, kernel_bound(state, cfg, 50, "float64"),
                 str(variant))
    u = np.random.default_rng(5).standard_normal((1, 3, 50))
    out_ref = reference.layer(state, u, bidirectional=True, interpolation=interp)
    assert_close(sgconv.apply(params, u), out_ref, layer_bound(state, cfg, u, "float64"),
                 str(variant))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("L,taps,planner_blocks", [(3000, 4, True), (1000, 30, None),
                                                   (257, 64, False)])
def test_overlap_add_blocks_equal_one_fft(L, taps, planner_blocks, bidirectional):
    rng = np.random.default_rng(L + taps)
    Cp = 4 if bidirectional else 2
    u = rng.standard_normal((2, 3, L))
    k = rng.standard_normal((Cp, 3, taps))
    D = rng.standard_normal((2, 3))
    y_ref = reference.conv(u, np.pad(k, ((0, 0), (0, 0), (0, L - taps))), D, bidirectional)
    bk = sgconv.backend("numpy")
    plan = _ops.plan_fft(bk, L, taps, bidirectional)
    # The planner picks blocks only when the kernel is much shorter than the signal.
    if planner_blocks is not None:
        assert (plan.block is not None) == planner_blocks
    if planner_blocks:
        assert plan.n < bk.next_fast_len(2 * L - 1) // 4
    for block_size in (None, 0, max(taps, 1) + 5):
        y = sgconv.conv(u, k, D, bidirectional=bidirectional, block_size=block_size)
        assert_close(y, y_ref, conv_bound(u, k, D, bidirectional, "float64"),
                     f"L={L} taps={taps} block_size={block_size}")


def test_fft_length_is_the_smallest_that_is_linear():
    bk = sgconv.backend("numpy")
    for L in (1, 2, 5, 17, 100, 1000, 4097):
        full = _ops.plan_fft(bk, L, L, False, block_size=0)
        assert full.n == bk.next_fast_len(2 * L - 1) and full.n >= 2 * L - 1
        short = _ops.plan_fft(bk, L, max(1, L // 3), True, block_size=0)
        assert short.n >= L + max(L // 3 - 1, min(L // 3, L - 1))


def test_float32_stays_float32_end_to_end(monkeypatch):
    cfg = sgconv.SGConvConfig(d_model=2, l_max=16, kernel_dim=4)
    params = sgconv.init(cfg, seed=0, dtype="float64")
    seen = []
    bk = sgconv.backend("numpy")
    original = type(bk).rfft
    monkeypatch.setattr(type(bk), "rfft", lambda self, x, n: seen.append(x.dtype) or original(self, x, n))
    y = sgconv.apply(params, np.ones((1, 2, 16), "float32"))
    assert y.dtype == np.float32 and set(seen) == {np.dtype("float32")}


def test_half_precision_input_is_computed_in_float32():
    cfg = sgconv.SGConvConfig(d_model=2, l_max=16, kernel_dim=4)
    params = sgconv.init(cfg, seed=0)
    u = np.random.default_rng(0).standard_normal((1, 2, 16)).astype("float16")
    y = sgconv.apply(params, u)
    assert y.dtype == np.float16
    y32 = sgconv.apply(params, u.astype("float32"))
    # Only the final rounding to float16 separates the two: half an ulp of float16.
    np.testing.assert_array_equal(y, y32.astype("float16"))


def test_dropout_is_seeded_and_scaled():
    cfg = sgconv.SGConvConfig(d_model=4, l_max=32, kernel_dim=4, channels=2)
    params = sgconv.init(cfg, seed=0, dtype="float64")
    u = np.random.default_rng(0).standard_normal((2, 4, 32))
    a = sgconv.apply(params, u, dropout=0.5, rng=1)
    b = sgconv.apply(params, u, dropout=0.5, rng=1)
    c = sgconv.apply(params, u, dropout=0.5, rng=2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert not np.allclose(a, sgconv.apply(params, u))


@pytest.mark.parametrize("interpolation", ["linear", "nearest"])
@pytest.mark.parametrize("l_max,d", [(1, 4), (100, 3), (4096, 8)])
def test_normaliser_equals_the_norm_of_the_built_kernel(l_max, d, interpolation):
    # Z from the Gram matrices must equal the norm of the reference's full Cat(S).
    cfg = sgconv.SGConvConfig(d_model=3, l_max=l_max, kernel_dim=d, channels=2, bidirectional=True,
                              decay_min=0.7, decay_max=3.0, interpolation=interpolation)
    params = sgconv.init(cfg, seed=l_max, dtype="float64")
    k_raw = reference.cat_kernel(params.kernels, params.multiplier, interpolation=interpolation)
    # Both sides sum positive terms: recursive summation of K terms is exact to (K - 1) eps
    # relative, and the Gram route adds d terms per product; sqrt halves the error.
    rtol = (cfg.kernel_length + 4 * d) * np.finfo(np.float64).eps
    np.testing.assert_allclose(params.kernel_norm, reference.normaliser(k_raw), rtol=rtol)
