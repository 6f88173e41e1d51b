"""The tolerance rule of conformance/tolerance.py, carried to the 2D operator.

Nothing new is tuned: each bound below is the 1D rule's, with the 1D quantities replaced
by their 2D counterparts, for these reasons.

1. **FFT convolution**, per output plane (b, c, h).  A 2D FFT of nx by ny points is a 1D
   FFT along each axis, log2(nx) + log2(ny) = log2(nx ny) butterfly stages in all, each
   rounding once; so rule part 1 holds with n = nx ny:

       |dy| <= C_FFT eps log2(nx ny) (||u||_2 ||k2||_2 + ||y||_2)

   where the norms are over the plane and k2 is the two-sided 2D kernel with |D| at offset
   (0, 0) (magnitudes, as in 1D).  The kernel's spectrum is formed as FFT(kx) (x) RFFT(ky)
   + D: the two axis transforms round log2(nx) + log2(ny) times and the product and the
   sum once each, no more than one transform of nx ny points plus the twiddle slack that
   C_FFT = 4 already holds.  Any plan has nx <= 2 (X + tx) and ny <= 2 (Y + ty), so
   log2(nx ny) <= log2(4 (X + tx)(Y + ty)) is used (at least log2(16) = 4, so a 1 x 1
   image still gets a bound).  There are no overlap-add blocks in 2D.

2. **A kernel error** dk2 reaches an output as dk2 (*) u, at most ||dk2||_2 S2(u), where
   S2(u) bounds the peak of u's 2D spectrum (:func:`spectrum_peak2d`, rigorous: Bernstein's
   inequality along each axis in turn).  The axis kernels are computed with elementwise
   errors ex, ey bounded by rule part 3 of the 1D rule (tolerance.kernel_bound on each
   axis's 1D state); the outer product's error is then, in 2-norm,

       ||dk2|| <= ||ex~|| ||ky~|| + ||kx~|| ||ey~|| + ||ex~|| ||ey~||

   (~ the centred layout, which keeps norms: every tap appears once).

3. **GELU and the mixing linear**: exactly rule part 4, pointwise over the X Y positions;
   the reference's own direct sums round at most (2X - 1)(2Y - 1) + 1 times per output.

4. **Gradients**, rule part 5: gu is an FFT correlation of gy with k2 (rule 1 with a = gy,
   b = k2); the gradient of the 2D kernel gk2 = sum_b corr(gy, u) is rule 1 with (gy, u),
   and it reaches each axis kernel through a contraction with the other axis's centred
   kernel, gkx~[dx] = sum_dy gk2[dx, dy] ky~[dy]: an error E of gk2 (2-norm e over the
   plane, rule 1's model) adds at most e ||ky~||_2 (Cauchy-Schwarz over dy), and the
   contraction's own sums of Fy <= Y + 1 products, taken in the frequency domain, add
   (Y + 3) eps sum_dy |gk2[dx, dy]| |ky~[dy]|.  From there to the sub-kernels as in 1D.

Laws (shift, batch, linearity) compare two backend results, each within its bound of the
exact value, so they allow the sum of two bounds, as in 1D.
"""

from __future__ import annotations

import math

import numpy as np

from . import reference

from . import oracle, oracle2d, tolerance
from .tolerance import EPS64, GELU_D1, GELU_D2, eps, fft_bound

__all__ = ["log2_fft_size", "norm2d", "spectrum_peak2d", "axis_kernel_bounds", "conv2d_bound",
           "layer2d_bound", "conv2d_vjp_bound", "layer2d_vjp_bound"]


def log2_fft_size(X: int, Y: int, tx: int, ty: int) -> float:
    """log2 of an upper bound on nx ny for any linear-convolution plan: 4 (X + tx)(Y + ty)."""
    return math.log2(4 * (X + tx) * (Y + ty))


def norm2d(x) -> np.ndarray:
    """2-norm over the last two axes (one image plane)."""
    return np.sqrt(np.sum(np.square(np.asarray(x, dtype=np.float64)), axis=(-2, -1)))


