"""Tests of the suite's own helpers: the comparison, the spectrum bound, the reference adjoint.

The gradient property trusts oracle.conv_vjp / layer_vjp; here they are held to float64
central differences of the reference itself, with bounds derived next to each check.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import sgconv

from . import oracle, reference, tolerance

EPS64 = tolerance.EPS64


def test_assert_close_can_fail():
    tolerance.assert_close(np.ones(3), np.ones(3), 0.0, "equal")
    with pytest.raises(AssertionError, match="outside the tolerance"):
        tolerance.assert_close(np.ones(3), np.array([1.0, 1.0, 1.0 + 1e-12]), 1e-13, "off")
    with pytest.raises(AssertionError):
        tolerance.assert_close(np.array([np.nan]), np.array([0.0]), 1.0, "nan")
    with pytest.raises(AssertionError, match="shape"):
        tolerance.assert_close(np.ones(3), np.ones(4), 1.0, "shape")


@pytest.mark.parametrize("m", [1, 2, 7, 64, 129])
def test_spectrum_peak_bounds_the_spectrum(m):
    """spectrum_peak(x) >= |X(w)| on a much finer grid, and <= ||x||_1."""
    rng = np.random.default_rng(m)
    x = rng.standard_normal((5, m))
    x[0] = 1.0                                     # peak exactly at w = 0: ||x||_1
    x[1] = (-1.0) ** np.arange(m)                  # peak at w = pi
    peak = tolerance.spectrum_peak(x)
    fine = np.abs(np.fft.rfft(x, n=4096 * max(m, 2), axis=-1)).max(axis=-1)
    assert np.all(peak >= fine * (1 - 1e-12)), (peak, fine)
    assert np.all(peak <= np.abs(x).sum(axis=-1) * (1 + 1e-12))


def _abs_pairing(gy, u, k, D, bidirectional):
    """sum |gy| (|k| * |u| + |D| |u|): what the rounding of <gy, conv(u, k, D)> scales with."""
    absD = None if D is None else np.abs(D)
    return float(np.sum(np.abs(gy) * reference.conv(np.abs(u), np.abs(k), absD, bidirectional)))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("L, taps", [(1, 1), (9, 4), (13, 13), (20, 7)])
def test_conv_vjp_is_the_adjoint(bidirectional, L, taps):
    """conv is linear in u and in (k, D), so <gy, conv(u+v) - conv(u-v)>/2 = <gu, v> exactly
    up to rounding: each of the pairings errs by at most (taps + L + 2) eps |pairing|."""
    rng = np.random.default_rng(L * 31 + taps + bidirectional)
    B, C, H = 2, 2, 3
    Cp = 2 * C if bidirectional else C
    u, v = rng.standard_normal((2, B, H, L))
    k, dk = rng.standard_normal((2, Cp, H, taps))
    D, dD = rng.standard_normal((2, C, H))
    gy = rng.standard_normal((B, C, H, L))
    gu, gk, gD = oracle.conv_vjp(u, k, D, bidirectional, gy)
    assert gu.shape == (B, H, L) and gk.shape == (Cp, H, taps) and gD.shape == (C, H)

    def pairing(x, kk, DD):
        return float(np.sum(gy * reference.conv(x, kk, DD, bidirectional)))

    n = taps + L + 2
    fd = (pairing(u + v, k, D) - pairing(u - v, k, D)) / 2
    bound = n * EPS64 * (_abs_pairing(gy, u + v, k, D, bidirectional)
                         + _abs_pairing(gy, u - v, k, D, bidirectional)
                         + float(np.sum(np.abs(gu) * np.abs(v))))
    assert abs(fd - np.sum(gu * v)) <= bound, (fd, np.sum(gu * v), bound)
    fd = (pairing(u, k + dk, D + dD) - pairing(u, k - dk, D - dD)) / 2
    bound = n * EPS64 * (_abs_pairing(gy, u, k + dk, D + dD, bidirectional)
                         + _abs_pairing(gy, u, k - dk, D - dD, bidirectional)
                         + float(np.sum(np.abs(gk * dk)) + np.sum(np.abs(gD * dD))))
    assert abs(fd - np.sum(gk * dk) - np.sum(gD * dD)) <= bound


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("learnable_decay", [False, True])
@pytest.mark.parametrize("transposed", [True, False])
def test_layer_vjp_matches_central_differences(bidirectional, learnable_decay, transposed):
    """<g, layer(x + h v)> - <g, layer(x - h v)> over 2h equals <grad, v> to within the
    central difference's truncation error h^2/6 max|f'''| plus the rounding of both
    evaluations over 2h.  Along v only GELU is nonlinear: f''' = sum (W^T g) GELU'''(z) dz^3
    with |GELU'''| <= 0.8 and dz the (linear) change of z along v."""
    config = sgconv.SGConvConfig(d_model=3, l_max=20, channels=2, kernel_dim=4,
                                 bidirectional=bidirectional, learnable_decay=learnable_decay,
                                 decay_min=1.5, decay_max=2.5)
    params = sgconv.init(config, seed=3, dtype="float64", backend="numpy")
    bk = sgconv.backend("numpy")
    state = oracle.params_state(params, bk)
    rng = np.random.default_rng(4)
    B, H, L = 2, 3, 17
    u = rng.standard_normal((B, H, L))
    g = rng.standard_normal((B, H, L))
    x, gx = (u, g) if transposed else (u.swapaxes(1, 2), g.swapaxes(1, 2))
    gu, gws, gD = oracle.layer_vjp(state, config, x, gx, transposed)
    assert gu.shape == x.shape and gD.shape == (2, 3)
    assert [w.shape for w in gws] == [w.shape for w in oracle.sub_kernels(state)]

    def f(st, inp):
        return float(np.sum(gx * reference.layer(st, inp, bidirectional, transposed)))

    W = np.asarray(state["output_linear.weight"])
    a_abs = np.abs(np.einsum("oi,bol->bil", W, g))                        # |W^T g|, (B, C*H, L)
    k = reference.kernel(state, L)
    y_abs = float(np.sum(np.abs(gx) * np.abs(reference.layer(state, x, bidirectional, transposed))))
    h = 1e-3
    directions = {"u": None, "D": "D"} | {f"w_{i}": f"kernel_list.{i}" for i in range(len(gws))}
    for what, key in directions.items():
        if key is None:
            v = rng.standard_normal(x.shape)
            plus, minus = (state, x + h * v), (state, x - h * v)
            grad = float(np.sum(gu * v))
            dz = reference.conv(v if transposed else v.swapaxes(1, 2), k, None, bidirectional)
        else:
            v = rng.standard_normal(np.shape(state[key]))
            plus = ({**state, key: state[key] + h * v}, x)
            minus = ({**state, key: state[key] - h * v}, x)
            grad = float(np.sum((gD if key == "D" else gws[int(key.split(".")[1])]) * v))
            if key == "D":
                dz = np.zeros((B, 2, H, L))
                dz += v[None, :, :, None] * u[:, None]
            else:
                dk = (reference.kernel(plus[0], L) - reference.kernel(minus[0], L)) / (2 * h)
                dz = reference.conv(u, dk, None, bidirectional)
        fd = (f(*plus) - f(*minus)) / (2 * h)
        truncation = h * h / 6 * 0.8 * float(np.sum(a_abs * np.abs(dz.reshape(a_abs.shape)) ** 3))
        rounding = 2 * 64 * EPS64 * y_abs / (2 * h) * 4
        assert abs(fd - grad) <= truncation + rounding + 64 * EPS64 * abs(grad), (
            f"layer gradient w.r.t. {what}: finite difference {fd!r} vs adjoint {grad!r}, "
            f"bound {truncation + rounding:.3e}")


@pytest.mark.parametrize("dtype, lower", [("float32", "float16"), ("float32", "bfloat16"),
                                          ("float64", "float32")])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_layer_bound_rejects_lower_precision(dtype, lower, bidirectional):
    """The layer's tolerance for ``dtype`` is tighter than one rounding of the convolution's
    output to a lower precision (float16 or bfloat16 for float32, e.g. a half-precision or
    TF32-like FFT; float32 for float64): a backend doing that fails."""
    config = sgconv.SGConvConfig(d_model=3, l_max=64, channels=2, kernel_dim=8,
                                 bidirectional=bidirectional)
    params = sgconv.init(config, seed=5, dtype="float64", backend="numpy")
    state = oracle.params_state(params, sgconv.backend("numpy"))
    u = np.random.default_rng(6).standard_normal((2, 3, 64))
    bound = tolerance.layer_bound(state, config, u, dtype)
    k = reference.kernel(state, 64)
    z = reference.conv(u, k, state["D"], bidirectional)                    # (B, C, H, L)
    if lower == "bfloat16":                      # keep 8 significant bits: bfloat16 rounding
        mantissa, exponent = np.frexp(z)
        z_low = np.ldexp(np.round(mantissa * 256) / 256, exponent)
    else:
        z_low = z.astype(lower).astype(np.float64)
    W, b = state["output_linear.weight"], state["output_linear.bias"]

    def mix(zz):
        return np.einsum("oi,bil->bol", W, reference.gelu(zz).reshape(2, 6, 64)) + b[:, None]

    exact = reference.layer(state, u, bidirectional)
    assert np.allclose(mix(z), exact, rtol=1e-12, atol=1e-12)
    assert np.all(np.abs(mix(z) - exact) <= bound)
    assert np.any(np.abs(mix(z_low) - exact) > bound), (
        f"a {lower} rounding of z stays within the {dtype} tolerance")
    assert math.isfinite(float(bound.max()))
