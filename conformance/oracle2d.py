"""Float64 answers for the 2D properties, built on the independent reference.

Everything here is NumPy float64 and never calls sgconv's math: 2D parameters are read
into the reference's state-dict layout (:func:`params_state2d`), and the gradients that
autodiff backends are held to come from the analytic adjoint of the reference's direct 2D
sums (:func:`conv2d_vjp`, :func:`layer2d_vjp`), which conformance/test_conv2d.py checks
against float64 central differences of ``reference.layer2d``.

Shapes: u (B, H, X, Y); axis kernels kx (2C, H, tx), ky (2C, H, ty); centred kernels
(C, H, 2X - 1) and (C, H, 2Y - 1); conv output (B, C, H, X, Y).
"""

from __future__ import annotations

import numpy as np

from . import reference

from . import oracle

__all__ = ["params_state2d", "axis_state", "centred2d", "uncentre", "conv2d_vjp",
           "kernel_gradient2d", "layer2d_vjp"]

_AXES = ("x", "y")


def params_state2d(params, bk) -> dict:
    """2D parameters in the reference's state-dict layout (reference.init_state2d's), float64.

    Read field by field from :class:`sgconv.Params2d`, not through
    ``sgconv.to_state_dict2d`` (itself under test).
    """
    H = params.config.d_model
    f64 = lambda x: oracle.to_float64(bk, x)  # noqa: E731
    state = {}
    for a in _AXES:
        for i, w in enumerate(getattr(params, "kernels_" + a)):
            state[f"kernel_list_{a}.{i}"] = f64(w)                              # (2C, H, d)
        if params.config.learnable_decay:
            state["multiplier_" + a] = np.array(1.0)
            state["decay_" + a] = f64(getattr(params, "decay_" + a))            # (H,)
        else:
            state["multiplier_" + a] = f64(getattr(params, "multiplier_" + a)).reshape(1, H, 1)
        state["kernel_norm_" + a] = f64(getattr(params, "kernel_norm_" + a))[..., None]
    state["D"] = f64(params.D)                                                  # (C, H)
    state["output_linear.weight"] = f64(params.out_weight)                      # (H, C*H)
    state["output_linear.bias"] = f64(params.out_bias)                          # (H,)
    return state


def axis_state(state, axis: str) -> dict:
    """One axis's 1D state (reference.axis_state) with 'D', as oracle/tolerance read it."""
    out = reference.axis_state(state, axis)
    out["D"] = state["D"]
    return out


def centred2d(kx, ky, D, sizes) -> np.ndarray:
    """The centred 2D kernel kx~ (x) ky~ with D added at offset (0, 0): (C, H, 2X-1, 2Y-1)."""
    X, Y = sizes
    k2 = reference.centred(kx, X)[..., :, None] * reference.centred(ky, Y)[..., None, :]
    if D is not None:
        k2[..., X - 1, Y - 1] += np.asarray(D, dtype=np.float64)
    return k2


def uncentre(g, taps: int) -> np.ndarray:
    """The adjoint of ``reference.centred``: (C, H, 2L-1) over offsets -> (2C, H, taps),
    offset delta >= 0 to row c tap delta, delta < 0 to row C + c tap -delta - 1."""
    C, H, n = g.shape
    L = (n + 1) // 2
    out = np.zeros((2 * C, H, taps))
    m = min(taps, L)
    out[:C, :, :m] = g[..., L - 1:L - 1 + m]                                  # delta = 0 .. m-1
    a = min(taps, L - 1)
    out[C:, :, :a] = g[..., L - 2 - np.arange(a)]                             # delta = -1 .. -a
    return out