def spectrum_peak2d(x) -> np.ndarray:
    """Upper bound on sup_{w1, w2} |sum_{s, t} x[..., s, t] e^{-i (w1 s + w2 t)}| per plane.

    For each fixed w2 the spectrum is a trigonometric polynomial of degree m1 - 1 in w1,
    so by Bernstein's inequality its peak is at most the maximum on a grid of M1 points
    divided by 1 - pi (m1 - 1)/M1; the same holds along w2 at every grid point w1.  So the
    maximum on an M1 x M2 grid divided by both factors bounds the peak; and so does
    ||x||_1.  M_i >= 16 m_i keeps each factor >= 1 - pi/16.
    """
    x = np.asarray(x, dtype=np.float64)
    m1, m2 = x.shape[-2:]
    l1 = np.abs(x).sum(axis=(-2, -1))
    M1, M2 = (1 << max(4, math.ceil(math.log2(16 * m))) for m in (m1, m2))
    grid = np.abs(np.fft.rfft2(x, s=(M1, M2), axes=(-2, -1))).max(axis=(-2, -1))
    factor = (1.0 - math.pi * (m1 - 1) / M1) * (1.0 - math.pi * (m2 - 1) / M2)
    return np.minimum(l1, grid / factor)


def _abs_centred(kx, ky, D, sizes):
    """|kx~| (x) |ky~| with |D| at offset (0, 0): the kernel magnitude of rule 1."""
    return oracle2d.centred2d(np.abs(kx), np.abs(ky), None if D is None else np.abs(D), sizes)


def axis_kernel_bounds(state, config, sizes, dtype: str):
    """Elementwise error bounds of the two computed axis kernels, (2C, H, X) and (2C, H, Y):
    the 1D rule part 3 on each axis's 1D state."""
    return tuple(tolerance.kernel_bound(oracle2d.axis_state(state, a), axis, L, dtype)
                 for a, axis, L in zip("xy", config.axes, sizes))


def kernel2d_error(kx, ky, ex, ey, sizes) -> np.ndarray:
    """2-norm bound (C, H) of the error of the 2D kernel formed from axis kernels computed
    with elementwise errors ex, ey (rule part 2 above)."""
    X, Y = sizes
    cx, cy = norm2d(reference.centred(np.abs(kx), X)[..., None]), \
        norm2d(reference.centred(np.abs(ky), Y)[..., None])
    dx, dy = norm2d(reference.centred(ex, X)[..., None]), norm2d(reference.centred(ey, Y)[..., None])
    return dx * cy + cx * dy + dx * dy


def conv2d_bound(u, kx, ky, D, dtype: str, *, k_err=None):
    """Max-abs error bound per output plane of conv2d(u, kx, ky, D) against the exact
    sums: (B, C, H, 1, 1).  u (B, H, X, Y), kx (2C, H, tx), ky (2C, H, ty), D (C, H) or
    None: the exact values the backend was given.  k_err: (C, H) 2-norm bounds of an error
    already in the 2D kernel.  Includes the reference's own float64 direct sums."""
    u = np.asarray(u, dtype=np.float64)
    B, H, X, Y = u.shape
    keff = _abs_centred(kx, ky, D, (X, Y))                                  # (C, H, 2X-1, 2Y-1)
    log2n = log2_fft_size(X, Y, kx.shape[-1], ky.shape[-1])
    u2, k2 = norm2d(u), norm2d(keff)                                        # (B, H), (C, H)
    exact = oracle2d.centred2d(kx, ky, None, (X, Y))
    y2 = norm2d(reference.conv2d(u, exact, D))                              # (B, C, H)
    bound = fft_bound(u2[:, None], k2[None], y2, log2n, dtype, False)       # (B, C, H)
    if k_err is not None:
        bound = bound + np.asarray(k_err)[None] * spectrum_peak2d(u)[:, None]   # rule 2
    taps = (2 * X - 1) * (2 * Y - 1) + 1
    bound = bound + taps * EPS64 * u2[:, None] * k2[None]                   # reference's sums
    return bound[..., None, None]


