"""The one tolerance rule of the conformance suite.

Every comparison in the suite is ``|actual - expected| <= bound`` with a bound computed
here, in float64, from the dtype's eps, log2 of the FFT length and the norms of the
operands of that very comparison.  The constants come from the error model below, not
from a test run; conformance/README.md states the same rule.  (eps = 2^-23 for float32,
2^-52 for float64.)

1. FFT convolution, per output row (SPEC, "Precision": a float32 FFT convolution of
   length n loses about eps log2(n) relative to the norm of the output).  A row
   y = a (*) b (a correlation for gradients) computed with FFTs of length n has, for
   every element t,

       |dy_t| <= C_FFT eps log2(n) (||a||_2 ||b||_2 + ||y||_2),      C_FFT = 4.

   The model: an FFT of length n runs log2(n) butterfly stages, each rounding once to
   the working precision, so it errs by about eps log2(n) relative to the norm of its
   input, spread over the frequencies.  Carried through the product of spectra, the
   errors of the two forward transforms reach each output element as
   eps log2(n) ||a||_2 ||b||_2 each (the sqrt(n) that spreading would gain back is not
   claimed), the inverse transform's as eps log2(n) ||y||_2: 2 + 1 = 3 terms, rounded up
   to 4 for the twiddle factors' own rounding.  This is the size of the error, not a
   worst case over adversarial inputs (normwise worst-case bounds, Higham Thm 24.2,
   replace ||b||_2 by the peak of b's spectrum and are loose by sqrt(n) on the drawn
   data).  Measured on NumPy, PyTorch and JAX, float32 and float64, random, smooth and
   constant operands: the largest error is 0.05 of this bound (README, "Tolerances").
   n is chosen by the backend; any plan for a linear convolution has
   n <= 2 (L + taps), so log2 n <= log2(2 (L + taps)) is used.  For the convolution, b is
   the two-sided kernel with D at lag 0 (oracle.two_sided_kernel).  Overlap-add: each
   output sums the pieces of at most 3 blocks (its own, the previous one's tail and,
   bidirectionally, the next one's head), whose norms add up to at most sqrt(3) times
   the row's: the bound is multiplied by sqrt(3).

2. An error dk already in the kernel (the layer computes its kernel first) reaches the
   output as dk (*) u, whose every element is at most ||dk||_2 S(u), S(u) the peak of
   u's spectrum (:func:`spectrum_peak`, a rigorous upper bound: the smaller of ||u||_1
   and the maximum of |U| on a grid of M >= 32 m frequencies divided by
   1 - pi (m-1)/M, by Bernstein's inequality |U'| <= (m-1) S(u)).

3. The kernel, elementwise.  Tap t of scale i is f_i(t) (w_lo + (w_hi - w_lo) lam) / Z with
   f_i = m^(N-1-i).  Counting each rounding as one eps (it is eps/2; the slack covers
   the different but equally valid orders of evaluation between backends and the
   reference): interpolation 4 (lam's rounding, the difference, the product, the sum),
   the power m^p <= N, the product and the quotient 2: (N + 6) eps times the envelope
   f_i max(|w_lo|, |w_hi|) / Z.  Learnable decay adds exp(-p log(t+1)), whose argument
   is rounded to eps |p log(t+1)| relative: + 2 + 2 p log(t+1).  A tap beyond the kernel
   length K has envelope 0: it must be exactly zero.

4. Pointwise layers and the reference's own rounding, componentwise (Higham's gamma_n):
   GELU has |GELU'| <= 1.13, so an input error dz becomes 1.13 dz, plus 4 eps |z| for
   erf and the products.  The mixing linear W y + b with C*H terms:
   |W| dy + (C*H + 2) eps (|W| |y| + |b|).  The reference sums the convolution directly
   in float64: (taps + 1) eps64 ||a||_2 ||b||_2 per row.  Reference-side terms use
   float64's eps, so they matter only when the backend computes in float64 too.

5. Gradients.  Reverse mode through the FFTs is FFT correlations of the same length:
   part 1 applied to (cotangent, kernel) for du and to (cotangent, input) for dk and dD,
   plus the forward error carried through GELU'' (|GELU''| <= 0.8), then the
   upsampling adjoint (nonnegative weights, at most 2s + 2 terms per sub-kernel tap).

Why this is tight: for the sizes the suite draws the bounds are about 1e-6..1e-4 of the
output's scale in float32 and 1e-15..1e-13 in float64, an order of magnitude above the
errors correct backends make; every planted bug in conformance/meta changes outputs by
1e-3 or more relative (1e-8 for float64 computed in float32), and a float32 computation
done in bfloat16, float16 or TF32 (errors 1e-3 relative) would fail too.
"""

