"""Tests of the 2D reference, in the order of ``reference/sgconv2d_ref.py``.

Every check compares against a fact computed independently of the code under test: the
draw order written out by hand, the 1D reference on the same arrays, a centred kernel
laid out by hand, ``scipy.signal.convolve2d``, two 1D convolutions in turn (a separable
kernel), the impulse response, and an FFT implementation of the whole layer written
separately in PyTorch.  Bounds come from ``assert_close`` / ``sum_bound`` of the 1D tests
(n eps sum|a_i b_i| for two direct evaluations of a sum of n products), derived next to
each use; a failure names the shapes and seed.
"""

import math

import numpy as np
import pytest
import scipy.signal
from scipy.special import erf

from . import (axis_state, centred, conv2d, conv_bidirectional, init_state2d, kernel,
                       kernel2d, layer2d, num_parameters, num_parameters2d)
from .test_sgconv_ref import EPS, assert_close, sum_bound

# 1. Parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize("learnable", [False, True])
def test_init_state2d_layout_and_draw_order(learnable):
    H, C, d, sizes, seed = 3, 2, 4, (10, 37), 5
    state = init_state2d(H, sizes, channels=C, kernel_dim=d, decay_min=1.5, decay_max=2.5,
                         learnable_decay=learnable, rng=seed)
    Nx, Ny = 3, 5                       # 1 + ceil(log2(10/4)) = 3, 1 + ceil(log2(37/4)) = 5
    rng = np.random.default_rng(seed)   # the documented order, drawn again by hand
    expected = {f"kernel_list_x.{i}": rng.standard_normal((2 * C, H, d)) for i in range(Nx)}
    expected.update({f"kernel_list_y.{i}": rng.standard_normal((2 * C, H, d)) for i in range(Ny)})
    expected["D"] = rng.standard_normal((C, H))
    b = 1 / math.sqrt(C * H)
    expected["output_linear.weight"] = rng.uniform(-b, b, (H, C * H))
    expected["output_linear.bias"] = rng.uniform(-b, b, H)
    if learnable:
        expected["decay_x"] = rng.uniform(1.5, 2.5, H)
        expected["decay_y"] = rng.uniform(1.5, 2.5, H)
    for key, value in expected.items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)
    for a in "xy":
        m = state[f"multiplier_{a}"]
        if learnable:
            assert np.shape(m) == () and float(m) == 1.0
        else:
            np.testing.assert_array_equal(m, np.linspace(1.5, 2.5, H).reshape(1, H, 1))
        assert state[f"kernel_norm_{a}"].shape == (2 * C, H, 1)
    assert set(state) == set(expected) | {"multiplier_x", "multiplier_y", "kernel_norm_x",
                                          "kernel_norm_y"}


def test_axis_kernels_are_the_1d_reference_kernels_with_unit_rows():
    """Each axis is a full bidirectional 1D SGConv: the 1D reference on the renamed arrays,
    every row of unit norm over its full length K at initialisation."""
    state = init_state2d(2, (9, 20), channels=2, kernel_dim=3, rng=1)
    for a, K in (("x", 12), ("y", 24)):                     # K = 3 * 2^(N-1) >= size
        one_d = axis_state(state, a)
        assert set(one_d) == ({f"kernel_list.{i}" for i in range(3 if a == "x" else 4)}
                              | {"multiplier", "kernel_norm"})
        k = kernel(one_d, K)                                 # (2C, H, K)
        assert k.shape == (4, 2, K)
        assert_close(np.linalg.norm(k, axis=-1), np.ones((4, 2)), 8 * K * EPS,
                     f"axis {a}: unit rows at init")
    with pytest.raises(ValueError):
        axis_state(state, "z")


def test_num_parameters2d():
    # (N_x + N_y) * 2C * H * d: N_x = 1 + ceil(log2(56/8)) = 4, N_y = 1 + ceil(log2(14/8)) = 2
    assert num_parameters2d(96, (56, 14), channels=1, kernel_dim=8) == (4 + 2) * 2 * 96 * 8
    assert num_parameters2d(4, 224, kernel_dim=16) == 2 * num_parameters(
        4, 224, kernel_dim=16, bidirectional=True)
    assert num_parameters2d(4, (224, 3), kernel_dim=16, n_scales=(2, 1)) == 3 * 2 * 4 * 16


# 2. Centred kernels ---------------------------------------------------------------------------