def _layer_forward(state, config, u, dtype):
    """Shared forward quantities of the 2D layer bounds (u in (B, H, X, Y))."""
    u = np.asarray(u, dtype=np.float64)
    sizes = u.shape[-2:]
    kx, ky = (reference.kernel(oracle2d.axis_state(state, a), L, config.interpolation)
              for a, L in zip("xy", sizes))                                # (2C, H, X), (2C, H, Y)
    ex, ey = axis_kernel_bounds(state, config, sizes, dtype)
    k_err = kernel2d_error(kx, ky, ex, ey, sizes)                           # (C, H)
    D = np.asarray(state["D"], dtype=np.float64)
    dz = conv2d_bound(u, kx, ky, D, dtype, k_err=k_err)                     # (B, C, H, 1, 1)
    z = reference.conv2d(u, oracle2d.centred2d(kx, ky, None, sizes), D)     # (B, C, H, X, Y)
    return kx, ky, ex, ey, k_err, D, z, dz


def layer2d_bound(state, config, u, dtype: str):
    """Elementwise error bound (B, H, X, Y) of the 2D layer against reference.layer2d
    (rule part 3).  u: (B, H, X, Y) (move the axis for the channels-last layout)."""
    *_, z, dz = _layer_forward(state, config, u, dtype)
    B, C, H, X, Y = z.shape
    e = eps(dtype) + EPS64
    dy = (GELU_D1 * dz + 4 * e * np.abs(z)).reshape(B, C * H, X, Y)
    y = np.abs(reference.gelu(z)).reshape(B, C * H, X, Y)
    W = np.abs(np.asarray(state["output_linear.weight"], dtype=np.float64))    # (H, C*H)
    bias = np.abs(np.asarray(state["output_linear.bias"], dtype=np.float64))   # (H,)
    return (np.einsum("oi,bixy->boxy", W, dy)
            + (C * H + 2) * e * (np.einsum("oi,bixy->boxy", W, y) + bias[None, :, None, None]))


def conv2d_vjp_bound(u, kx, ky, D, gy, dtype: str, *, gy_err=None, k_err=None):
    """Max-abs error bounds of the 2D convolution's gradients (rule part 4 above).

    u (B, H, X, Y), kx (2C, H, tx), ky (2C, H, ty), D (C, H) or None, gy (B, C, H, X, Y)
    the exact cotangent; gy_err (B, C, H): 2-norm bounds of an error already in gy; k_err
    (C, H): of an error in the 2D kernel.  Returns bounds for gu (B, H, 1, 1), gkx
    (2C, H, tx), gky (2C, H, ty) (elementwise) and gD (C, H).
    """
    u = np.asarray(u, dtype=np.float64)
    gy = np.asarray(gy, dtype=np.float64)
    kx, ky = (np.asarray(k, dtype=np.float64) for k in (kx, ky))
    B, H, X, Y = u.shape
    keff = _abs_centred(kx, ky, D, (X, Y))
    k_peak = spectrum_peak2d(oracle2d.centred2d(kx, ky, D, (X, Y)))         # (C, H)
    C = keff.shape[0]
    log2n = log2_fft_size(X, Y, kx.shape[-1], ky.shape[-1])
    u2, g2, k2 = norm2d(u), norm2d(gy), norm2d(keff)                        # (B,H) (B,C,H) (C,H)
    gy_err = np.zeros((B, C, H)) if gy_err is None else np.asarray(gy_err, dtype=np.float64)
    # gu[b, h] = sum_c corr(gy[b, c, h], k2[c, h])
    gu = np.zeros((B, H))
    for c in range(C):
        rows = [c, C + c]
        Dc = None if D is None else np.asarray(D, dtype=np.float64)[[c]]
        part = oracle2d.conv2d_vjp(u, kx[rows], ky[rows], Dc, gy[:, [c]])[0]  # (B, H, X, Y)
        gu += fft_bound(g2[:, c], k2[c][None], norm2d(part), log2n, dtype, False)
        gu += gy_err[:, c] * k_peak[c][None]                                # rule 2
        if k_err is not None:
            gu += np.asarray(k_err)[c][None] * spectrum_peak2d(gy[:, c])
    taps = (2 * X - 1) * (2 * Y - 1) + 1
    gu = gu + taps * EPS64 * np.einsum("bch,ch->bh", g2, k2)               # reference's sums
    # gk2[c, h] = sum_b corr(gy[b, c, h], u[b, h]): error e (C, H), a 2-norm over the plane
    e = np.zeros((C, H))
    for b in range(B):
        gk2_norm = norm2d(oracle2d.kernel_gradient2d(u[[b]], gy[[b]]))
        e += fft_bound(g2[b], u2[b][None], gk2_norm, log2n, dtype, False)
        e += gy_err[b] * spectrum_peak2d(u[b])[None]                        # rule 2
    e = e + taps * EPS64 * np.einsum("bch,bh->ch", g2, u2)                  # reference's sums
    gk2 = oracle2d.kernel_gradient2d(u, gy)                                 # (C, H, 2X-1, 2Y-1)
    cx, cy = reference.centred(np.abs(kx), X), reference.centred(np.abs(ky), Y)
    ex = e[..., None] * norm2d(cy[..., None])[..., None] \
        + (Y + 3) * eps(dtype) * np.einsum("chxy,chy->chx", np.abs(gk2), cy)
    ey = e[..., None] * norm2d(cx[..., None])[..., None] \
        + (X + 3) * eps(dtype) * np.einsum("chxy,chx->chy", np.abs(gk2), cx)
    gkx = oracle2d.uncentre(ex, kx.shape[-1])                               # (2C, H, tx)
    gky = oracle2d.uncentre(ey, ky.shape[-1])
    return gu[..., None, None], gkx, gky, e


