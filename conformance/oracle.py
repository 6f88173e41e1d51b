"""Float64 answers for the properties, built on the independent reference (``reference/``).

Everything here is NumPy float64 and never calls sgconv's math: the parameters of a
backend are read into the reference's state-dict layout (:func:`params_state`), and the
gradients that autodiff backends are held to come from the analytic adjoint of the
reference's direct sums (:func:`conv_vjp`, :func:`kernel_vjp`, :func:`layer_vjp`), which
``conformance/test_helpers.py`` checks against float64 central differences of the
reference itself.

Shapes follow shared/SPEC.md: u (B, H, L), kernel rows C' (C causal, 2C bidirectional),
conv output (B, C, H, L), sub-kernels w_i (C', H, d).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

from . import reference

__all__ = ["params_state", "to_float64", "scale_blocks", "decay_factors", "upsample_matrix",
           "two_sided_kernel", "gelu_grad", "conv_vjp", "kernel_vjp", "layer_vjp"]


def to_float64(bk, x) -> np.ndarray:
    """A backend array as a NumPy float64 array (exact: float32 -> float64 loses nothing)."""
    return np.asarray(bk.to_numpy(x), dtype=np.float64)


def params_state(params, bk) -> dict:
    """The parameters in the reference's (the released module's) state-dict layout, float64.

    Read field by field from :class:`sgconv.Params`, not through ``sgconv.to_state_dict``
    (which is itself under test): 'kernel_list.{i}' (C', H, d), 'multiplier' (1, H, 1)
    (or 0-d 1.0 and 'decay' (H,) in learnable mode), 'kernel_norm' (C', H, 1), 'D' (C, H),
    'output_linear.weight' (H, C*H), 'output_linear.bias' (H,).
    """
    config = params.config
    H = config.d_model
    state = {f"kernel_list.{i}": to_float64(bk, w) for i, w in enumerate(params.kernels)}
    if config.learnable_decay:
        state["multiplier"] = np.array(1.0)                                # ()
        state["decay"] = to_float64(bk, params.decay)                      # (H,)
    else:
        state["multiplier"] = to_float64(bk, params.multiplier).reshape(1, H, 1)  # (1, H, 1)
    state["kernel_norm"] = to_float64(bk, params.kernel_norm)[..., None]  # (C', H, 1)
    state["kernel_norm_initialized"] = np.array(True)
    state["D"] = to_float64(bk, params.D)                                  # (C, H)
    state["output_linear.weight"] = to_float64(bk, params.out_weight)      # (H, C*H)
    state["output_linear.bias"] = to_float64(bk, params.out_bias)          # (H,)
    return state


def sub_kernels(state) -> list:
    """The N sub-kernels w_i (C', H, d) of a state dict."""
    out = []
    while f"kernel_list.{len(out)}" in state:
        out.append(np.asarray(state[f"kernel_list.{len(out)}"], dtype=np.float64))
    return out


def scale_blocks(kernel_dim: int, num_scales: int) -> list:
    """(offset, length, factor) of scale i inside the concatenated kernel, per SPEC step 1.

    s_i = 2^max(0, i-1); scale i has length d*s_i and starts where scales 0..i-1 end.
    """
    blocks, offset = [], 0
    for i in range(num_scales):
        s = 2 ** max(0, i - 1)
        blocks.append((offset, kernel_dim * s, s))
        offset += kernel_dim * s
    return blocks


def decay_factors(state, kernel_dim: int, num_scales: int) -> list:
    """Per scale i, the factor that multiplies Up(w_i), as (H, d*s_i) arrays (SPEC step 2).

    Fixed decay: m[h]^(N-1-i) at every position of the block.  Learnable decay: the
    multiplier is 1 and position t of the whole kernel is weighted (t + 1)^(-decay[h]).
    """
    H = np.asarray(state["D"]).shape[1]
    out = []
    for i, (offset, length, _) in enumerate(scale_blocks(kernel_dim, num_scales)):
        if "decay" in state:
            p = np.asarray(state["decay"], dtype=np.float64)               # (H,)
            t = np.arange(offset, offset + length, dtype=np.float64)       # (d*s_i,)
            out.append((t[None, :] + 1.0) ** (-p[:, None]))                # (H, d*s_i)
        else:
            m = np.asarray(state["multiplier"], dtype=np.float64).reshape(H)  # (H,)
            out.append(np.repeat((m ** (num_scales - 1 - i))[:, None], length, axis=1))
    return out


def upsample_matrix(kernel_dim: int, factor: int, interpolation: str) -> np.ndarray:
    """The matrix U (d, d*s) of the reference's upsampling: Up(w) = w @ U.

    Up is linear in w, so its rows are the upsampled unit vectors; U's transpose is the
    adjoint that carries a gradient from the kernel back to a sub-kernel.
    """
    return reference.upsample(np.eye(kernel_dim), factor, interpolation)  # (d, d*s)


def two_sided_kernel(k, D, bidirectional: bool, length: int) -> np.ndarray:
    """The kernel as one sequence of lags -a .. Lk-1 that reach a length-L output, (C, H, a + Lk).

    [k1[a-1], ..., k1[0] | k0[0] + D, k0[1], ..., k0[Lk-1]] with a = min(Lk, L-1) anti-causal
    taps (0 when causal).  Its Fourier magnitude is that of the convolution's transfer
    function, which is what the tolerance rule needs.
    """
    k = np.asarray(k, dtype=np.float64)
    C = k.shape[0] // 2 if bidirectional else k.shape[0]
    k0 = k[:C].copy()                                                      # (C, H, Lk)
    if D is not None:
        k0[..., 0] += np.asarray(D, dtype=np.float64)
    if not bidirectional:
        return k0
    a = min(k.shape[-1], length - 1)
    k1 = k[C:, :, :a][..., ::-1]                                           # (C, H, a)
    return np.concatenate([k1, k0], axis=-1)                               # (C, H, a + Lk)


def gelu_grad(z) -> np.ndarray:
    """GELU'(z) = Phi(z) + z phi(z) for the exact (erf) GELU."""
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * (1.0 + erf(z / math.sqrt(2.0))) + z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def conv_vjp(u, k, D, bidirectional: bool, gy):
    """Adjoint of SGConv's convolution, by its direct sums: the gradients of <gy, y>.

        y[b,c,h,t] = sum_{s=0..t} k0[c,h,s] u[b,h,t-s] + sum_{s=1..L-1-t} k1[c,h,s-1] u[b,h,t+s]
                     + D[c,h] u[b,h,t]
        gu[b,h,t'] = sum_{c,t} gy[b,c,h,t] dy[b,c,h,t]/du[b,h,t']
        gk[c,h,s]  = sum_{b,t} gy[b,c,h,t] u[b,h,t-s]        (k1: u[b,h,t+s+1])
        gD[c,h]    = sum_{b,t} gy[b,c,h,t] u[b,h,t]

    u (B, H, L), k (C', H, Lk), D (C, H) or None, gy (B, C, H, L).
    Returns gu (B, H, L), gk (C', H, Lk), gD (C, H) or None; float64.
    """
    u = np.asarray(u, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    gy = np.asarray(gy, dtype=np.float64)
    B, H, L = u.shape
    C = k.shape[0] // 2 if bidirectional else k.shape[0]
    Lk = k.shape[-1]
    gu = np.zeros((B, H, L))                                               # (B, H, L)
    gk = np.zeros(k.shape)                                                 # (C', H, Lk)
    for s in range(min(L, Lk)):                                            # causal lag s
        gu[..., :L - s] += np.einsum("bchl,ch->bhl", gy[..., s:], k[:C, :, s])
        gk[:C, :, s] = np.einsum("bchl,bhl->ch", gy[..., s:], u[..., :L - s])
    if bidirectional:
        for s in range(1, min(L - 1, Lk) + 1):                             # anti-causal lag -s
            gu[..., s:] += np.einsum("bchl,ch->bhl", gy[..., :L - s], k[C:, :, s - 1])
            gk[C:, :, s - 1] = np.einsum("bchl,bhl->ch", gy[..., :L - s], u[..., s:])
    gD = None
    if D is not None:
        D = np.asarray(D, dtype=np.float64)
        gu += np.einsum("bchl,ch->bhl", gy, D)
        gD = np.einsum("bchl,bhl->ch", gy, u)                              # (C, H)
    return gu, gk, gD


def kernel_vjp(state, config, length: int, gk) -> list:
    """Adjoint of the kernel map w_i -> k (Z held fixed): gradients of <gk, k> w.r.t. each w_i.

        k[c,h,o_i + t] = f_i[h,t] (w_i[c,h,:] @ U_i)[t] / Z[c,h]
        gw_i[c,h,:]    = (gk[c,h,o_i + t] f_i[h,t] / Z[c,h]) @ U_i^T   over the taps t < L

    gk (C', H, L); returns N arrays (C', H, d), float64.
    """
    gk = np.asarray(gk, dtype=np.float64)
    d, N = config.kernel_dim, config.num_scales
    Z = np.asarray(state["kernel_norm"], dtype=np.float64).reshape(gk.shape[:2])  # (C', H)
    factors = decay_factors(state, d, N)
    out = []
    for (offset, n, s), f in zip(scale_blocks(d, N), factors):
        m = max(0, min(n, length - offset))                                # taps of block i below L
        U = upsample_matrix(d, s, config.interpolation)[:, :m]             # (d, m)
        g_block = gk[..., offset:offset + m] * f[None, :, :m] / Z[..., None]  # (C', H, m)
        out.append(g_block @ U.T)                                          # (C', H, d)
    return out


def layer_vjp(state, config, u, g, transposed: bool = True):
    """Gradients of <g, layer(u)> w.r.t. u, the sub-kernels w_i and D (Z held fixed).

        z  = conv(u, k, D)                         (B, C, H, L)
        y  = W @ GELU(z) + b                       (B, H, L)
        gz = (W^T g) * GELU'(z)                    (B, C, H, L), W^T g reshaped by c*H + h
        then conv_vjp and kernel_vjp.

    u and g are (B, H, L), or (B, L, H) when not transposed.
    Returns gu (same layout as u), [gw_i (C', H, d)], gD (C, H); float64.
    """
    u = np.asarray(u, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    if not transposed:
        u, g = u.swapaxes(1, 2), g.swapaxes(1, 2)                          # (B, H, L)
    B, H, L = u.shape
    D = np.asarray(state["D"], dtype=np.float64)                           # (C, H)
    C = D.shape[0]
    W = np.asarray(state["output_linear.weight"], dtype=np.float64)        # (H, C*H)
    k = reference.kernel(state, L, config.interpolation)                   # (C', H, L)
    z = reference.conv(u, k, D, config.bidirectional)                      # (B, C, H, L)
    gy = np.einsum("oi,bol->bil", W, g).reshape(B, C, H, L)                # (B, C, H, L)
    gz = gy * gelu_grad(z)                                                 # (B, C, H, L)
    gu, gk, gD = conv_vjp(u, k, D, config.bidirectional, gz)
    gws = kernel_vjp(state, config, L, gk)
    if not transposed:
        gu = gu.swapaxes(1, 2)                                             # (B, L, H)
    return gu, gws, gD


def mixing_vjp(state, config, u, g):
    """Gradients of <g, layer(u)> w.r.t. the mixing weight (H, C*H) and bias (H,).

        y = GELU(conv(u, k, D)) (B, C*H, L);  gW = sum_{b,l} g[b,:,l] y[b,:,l]^T;  gb = sum g

    u, g: (B, H, L).  Returns gW (H, C*H), gb (H,); float64.
    """
    u = np.asarray(u, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    B, H, L = u.shape
    D = np.asarray(state["D"], dtype=np.float64)                           # (C, H)
    k = reference.kernel(state, L, config.interpolation)                   # (C', H, L)
    y = reference.gelu(reference.conv(u, k, D, config.bidirectional)).reshape(B, -1, L)
    return np.einsum("bol,bil->oi", g, y), g.sum(axis=(0, 2))