def test_centred_layout_by_hand():
    k = np.array([[[1.0, 2.0, 3.0]], [[10.0, 20.0, 30.0]]])  # (2C=2, H=1, 3): k0, k1
    # offsets -3..3 for L = 4: k1[2], k1[1], k1[0] | k0[0], k0[1], k0[2], (k0[3] = 0)
    np.testing.assert_array_equal(centred(k, 4)[0, 0], [30.0, 20.0, 10.0, 1.0, 2.0, 3.0, 0.0])
    np.testing.assert_array_equal(centred(k, 2)[0, 0], [10.0, 1.0, 2.0])
    np.testing.assert_array_equal(centred(k, 1)[0, 0], [1.0])
    with pytest.raises(ValueError):
        centred(k[:1], 3)                                    # odd rows: not bidirectional


def test_kernel2d_is_the_outer_product_with_norm_two_per_axis():
    """k2 = kx~ (x) ky~; with both halves fully inside (size - 1 >= K) each centred axis
    kernel has norm^2 = ||k0||^2 + ||k1||^2 = 2 at init, so ||k2|| = 2."""
    state = init_state2d(2, (8, 4), channels=1, kernel_dim=4, rng=2)   # K_x = 8, K_y = 4
    X, Y = 9, 5
    k2 = kernel2d(state, (X, Y))
    assert k2.shape == (1, 2, 2 * X - 1, 2 * Y - 1)
    kx = centred(kernel(axis_state(state, "x"), X), X)
    ky = centred(kernel(axis_state(state, "y"), Y), Y)
    np.testing.assert_array_equal(k2, kx[..., :, None] * ky[..., None, :])
    assert_close(np.sqrt((k2 ** 2).sum(axis=(-2, -1))), np.full((1, 2), 2.0), 64 * EPS,
                 "||k2|| = 2 at init")
    # Non-square: swapping the axes gives another kernel.
    assert not np.allclose(kernel2d(state, (X, Y)).transpose(0, 1, 3, 2), kernel2d(state, (Y, X)))


# 3. The convolution -----------------------------------------------------------------------------