def layer2d_vjp_bound(state, config, u, g, dtype: str):
    """Error bounds of the 2D layer's gradients w.r.t. u, each axis's sub-kernels and D.

    u, g: (B, H, X, Y).  Returns gu (B, H, 1, 1), [gw_x_i], [gw_y_i] elementwise, gD (C, H).
    """
    u = np.asarray(u, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    kx, ky, ex, ey, k_err, D, z, dz = _layer_forward(state, config, u, dtype)
    B, C, H, X, Y = z.shape
    e = eps(dtype) + EPS64
    W = np.asarray(state["output_linear.weight"], dtype=np.float64)        # (H, C*H)
    a = np.einsum("oi,boxy->bixy", W, g).reshape(B, C, H, X, Y)            # W^T g
    a_abs = np.einsum("oi,boxy->bixy", np.abs(W), np.abs(g)).reshape(B, C, H, X, Y)
    gz = a * oracle.gelu_grad(z)
    # the forward error through GELU'', and W^T g's and GELU''s own rounding (as in 1D)
    dgz = GELU_D2 * np.abs(a) * dz + (H + 6) * e * GELU_D1 * a_abs
    gu, bkx, bky, gD = conv2d_vjp_bound(u, kx, ky, D, gz, dtype, gy_err=norm2d(dgz),
                                        k_err=k_err)
    _, gkx, gky, _ = oracle2d.conv2d_vjp(u, kx, ky, D, gz)
    gws = []
    for a_, axis, L, bk_, gk_exact in zip("xy", config.axes, (X, Y), (bkx, bky), (gkx, gky)):
        st = oracle2d.axis_state(state, a_)
        d, N = axis.kernel_dim, axis.num_scales
        Z = np.asarray(st["kernel_norm"], dtype=np.float64).reshape(2 * C, H)
        per_axis = []
        for (offset, n, s), f in zip(oracle.scale_blocks(d, N), oracle.decay_factors(st, d, N)):
            m = max(0, min(n, L - offset))
            U = oracle.upsample_matrix(d, s, axis.interpolation)[:, :m]    # (d, m), >= 0
            per_tap = bk_[..., offset:offset + m] + \
                (2 * s + N + 8) * e * np.abs(gk_exact[..., offset:offset + m])
            per_axis.append((per_tap * np.abs(f[None, :, :m]) / Z[..., None]) @ U.T)
        gws.append(per_axis)
    return gu, gws[0], gws[1], gD