def conv2d_vjp(u, kx, ky, D, gy):
    """Adjoint of the 2D convolution, by its direct sums: the gradients of <gy, y> for

        y[b,c,h,x,y] = sum_{dx,dy} kx~[c,h,dx] ky~[c,h,dy] u[b,h,x-dx,y-dy] + D[c,h] u[b,h,x,y]

        gu[b,h]        = sum_c corr(gy[b,c,h], k2[c,h])        (conv2d with the flipped k2)
        gk2[c,h,dx,dy] = sum_{b,x,y} gy[b,c,h,x,y] u[b,h,x-dx,y-dy]
        gkx~[dx] = sum_dy gk2[dx,dy] ky~[dy],  gky~[dy] = sum_dx gk2[dx,dy] kx~[dx],  gD = gk2[0,0]

    u (B, H, X, Y), kx (2C, H, tx), ky (2C, H, ty), D (C, H) or None, gy (B, C, H, X, Y).
    Returns gu (B, H, X, Y), gkx (2C, H, tx), gky (2C, H, ty), gD (C, H) or None; float64.
    """
    u = np.asarray(u, dtype=np.float64)
    gy = np.asarray(gy, dtype=np.float64)
    kx, ky = (np.asarray(k, dtype=np.float64) for k in (kx, ky))
    B, H, X, Y = u.shape
    k2 = centred2d(kx, ky, D, (X, Y))                                         # (C, H, 2X-1, 2Y-1)
    C = k2.shape[0]
    gu = np.zeros((B, H, X, Y))
    for c in range(C):                              # correlation = convolution, flipped kernel
        gu += reference.conv2d(gy[:, c], k2[c:c + 1, :, ::-1, ::-1], None)[:, 0]
    gk2 = kernel_gradient2d(u, gy)                                           # (C, H, 2X-1, 2Y-1)
    cx, cy = reference.centred(kx, X), reference.centred(ky, Y)
    gkx = uncentre(np.einsum("chxy,chy->chx", gk2, cy), kx.shape[-1])
    gky = uncentre(np.einsum("chxy,chx->chy", gk2, cx), ky.shape[-1])
    gD = None if D is None else gk2[..., X - 1, Y - 1].copy()
    return gu, gkx, gky, gD


def kernel_gradient2d(u, gy) -> np.ndarray:
    """The gradient of <gy, y> w.r.t. the centred 2D kernel, by its direct sums:

        gk2[c, h, dx, dy] = sum_{b, x, y} gy[b, c, h, x, y] u[b, h, x - dx, y - dy]

    u (B, H, X, Y), gy (B, C, H, X, Y) -> (C, H, 2X - 1, 2Y - 1), float64.
    """
    u = np.asarray(u, dtype=np.float64)
    gy = np.asarray(gy, dtype=np.float64)
    B, H, X, Y = u.shape
    out = np.zeros((gy.shape[1], H, 2 * X - 1, 2 * Y - 1))
    for dx in range(-(X - 1), X):
        x0, x1 = max(0, dx), min(X, X + dx)
        for dy in range(-(Y - 1), Y):
            y0, y1 = max(0, dy), min(Y, Y + dy)
            out[..., dx + X - 1, dy + Y - 1] = np.einsum(
                "bchxy,bhxy->ch", gy[..., x0:x1, y0:y1], u[..., x0 - dx:x1 - dx, y0 - dy:y1 - dy])
    return out


def layer2d_vjp(state, config, u, g, transposed: bool = True):
    """Gradients of <g, layer2d(u)> w.r.t. u, each axis's sub-kernels and D (Z held fixed).

        z  = conv2d(u, kx (x) ky, D)          (B, C, H, X, Y)
        gz = (W^T g) * GELU'(z)               W^T g reshaped by c*H + h
        then conv2d_vjp, and per axis oracle.kernel_vjp (the adjoint of w_i -> k).

    u, g: (B, H, X, Y), or channels-last (B, X, Y, H) when not transposed.
    Returns gu (u's layout), [gw_x_i (2C, H, d)], [gw_y_i], gD (C, H); float64.
    """
    u = np.asarray(u, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    if not transposed:
        u, g = np.moveaxis(u, 3, 1), np.moveaxis(g, 3, 1)                    # (B, H, X, Y)
    B, H, X, Y = u.shape
    D = np.asarray(state["D"], dtype=np.float64)
    C = D.shape[0]
    W = np.asarray(state["output_linear.weight"], dtype=np.float64)         # (H, C*H)
    kx = reference.kernel(axis_state(state, "x"), X, config.interpolation)  # (2C, H, X)
    ky = reference.kernel(axis_state(state, "y"), Y, config.interpolation)
    z = reference.conv2d(u, centred2d(kx, ky, None, (X, Y)), D)              # (B, C, H, X, Y)
    gz = np.einsum("oi,boxy->bixy", W, g).reshape(B, C, H, X, Y) * oracle.gelu_grad(z)
    gu, gkx, gky, gD = conv2d_vjp(u, kx, ky, D, gz)
    gws = [oracle.kernel_vjp(axis_state(state, a), axis, L, gk)
           for a, axis, L, gk in zip(_AXES, config.axes, (X, Y), (gkx, gky))]
    if not transposed:
        gu = np.moveaxis(gu, 1, 3)
    return gu, gws[0], gws[1], gD