from __future__ import annotations

import math

import numpy as np

from . import oracle, reference

__all__ = ["eps", "EPS64", "C_FFT", "spectrum_peak", "log2_fft_length", "fft_bound",
           "conv_bound", "kernel_bound", "layer_bound", "conv_vjp_bound", "layer_vjp_bound",
           "mixing_vjp_bound", "assert_close"]

_EPS = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7, "float32": 2.0 ** -23,
        "float64": 2.0 ** -52}
EPS64 = _EPS["float64"]

#: Part 1's constant: two forward transforms and one inverse, rounded up for the twiddles.
C_FFT = 4.0
#: max |GELU'(x)| = 1.1289 (at x = sqrt 2) and max |GELU''(x)| = 2 phi(0) = 0.798.
GELU_D1 = 1.13
GELU_D2 = 0.80


def eps(dtype: str) -> float:
    """Machine epsilon of a float dtype name ('float32', 'float64', ...)."""
    try:
        return _EPS[dtype]
    except KeyError:
        raise ValueError(f"no tolerance rule for dtype {dtype!r}; expected one of "
                         f"{sorted(_EPS)}") from None


def norm2(x) -> np.ndarray:
    """2-norm over the last axis."""
    return np.sqrt(np.sum(np.square(np.asarray(x, dtype=np.float64)), axis=-1))


def spectrum_peak(x) -> np.ndarray:
    """Upper bound on sup_w |sum_t x[..., t] e^{-iwt}| for each row (rule part 2)."""
    x = np.asarray(x, dtype=np.float64)
    m = x.shape[-1]
    l1 = np.sum(np.abs(x), axis=-1)
    if m <= 1:
        return l1
    M = 1 << max(5, math.ceil(math.log2(32 * m)))
    grid = np.abs(np.fft.rfft(x, n=M, axis=-1)).max(axis=-1)
    return np.minimum(l1, grid / (1.0 - math.pi * (m - 1) / M))


def log2_fft_length(length: int, taps: int) -> float:
    """log2 of an upper bound on the FFT length of any linear-convolution plan: n <= 2(L + taps)."""
    return math.log2(2 * (length + taps))


def _two_sided_magnitude(k, D, bidirectional: bool, length: int):
    """The two-sided kernel of |k| with |D| at lag 0: its 2-norm is the kernel's norm in
    rule part 1.  Taking magnitudes keeps a backend that adds D u separately (rather than
    folding D into lag 0) and the reference's k u + D u within the rule when k[0] ~ -D."""
    absD = None if D is None else np.abs(np.asarray(D, dtype=np.float64))
    return oracle.two_sided_kernel(np.abs(np.asarray(k, dtype=np.float64)), absD,
                                   bidirectional, length)


def fft_bound(a2, b2, y2, log2n: float, dtype: str, blocks: bool):
    """Rule part 1: max-abs error of each element of an FFT convolution/correlation row.

    a2, b2: the operands' 2-norms; y2: the exact result's 2-norm.  Broadcasts.
    blocks: whether the backend may use overlap-add.
    """
    bound = C_FFT * eps(dtype) * log2n * (a2 * b2 + y2)
    return math.sqrt(3) * bound if blocks else bound