def _random(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("X, Y, Rx, Ry", [(5, 7, 4, 6), (1, 1, 0, 0), (1, 6, 0, 5), (7, 1, 6, 0),
                                          (11, 4, 3, 1), (6, 6, 9, 2)])
def test_conv2d_matches_scipy_convolve2d(X, Y, Rx, Ry):
    """y = full 2D convolution with the centred kernel, cut to the image: index (x + Rx,
    y + Ry) of scipy's 'full' output (nothing wraps; offsets beyond the image vanish)."""
    B, C, H = 2, 2, 3
    seed = 100 * X + Y
    u = _random((B, H, X, Y), seed)
    k2 = _random((C, H, 2 * Rx + 1, 2 * Ry + 1), seed + 1)
    D = _random((C, H), seed + 2)
    y = conv2d(u, k2, D)
    assert y.shape == (B, C, H, X, Y)
    expected = np.empty_like(y)
    abs_sum = np.empty_like(y)
    for b in range(B):
        for c in range(C):
            for h in range(H):
                full = scipy.signal.convolve2d(u[b, h], k2[c, h], mode="full")
                absf = scipy.signal.convolve2d(np.abs(u[b, h]), np.abs(k2[c, h]), mode="full")
                expected[b, c, h] = full[Rx:Rx + X, Ry:Ry + Y] + D[c, h] * u[b, h]
                abs_sum[b, c, h] = absf[Rx:Rx + X, Ry:Ry + Y] + np.abs(D[c, h] * u[b, h])
    # At most (2X-1)(2Y-1) + 1 products per output.
    n = (2 * X - 1) * (2 * Y - 1) + 1
    assert_close(y, expected, sum_bound(n, abs_sum), f"conv2d X={X} Y={Y} Rx={Rx} Ry={Ry}")


@pytest.mark.parametrize("X, Y", [(6, 9), (1, 5), (13, 1), (2, 2)])
def test_separable_conv2d_is_two_1d_convolutions(X, Y):
    """With k2 = kx~ (x) ky~ (and no D), the 2D convolution is the 1D bidirectional
    convolution along y followed by the one along x (both linear, both cut to the image)."""
    B, C, H = 2, 2, 2
    u = _random((B, H, X, Y), X * Y)
    kx = _random((2 * C, H, X), X * Y + 1)                   # (2C, H, X)
    ky = _random((2 * C, H, Y), X * Y + 2)
    k2 = centred(kx, X)[..., :, None] * centred(ky, Y)[..., None, :]
    y = conv2d(u, k2, None)                                  # (B, C, H, X, Y)
    expected = np.empty_like(y)
    for c in range(C):
        rows_x, rows_y = kx[[c, C + c]], ky[[c, C + c]]      # one head: (2, H, size)
        along_y = conv_bidirectional(u.reshape(B * 1, H, X, Y).transpose(0, 2, 1, 3)
                                     .reshape(B * X, H, Y), rows_y, None)[:, 0]  # (B*X, H, Y)
        along_y = along_y.reshape(B, X, H, Y).transpose(0, 3, 2, 1).reshape(B * Y, H, X)
        both = conv_bidirectional(along_y, rows_x, None)[:, 0]           # (B*Y, H, X)
        expected[:, c] = both.reshape(B, Y, H, X).transpose(0, 2, 3, 1)
    abs_k2 = np.abs(k2)
    abs_sum = conv2d(np.abs(u), abs_k2, None)
    n = (2 * X - 1) * (2 * Y - 1)
    assert_close(y, expected, 2 * sum_bound(n, abs_sum), f"separable X={X} Y={Y}")


def test_conv2d_impulse_response_and_no_wrap():
    """An impulse at (px, py) returns the kernel placed there, with D at the impulse, and
    zeros where the kernel would leave the image (nothing wraps around an edge)."""
    X, Y, C, H = 5, 4, 1, 1
    k2 = _random((C, H, 2 * X - 1, 2 * Y - 1), 7)
    D = np.array([[0.5]])
    for px, py in [(0, 0), (4, 3), (2, 1)]:
        u = np.zeros((1, H, X, Y))
        u[..., px, py] = 1.0
        y = conv2d(u, k2, D)[0, 0, 0]
        expected = np.array([[k2[0, 0, x - px + X - 1, yy - py + Y - 1] for yy in range(Y)]
                             for x in range(X)])
        expected[px, py] += 0.5
        np.testing.assert_array_equal(y, expected)


def test_conv2d_errors():
    u = np.zeros((1, 2, 3, 3))
    with pytest.raises(ValueError):
        conv2d(u[0], np.zeros((1, 2, 3, 3)), None)            # u not 4D
    with pytest.raises(ValueError):
        conv2d(u, np.zeros((1, 2, 2, 3)), None)               # even side
    with pytest.raises(ValueError):
        conv2d(u, np.zeros((1, 3, 3, 3)), None)               # wrong H
    with pytest.raises(ValueError):
        conv2d(u, np.zeros((1, 2, 3, 3)), np.zeros((2, 2)))   # D (C, H) mismatch


# 4. The layer -----------------------------------------------------------------------------------


def _torch_axis_kernel(state, axis, L, interpolation):
    """One axis's kernel (2C, H, L), built independently in PyTorch float64."""
    import torch
    F = torch.nn.functional
    T = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    N = sum(key.startswith(f"kernel_list_{axis}.") for key in state)
    mult = T(state[f"multiplier_{axis}"])
    pieces = []
    for i in range(N):
        kw = {"align_corners": False} if interpolation == "linear" else {}
        up = F.interpolate(T(state[f"kernel_list_{axis}.{i}"]), scale_factor=2 ** max(0, i - 1),
                           mode=interpolation, **kw)
        pieces.append(up * mult ** (N - 1 - i))
    k = torch.cat(pieces, dim=-1)
    if f"decay_{axis}" in state:
        t = torch.arange(k.shape[-1], dtype=torch.float64)
        k = k * (t + 1)[None, None, :] ** (-T(state[f"decay_{axis}"])[None, :, None])
    k = k / T(state[f"kernel_norm_{axis}"])
    return F.pad(k, (0, max(0, L - k.shape[-1])))[..., :L]


def _torch_layer2d(state, u, interpolation):
    """The 2D layer written independently in PyTorch float64: each axis kernel placed in a
    length-2L buffer (k0 from 0, k1 reversed at the end), the 2D kernel as their outer
    product, an FFT convolution of size (2X, 2Y) (linear), D, GELU and the mixing."""
    import torch
    F = torch.nn.functional
    T = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    u = T(u)
    B, H, X, Y = u.shape
    D = T(state["D"])
    C = D.shape[0]
    bufs = []
    for axis, L in (("x", X), ("y", Y)):
        k = _torch_axis_kernel(state, axis, L, interpolation)
        bufs.append(F.pad(k[:C], (0, L)) + F.pad(k[C:].flip(-1), (L, 0)))  # lag -s at 2L - s
    k2 = bufs[0][..., :, None] * bufs[1][..., None, :]                     # (C, H, 2X, 2Y)
    s = (2 * X, 2 * Y)
    y = torch.fft.irfft2(torch.fft.rfft2(u, s=s)[:, None] * torch.fft.rfft2(k2, s=s)[None],
                         s=s)[..., :X, :Y]
    y = y + D[None, :, :, None, None] * u[:, None]
    y = F.gelu(y.reshape(B, C * H, X, Y))
    out = torch.einsum("oi,bixy->boxy", T(state["output_linear.weight"]), y)
    return (out + T(state["output_linear.bias"])[None, :, None, None]).numpy(), k2.numpy()


@pytest.mark.parametrize("learnable, interpolation, X, Y", [
    (False, "linear", 12, 7), (True, "nearest", 5, 16), (False, "linear", 1, 1),
    (False, "nearest", 23, 2), (True, "linear", 3, 40)])
def test_layer2d_matches_independent_torch_fft(learnable, interpolation, X, Y):
    pytest.importorskip("torch")
    B, H, C, d, seed = 2, 3, 2, 4, 9
    state = init_state2d(H, (12, 20), channels=C, kernel_dim=d, decay_min=1.2, decay_max=2.5,
                         learnable_decay=learnable, interpolation=interpolation, rng=seed)
    u = _random((B, H, X, Y), seed + 1)
    out = layer2d(state, u, interpolation=interpolation)
    assert out.shape == (B, H, X, Y)
    expected, k2 = _torch_layer2d(state, u, interpolation)
    # A 2D FFT convolution of size n = 4XY errs by about eps log2(n) ||u||_2 ||k2||_2 (8 for
    # the constant, as the 1D test); GELU is 1.13-Lipschitz; the mixing adds sum_i |W_oi|.
    n = 4 * X * Y
    u2 = np.sqrt((u ** 2).sum(axis=(-2, -1))).max()
    k_2 = np.sqrt((k2 ** 2).sum(axis=(-2, -1))).max() + np.abs(state["D"]).max()
    conv_err = 8 * EPS * max(math.log2(n), 1.0) * u2 * k_2
    W = state["output_linear.weight"]
    bound = 1.13 * conv_err * np.abs(W).sum(axis=1).max() + 8 * C * H * EPS * np.abs(expected).max()
    assert_close(out, expected, bound, f"layer2d learnable={learnable} {interpolation} "
                                       f"B={B} H={H} C={C} X={X} Y={Y} seed={seed}")


def test_layer2d_by_hand_gelu_and_mixing():
    """The layer's last steps written out: GELU(x) = x/2 (1 + erf(x/sqrt 2)), row c*H + h."""
    state = init_state2d(2, (4, 3), channels=2, kernel_dim=2, rng=3)
    u = _random((1, 2, 4, 3), 4)
    z = conv2d(u, kernel2d(state, (4, 3)), state["D"]).reshape(1, 4, 4, 3)  # (B, C*H, X, Y)
    g = 0.5 * z * (1 + erf(z / math.sqrt(2)))
    W, b = state["output_linear.weight"], state["output_linear.bias"]
    expected = np.einsum("oi,bixy->boxy", W, g) + b[None, :, None, None]
    assert_close(layer2d(state, u), expected, 16 * EPS * np.abs(expected).max() + 1e-300,
                 "layer2d = W GELU(conv2d) + b")


def test_layer2d_channels_last_and_errors():
    state = init_state2d(3, (5, 6), channels=1, kernel_dim=2, rng=0)
    u = _random((2, 3, 5, 6), 1)
    y = layer2d(state, u)
    np.testing.assert_array_equal(layer2d(state, np.moveaxis(u, 1, 3), transposed=False),
                                  np.moveaxis(y, 1, 3))
    with pytest.raises(ValueError):
        layer2d(state, u[0])                                   # not 4D
    with pytest.raises(ValueError):
        layer2d(state, u, transposed=False)                    # H on the wrong axis
