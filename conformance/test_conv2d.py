"""The 2D operator's conformance: the properties of conformance/properties2d.py as
Hypothesis tests (one per property and backend), and tests of the 2D suite's own helpers.

``backend_name`` is parametrized by conftest.py over the selected backends.  The 2D
reference's direct sums cost O(X^2 Y^2), and JAX compiles every new shape, so each
property runs a quarter of its backend's share of the stratified 2D design
(:func:`~conformance.examples2d.design2d`; in ``thorough`` every row, then 100 random
draws), gradients a sixth, after the pinned cases (:data:`~conformance.examples2d.PINNED2D`:
a 1 x 1 image, a prime non-square image larger than the built sizes, channels-last
float64 with two heads).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import reject

from . import reference

from . import oracle2d, tolerance, tolerance2d
from . import properties2d as P
from .examples2d import Example2d, label2d
from .hypothesis_profiles import conformance_test


def run(check, backend_name, ex):
    """Label the draw and run one property; a draw it says nothing about is rejected."""
    label2d(ex, backend_name, check.__name__)
    try:
        check(backend_name, ex)
    except P.NotApplicable:
        reject()


@conformance_test(scale=0.25, two_d=True)
def test_kernel2d_matches_reference(backend_name, ex):
    run(P.check2d_kernel, backend_name, ex)


@conformance_test(scale=0.25, two_d=True)
def test_conv2d_matches_direct_sums(backend_name, ex):
    run(P.check2d_conv, backend_name, ex)


@conformance_test(scale=0.25, two_d=True)
def test_layer2d_matches_reference(backend_name, ex):
    run(P.check2d_layer, backend_name, ex)


@conformance_test(scale=0.25, two_d=True, min_side=2)
def test_reach_of_each_tap_along_each_axis(backend_name, ex):
    run(P.check2d_reach, backend_name, ex)


@conformance_test(scale=0.25, two_d=True)
def test_linearity_2d(backend_name, ex):
    run(P.check2d_linearity, backend_name, ex)


@conformance_test(scale=0.25, two_d=True, min_side=2)
def test_shift_equivariance_along_each_axis(backend_name, ex):
    run(P.check2d_shift, backend_name, ex)


@conformance_test(scale=0.25, two_d=True)
def test_impulse_response_2d(backend_name, ex):
    run(P.check2d_impulse, backend_name, ex)


@conformance_test(scale=0.25, two_d=True)
def test_batch_independence_2d(backend_name, ex):
    run(P.check2d_batch, backend_name, ex)


@conformance_test(scale=0.25, two_d=True)
def test_initial_parameters_2d(backend_name, ex):
    run(P.check2d_init, backend_name, ex)


@conformance_test(scale=0.25, two_d=True)
def test_dtypes_shapes_devices_2d(backend_name, ex):
    run(P.check2d_dtypes_shapes, backend_name, ex)


@conformance_test(scale=0.25, two_d=True)
def test_parameter_transfer_2d(backend_name, ex):
    run(P.check2d_transfer, backend_name, ex)


@pytest.mark.autodiff
@conformance_test(scale=1 / 6, two_d=True)
def test_gradients_2d(backend_name, ex):
    run(P.check2d_gradients, backend_name, ex)


# --- the suite's own 2D helpers -------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (6, 9), (13, 13)])
def test_spectrum_peak2d_bounds_the_spectrum(shape):
    """spectrum_peak2d(x) >= |X(w1, w2)| on a much finer grid, and <= ||x||_1."""
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((4,) + shape)
    x[0] = 1.0                                          # peak at (0, 0): ||x||_1
    x[1] = (-1.0) ** np.add.outer(np.arange(shape[0]), np.arange(shape[1]))  # peak at (pi, pi)
    peak = tolerance2d.spectrum_peak2d(x)
    fine = np.abs(np.fft.rfft2(x, s=(512, 512))).max(axis=(-2, -1))
    assert np.all(peak >= fine * (1 - 1e-12)), (peak, fine)
    assert np.all(peak <= np.abs(x).sum(axis=(-2, -1)) * (1 + 1e-12))


def test_uncentre_is_the_adjoint_of_centred():
    """<centred(k), g> == <k, uncentre(g)> for random k, g: the map of the axis gradients."""
    rng = np.random.default_rng(3)
    for L, taps in ((1, 1), (5, 3), (6, 6)):
        k = rng.standard_normal((4, 2, taps))
        g = rng.standard_normal((2, 2, 2 * L - 1))
        lhs = np.sum(reference.centred(k, L) * g)
        rhs = np.sum(k * oracle2d.uncentre(g, taps))
        assert abs(lhs - rhs) <= 8 * tolerance.EPS64 * np.sum(np.abs(k)) * np.abs(g).max()


@pytest.mark.parametrize("learnable, transposed", [(False, True), (True, False)])
def test_layer2d_vjp_matches_central_differences(learnable, transposed):
    """oracle2d.layer2d_vjp is the gradient of reference.layer2d: <g, layer(p + h v)> -
    <g, layer(p - h v)> / 2h against <grad, v> for random directions v of u, D and each
    sub-kernel.  Central differences err by h^2 |f'''| / 6 (truncation) plus 2 eps |f| / h
    (rounding); with h = 1e-5 on O(1) inputs both stay below 1e-7 relative."""
    B, H, C, X, Y = 2, 2, 2, 5, 4
    state = reference.init_state2d(H, (X, 6), channels=C, kernel_dim=2, decay_min=1.5,
                                   decay_max=2.5, learnable_decay=learnable, rng=7)
    config = P.sgconv.SGConv2dConfig(H, (X, 6), channels=C, kernel_dim=2, decay_min=1.5,
                                     decay_max=2.5, learnable_decay=learnable)
    rng = np.random.default_rng(8)
    u = rng.standard_normal((B, H, X, Y))
    g = rng.standard_normal((B, H, X, Y))
    layout = (lambda a: a) if transposed else (lambda a: np.moveaxis(a, 1, 3))  # noqa: E731
    gu, gwx, gwy, gD = oracle2d.layer2d_vjp(state, config, layout(u), layout(g), transposed)

    def f(st, x):
        return float(np.sum(layout(g) * reference.layer2d(st, layout(x), transposed)))

    h = 1e-5
    scale = abs(f(state, u)) + 1.0
    v = rng.standard_normal(u.shape)
    fd = (f(state, u + h * v) - f(state, u - h * v)) / (2 * h)
    want = float(np.sum((gu if transposed else np.moveaxis(gu, 3, 1)) * v))
    assert abs(fd - want) <= 1e-7 * scale, ("u", fd, want)
    keys = ["D"] + [f"kernel_list_x.{i}" for i in range(len(gwx))] + \
        [f"kernel_list_y.{i}" for i in range(len(gwy))]
    for key, grad in zip(keys, [gD] + gwx + gwy):
        v = rng.standard_normal(np.shape(state[key]))
        plus, minus = dict(state), dict(state)
        plus[key], minus[key] = state[key] + h * v, state[key] - h * v
        fd = (f(plus, u) - f(minus, u)) / (2 * h)
        assert abs(fd - float(np.sum(grad * v))) <= 1e-7 * scale, (key, fd, np.sum(grad * v))


@pytest.mark.parametrize("dtype, lower", [("float32", "bfloat16"), ("float32", "float16"),
                                          ("float64", "float32")])
def test_layer2d_bound_rejects_lower_precision(dtype, lower):
    """The 2D bounds are tight enough to see a precision loss: the correct layer output
    rounded once to a lower precision (a half-precision FFT, say) fails them."""
    ex = Example2d(d_model=3, channels=2, kernel_dim=2, sizes=(8, 8), image=(9, 7), dtype=dtype,
                   seed=31)
    state = reference.init_state2d(3, (8, 8), channels=2, kernel_dim=2, rng=31)
    u = np.random.default_rng(32).standard_normal((2, 3, 9, 7)).astype(dtype).astype(np.float64)
    exact = reference.layer2d(state, u)
    bound = tolerance2d.layer2d_bound(state, ex.config, u, dtype)
    assert tolerance.error_ratio(exact, exact, bound) == 0.0
    if lower == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        rounded = exact.astype(ml_dtypes.bfloat16).astype(np.float64)
    else:
        rounded = exact.astype(lower).astype(np.float64)
    ratio = tolerance.error_ratio(rounded, exact, bound)
    assert ratio > 1.0, f"rounding to {lower} stayed within the {dtype} bound (ratio {ratio:.3g})"
    assert math.isfinite(ratio)