def conv_bound(u, k, D, bidirectional: bool, dtype: str, *, k_err=None, blocks: bool = True,
               exact_conv=None):
    """Max-abs error bound per output row of conv(u, k, D) against the exact sums: (B, C, H, 1).

    u (B, H, L), k (C', H, Lk), D (C, H) or None: the exact values the backend was given.
    k_err: (C', H) 2-norm bounds of an error already in k (the layer's computed kernel).
    blocks: whether the backend may use overlap-add (any block_size other than 0).
    Includes the reference's own float64 rounding of its direct sums.  exact_conv: the
    float64 convolution the norms are taken of (default reference.conv, O(L^2); a float64
    FFT for very long L: its rounding, eps64 log2(n) relative, is negligible beside a
    float32 bound, so use it for float32 comparisons only).
    """
    u = np.asarray(u, dtype=np.float64)
    B, H, L = u.shape
    Lk = k.shape[-1]
    keff = _two_sided_magnitude(k, D, bidirectional, L)                    # (C, H, a + Lk)
    log2n = log2_fft_length(L, keff.shape[-1])
    u2, k2 = norm2(u), norm2(keff)                                         # (B, H), (C, H)
    y2 = norm2((exact_conv or reference.conv)(u, k, D, bidirectional))     # (B, C, H)
    bound = fft_bound(u2[:, None], k2[None], y2, log2n, dtype, blocks)     # (B, C, H)
    if k_err is not None:
        C = keff.shape[0]
        err = np.asarray(k_err, dtype=np.float64)
        err = err[:C] + err[C:] if bidirectional else err                  # (C, H)
        bound = bound + err[None] * spectrum_peak(u)[:, None]              # rule part 2
    taps = min(L, Lk) + keff.shape[-1] - Lk + 1
    bound = bound + taps * EPS64 * u2[:, None] * k2[None]                  # reference's sums
    return bound[..., None]                                                # (B, C, H, 1)


def kernel_envelope(state, config, length: int):
    """Per tap, the magnitude the kernel's rounding errors scale with (rule part 3).

    Returns (envelope (C', H, L), relative error count (H, L)), zero beyond K.
    """
    ws = oracle.sub_kernels(state)
    Cp, H, d = ws[0].shape
    N = len(ws)
    Z = np.asarray(state["kernel_norm"], dtype=np.float64).reshape(Cp, H)
    factors = oracle.decay_factors(state, d, N)
    env = np.zeros((Cp, H, length))
    count = np.full((H, length), float(N + 6))
    for (offset, n, s), w, f in zip(oracle.scale_blocks(d, N), ws, factors):
        m = min(n, length - offset)
        if m <= 0:
            break
        j = np.arange(m)
        if config.interpolation == "nearest":
            lo = hi = np.minimum(j // s, d - 1)
        else:
            x = np.maximum((j + 0.5) / s - 0.5, 0.0)
            lo = np.floor(x).astype(np.int64)
            hi = np.minimum(lo + 1, d - 1)
        peak = np.maximum(np.abs(w[..., lo]), np.abs(w[..., hi]))          # (C', H, m)
        env[..., offset:offset + m] = peak * np.abs(f[None, :, :m]) / Z[..., None]
        if "decay" in state:
            p = np.asarray(state["decay"], dtype=np.float64)               # (H,)
            t = np.arange(offset, offset + m, dtype=np.float64)
            count[:, offset:offset + m] += 2.0 + 2.0 * np.abs(p[:, None]) * np.log(t + 1.0)
    return env, count


def kernel_bound(state, config, length: int, dtype: str):
    """Elementwise error bound of the kernel (C', H, L) against the reference (rule part 3)."""
    env, count = kernel_envelope(state, config, length)
    return (eps(dtype) + EPS64) * count[None] * env


def _layer_forward(state, config, u, dtype, blocks, exact_conv=None):
    """Shared forward quantities of the layer bounds (u in (B, H, L))."""
    u = np.asarray(u, dtype=np.float64)
    L = u.shape[-1]
    taps = min(L, config.kernel_length)
    k = reference.kernel(state, taps, config.interpolation)                # (C', H, taps)
    k_err = norm2(kernel_bound(state, config, taps, dtype))                # (C', H)
    D = np.asarray(state["D"], dtype=np.float64)
    dz = conv_bound(u, k, D, config.bidirectional, dtype, k_err=k_err, blocks=blocks,
                    exact_conv=exact_conv)
    z = (exact_conv or reference.conv)(u, k, D, config.bidirectional)      # (B, C, H, L)
    return k, k_err, D, z, dz


def layer_bound(state, config, u, dtype: str, *, blocks: bool = True, exact_conv=None):
    """Elementwise error bound of the layer output (B, H, L) against reference.layer (part 4).

    u: (B, H, L) (transpose the result for the (B, L, H) layout).  exact_conv: see
    :func:`conv_bound`.
    """
    k, k_err, D, z, dz = _layer_forward(state, config, u, dtype, blocks, exact_conv)
    B, C, H, L = z.shape
    e = eps(dtype) + EPS64
    y = reference.gelu(z)                                                  # (B, C, H, L)
    dy = GELU_D1 * dz + 4 * e * np.abs(z)                                  # (B, C, H, L)
    W = np.abs(np.asarray(state["output_linear.weight"], dtype=np.float64))  # (H, C*H)
    bias = np.abs(np.asarray(state["output_linear.bias"], dtype=np.float64))  # (H,)
    dy = dy.reshape(B, C * H, L)
    y = np.abs(y).reshape(B, C * H, L)
    return (np.einsum("oi,bil->bol", W, dy)
            + (C * H + 2) * e * (np.einsum("oi,bil->bol", W, y) + bias[None, :, None]))


def conv_vjp_bound(u, k, D, bidirectional: bool, gy, dtype: str, *, gy_err=None, k_err=None,
                   blocks: bool = True):
    """Max-abs error bounds of the convolution's gradients (rule part 5).

    u (B, H, L), k (C', H, Lk), D (C, H) or None, gy (B, C, H, L) the exact cotangent;
    gy_err (B, C, H): 2-norm bounds of an error already in the cotangent; k_err (C', H).
    Returns bounds for gu (B, H, 1), gk (C', H, 1) (every tap) and gD (C, H).
    """
    u = np.asarray(u, dtype=np.float64)
    gy = np.asarray(gy, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    B, H, L = u.shape
    keff = _two_sided_magnitude(k, D, bidirectional, L)                    # (C, H, a + Lk)
    k_peak = spectrum_peak(oracle.two_sided_kernel(k, D, bidirectional, L))  # (C, H)
    C = keff.shape[0]
    log2n = log2_fft_length(L, keff.shape[-1])
    u2, g2, k2 = norm2(u), norm2(gy), norm2(keff)                          # (B,H) (B,C,H) (C,H)
    gy_err = np.zeros((B, C, H)) if gy_err is None else np.asarray(gy_err, dtype=np.float64)
    # gu[b, h] = sum_c corr(gy[b, c, h], keff[c, h]): one correlation per head c.
    gu = np.zeros((B, H))
    for c in range(C):
        rows = [c, C + c] if bidirectional else [c]
        Dc = None if D is None else np.asarray(D, dtype=np.float64)[[c]]
        part = oracle.conv_vjp(u, k[rows], Dc, bidirectional, gy[:, [c]])[0]  # (B, H, L)
        gu += fft_bound(g2[:, c], k2[c][None], norm2(part), log2n, dtype, blocks)
        gu += gy_err[:, c] * k_peak[c][None]                               # rule part 2
        if k_err is not None:
            err = np.asarray(k_err, dtype=np.float64)[rows].sum(axis=0)    # (H,)
            gu += err[None] * spectrum_peak(gy[:, c])
    gu = gu + (keff.shape[-1] + 1) * EPS64 * np.einsum("bch,ch->bh", g2, k2)  # reference's sums
    # gk[c, h] (and gD, its lag-0 tap) = sum_b corr(gy[b, c, h], u[b, h]): one per row b.
    gk = np.zeros((C, H))
    for b in range(B):
        part = oracle.conv_vjp(u[[b]], k, D, bidirectional, gy[[b]])[1]   # (C', H, Lk)
        part2 = norm2(part[:C]) + (norm2(part[C:]) if bidirectional else 0.0)
        gk += fft_bound(g2[b], u2[b][None], part2, log2n, dtype, blocks)
        gk += gy_err[b] * spectrum_peak(u[b])[None]                        # rule part 2
    gk = gk + L * EPS64 * np.einsum("bch,bh->ch", g2, u2)                  # reference's sums
    gk_rows = np.concatenate([gk, gk]) if bidirectional else gk            # (C', H)
    return gu[..., None], gk_rows[..., None], gk


def layer_vjp_bound(state, config, u, g, dtype: str, *, blocks: bool = True):
    """Error bounds of the layer's gradients w.r.t. u, each w_i and D (rule part 5).

    u, g: (B, H, L).  Returns gu (B, H, 1), [gw_i (C', H, d)] elementwise, gD (C, H).
    """
    u = np.asarray(u, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    k, k_err, D, z, dz = _layer_forward(state, config, u, dtype, blocks)
    B, C, H, L = z.shape
    e = eps(dtype) + EPS64
    W = np.asarray(state["output_linear.weight"], dtype=np.float64)        # (H, C*H)
    a = np.einsum("oi,bol->bil", W, g).reshape(B, C, H, L)                 # W^T g
    a_abs = np.einsum("oi,bol->bil", np.abs(W), np.abs(g)).reshape(B, C, H, L)
    gz = a * oracle.gelu_grad(z)                                           # (B, C, H, L)
    # dgz: the forward error through GELU'', and W^T g's and GELU''s own rounding.
    dgz = GELU_D2 * np.abs(a) * dz + (H + 6) * e * GELU_D1 * a_abs         # (B, C, H, L)
    gu, gk, gD = conv_vjp_bound(u, k, D, config.bidirectional, gz, dtype,
                                gy_err=norm2(dgz), k_err=k_err, blocks=blocks)
    # The kernel's adjoint: gk (C', H, taps) -> gw_i through f_i / Z and U_i^T.
    _, gk_exact, _ = oracle.conv_vjp(u, k, D, config.bidirectional, gz)  # (C', H, taps)
    d, N = config.kernel_dim, config.num_scales
    Cp = k.shape[0]
    Z = np.asarray(state["kernel_norm"], dtype=np.float64).reshape(Cp, H)
    gws = []
    for (offset, n, s), f in zip(oracle.scale_blocks(d, N), oracle.decay_factors(state, d, N)):
        m = max(0, min(n, k.shape[-1] - offset))
        U = oracle.upsample_matrix(d, s, config.interpolation)[:, :m]      # (d, m), >= 0
        per_tap = gk + (2 * s + N + 8) * e * np.abs(gk_exact[..., offset:offset + m])
        gws.append((per_tap * np.abs(f[None, :, :m]) / Z[..., None]) @ U.T)  # (C', H, d)
    return gu, gws, gD


def mixing_vjp_bound(state, config, u, g, dtype: str, *, blocks: bool = True):
    """Error bounds of the layer's gradients w.r.t. the mixing weight and bias (rule part 4
    carried into the adjoint): gW = sum_{b,l} g y^T with y = GELU(z) computed with error
    dy = GELU' dz + 4 eps |z|, each of the B*L products and sums rounding once more:
    |g| dy^T + (B L + 2) eps |g| |y|^T; gb = sum_{b,l} g: (B L) eps sum |g|.

    u, g: (B, H, L).  Returns bounds for gW (H, C*H) and gb (H,).
    """
    g = np.asarray(g, dtype=np.float64)
    _, _, _, z, dz = _layer_forward(state, config, u, dtype, blocks)
    B, C, H, L = z.shape
    e = eps(dtype) + EPS64
    dy = (GELU_D1 * dz + 4 * e * np.abs(z)).reshape(B, C * H, L)
    y = np.abs(reference.gelu(z)).reshape(B, C * H, L)
    gabs = np.abs(g)
    gW = np.einsum("bol,bil->oi", gabs, dy) + (B * L + 2) * e * np.einsum("bol,bil->oi", gabs, y)
    gb = B * L * e * gabs.sum(axis=(0, 2))
    return gW, gb


def assert_close(actual, expected, bound, what: str) -> None:
    """Assert |actual - expected| <= bound elementwise (NaN fails); shapes must match.

    ``what`` names the comparison and how to reproduce it; the message adds the entry
    with the largest error/bound ratio, its error and bound, and the largest error.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}\n  shape {actual.shape} != expected {expected.shape}")
    err = np.abs(actual - expected)
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), err.shape)
    bad = ~(err <= bound)
    if bad.any():
        ratio = np.where(bound > 0, err / np.where(bound > 0, bound, 1.0), np.inf)
        ratio = np.where(np.isnan(err), np.inf, ratio)
        idx = tuple(int(i) for i in np.unravel_index(np.argmax(ratio), err.shape))
        worst = float(np.max(np.where(np.isnan(err), np.inf, err)))
        raise AssertionError(
            f"{what}\n  {int(bad.sum())} of {err.size} entries outside the tolerance; worst at "
            f"{idx}: actual {actual[idx]!r}, expected {expected[idx]!r}, |error| {err[idx]:.3e}"
            f" > bound {bound[idx]:.3e} (max |error| {worst:.3e}, max |expected| "
            f"{float(np.abs(expected).max()):.3e})")


def error_ratio(actual, expected, bound) -> float:
    """max |actual - expected| / bound (0 when equal): how close a comparison came to failing."""
    err = np.abs(np.asarray(actual, dtype=np.float64) - np.asarray(expected, dtype=np.float64))
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), err.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(err == 0, 0.0, err / bound)
    return float(np.nanmax(r)) if r.size else 0.0
