"""Two-dimensional SGConv, defined in float64 NumPy: the reference for images.

Read ``sgconv_ref.py`` first: this file builds on its 1D kernel and follows
``shared/SPEC.md``, section "Two-dimensional SGConv".  The paper puts SGConv into a
ConvNeXt for ImageNet but released no 2D code; the separable form below is the one S4ND
used for images.

An image u has H channels of X by Y pixels.  Each kernel row (c, h) owns two complete,
bidirectional 1D SGConv kernels, one per spatial axis, each with its own sub-kernels,
decay multiplier and normaliser Z, built exactly as in 1D with l_max = the axis's extent:

    kx = sgconv_ref.kernel(state_x, X)        (2C, H, X)    rows C..2C-1 anti-causal
    ky = sgconv_ref.kernel(state_y, Y)        (2C, H, Y)

Along one axis the centred kernel at offset delta is the bidirectional layout of 1D,

    k~[delta] = k0[delta]          delta >= 0      (k0 = rows 0..C-1)
    k~[delta] = k1[-delta - 1]     delta < 0       (k1 = rows C..2C-1: k1[0] reaches one ahead)

and the 2D kernel is the outer product of the two centred kernels,

    k2[c, h, dx, dy] = kx~[c, h, dx] * ky~[c, h, dy].

The layer is the 1D layer with the 1D convolution replaced by the 2D one, linear (zero
outside the image, never wrapping around its edge), with the skip term D at lag (0, 0):

    y[b, c, h, x, y] = sum_{dx, dy} k2[c, h, dx, dy] u[b, h, x - dx, y - dy] + D[c, h] u[b, h, x, y]
    u (B, H, X, Y) -> y (B, C, H, X, Y) -> (B, C*H, X, Y) -> GELU -> W @ . + b -> (B, H, X, Y)

The sections:

    1. parameters and their initial values   init_state2d, num_parameters2d, axis_state
    2. the centred axis kernels               centred, kernel2d
    3. the convolution, by its definition     conv2d
    4. the whole layer                        layer2d

Conventions as in ``sgconv_ref.py``: float64 throughout, shapes in SPEC's letters, no FFT
(the convolution is its defining double sum over the offsets), no dropout.  Parameters
travel as a plain dict in the layout ``sgconv.torch.SGConv2d`` saves:

    'kernel_list_x.{i}'  (2C, H, d)   i = 0 .. N_x - 1     'kernel_list_y.{i}'  (2C, H, d)
    'multiplier_x'       (1, H, 1)    (0-d 1.0 with a learnable decay)     'multiplier_y'
    'decay_x'            (H,)         learnable decay only                 'decay_y'
    'kernel_norm_x'      (2C, H, 1)   Z of the x kernel                    'kernel_norm_y'
    'D'                  (C, H)
    'output_linear.weight' (H, C*H)   'output_linear.bias' (H,)

This module never imports ``sgconv``: it is the independent oracle.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from . import sgconv_ref as ref1d

__all__ = ["init_state2d", "num_parameters2d", "axis_state", "centred", "kernel2d", "conv2d",
           "layer2d"]

_AXES = ("x", "y")


# ---------------------------------------------------------------------------
# 1. Parameters and their initial values
# ---------------------------------------------------------------------------


def _pair(value, name: str):
    """One value for both axes, or a pair (x, y)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be one value or a pair (x, y), got {value!r}.")
        return tuple(value)
    return (value, value)


def init_state2d(
    d_model,
    sizes,
    channels=1,
    kernel_dim=64,
    n_scales=None,
    decay_min=2.0,
    decay_max=2.0,
    learnable_decay=False,
    interpolation="linear",
    rng=None,
) -> dict:
    """A fresh 2D parameter dict (the layout in the module docstring).

    sizes: (X, Y), the l_max of the x and y kernels (one int: both); n_scales: None
    (derived per axis), one int or a pair.  Initial values, per axis a in (x, y), as in
    1D (SPEC "Parameters and their initial values") with bidirectional kernels:

        kernel_list_a.i       (2C, H, d)   ~ N(0, 1)
        multiplier_a          (1, H, 1)    = linspace(decay_min, decay_max, H)
                              (learnable: 0-d 1.0, and decay_a (H,) ~ U[decay_min, decay_max])
        kernel_norm_a         (2C, H, 1)   = Z_a, the row norms of the full raw axis kernel
        D                     (C, H)       ~ N(0, 1)
        output_linear.weight  (H, C*H)     ~ U(-1/sqrt(C*H), 1/sqrt(C*H))
        output_linear.bias    (H,)         ~ U(-1/sqrt(C*H), 1/sqrt(C*H))

    Draw order from ``rng``: kernel_list_x.0 .. N_x-1, kernel_list_y.0 .. N_y-1, D,
    output_linear.weight, output_linear.bias, then decay_x and decay_y (learnable only).
    """
    H = ref1d._positive_int(d_model, "d_model")
    C = ref1d._positive_int(channels, "channels")
    d = ref1d._positive_int(kernel_dim, "kernel_dim")
    sizes = _pair(sizes, "sizes")
    scales = _pair(n_scales, "n_scales")
    N = [ref1d.n_scales(L, d, n) for L, n in zip(sizes, scales)]  # (N_x, N_y)
    ref1d._check_interpolation(interpolation)
    rng = np.random.default_rng(rng)
    state = {}
    for a, n in zip(_AXES, N):
        for i in range(n):
            state[f"kernel_list_{a}.{i}"] = rng.standard_normal((2 * C, H, d))  # (2C, H, d)
    state["D"] = rng.standard_normal((C, H))  # (C, H)
    bound = 1.0 / math.sqrt(C * H)  # PyTorch nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    state["output_linear.weight"] = rng.uniform(-bound, bound, (H, C * H))  # (H, C*H)
    state["output_linear.bias"] = rng.uniform(-bound, bound, H)  # (H,)
    for a in _AXES:
        if learnable_decay:
            state[f"multiplier_{a}"] = np.array(1.0)  # ()
            state[f"decay_{a}"] = rng.uniform(decay_min, decay_max, H)  # (H,)
        else:
            state[f"multiplier_{a}"] = np.linspace(decay_min, decay_max, H).reshape(1, H, 1)
    for a, n in zip(_AXES, N):
        ws = [state[f"kernel_list_{a}.{i}"] for i in range(n)]  # N_a x (2C, H, d)
        k_raw = ref1d.cat_kernel(ws, state[f"multiplier_{a}"], state.get(f"decay_{a}"),
                                 interpolation)  # (2C, H, K_a)
        state[f"kernel_norm_{a}"] = ref1d.normaliser(k_raw)[..., None]  # (2C, H, 1), fixed here
    return state


def num_parameters2d(d_model, sizes, channels=1, kernel_dim=64, n_scales=None) -> int:
    """Learned kernel weights: (N_x + N_y) * 2C * H * d, i.e. O(d log X), against X * Y
    per channel for a dense global kernel."""
    scales = _pair(n_scales, "n_scales")
    return sum(ref1d.num_parameters(d_model, L, channels, kernel_dim, n, bidirectional=True)
               for L, n in zip(_pair(sizes, "sizes"), scales))


def axis_state(state: Mapping, axis: str) -> dict:
    """The 1D state dict of one axis ('x' or 'y'): 'kernel_list_x.0' -> 'kernel_list.0', ...

    With it, ``sgconv_ref.kernel`` builds that axis's kernel exactly as in 1D.
    """
    if axis not in _AXES:
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}.")
    out = {}
    for key, value in state.items():
        if key.startswith(f"kernel_list_{axis}."):
            out["kernel_list." + key.split(".", 1)[1]] = value
        elif key in (f"multiplier_{axis}", f"decay_{axis}", f"kernel_norm_{axis}"):
            out[key[:-2]] = value
    if "kernel_list.0" not in out:
        raise ValueError(f"state has no 'kernel_list_{axis}.0'; expected the 2D layout "
                         f"(see init_state2d).")
    return out


# ---------------------------------------------------------------------------
# 2. The centred axis kernels and their outer product
# ---------------------------------------------------------------------------


def centred(k, length) -> np.ndarray:
    """A bidirectional 1D kernel as one centred array over the offsets that reach a
    length-L axis, delta = -(L-1) .. L-1, stored at index delta + L - 1:

        out[c, h, delta + L - 1] = k0[c, h, delta]        delta >= 0
        out[c, h, delta + L - 1] = k1[c, h, -delta - 1]   delta < 0

    Taps past the end of k are zero.  Shapes: k (2C, H, Lk) -> (C, H, 2L - 1), float64.
    """
    k = np.asarray(k, dtype=np.float64)  # (2C, H, Lk)
    if k.ndim != 3 or k.shape[0] % 2:
        raise ValueError(f"k must be a bidirectional kernel (2C, H, Lk), got {k.shape}.")
    L = ref1d._positive_int(length, "length")
    C, H, Lk = k.shape[0] // 2, k.shape[1], k.shape[2]
    out = np.zeros((C, H, 2 * L - 1))  # (C, H, 2L-1)
    for delta in range(-(L - 1), L):
        tap = delta if delta >= 0 else -delta - 1
        if tap < Lk:
            out[..., delta + L - 1] = k[:C, :, tap] if delta >= 0 else k[C:, :, tap]
    return out


def kernel2d(state: Mapping, sizes, interpolation="linear") -> np.ndarray:
    """The 2D kernel k2 (C, H, 2X - 1, 2Y - 1), centred: k2[..., dx + X - 1, dy + Y - 1].

        k2[c, h, dx, dy] = kx~[c, h, dx] * ky~[c, h, dy]

    with each axis kernel built by the 1D reference for that axis's length (cut to X, or
    zero-padded past its K) and centred by :func:`centred`.
    """
    X, Y = (ref1d._positive_int(s, "size") for s in _pair(sizes, "sizes"))
    kx = centred(ref1d.kernel(axis_state(state, "x"), X, interpolation), X)  # (C, H, 2X-1)
    ky = centred(ref1d.kernel(axis_state(state, "y"), Y, interpolation), Y)  # (C, H, 2Y-1)
    return kx[..., :, None] * ky[..., None, :]  # (C, H, 2X-1, 2Y-1)


# ---------------------------------------------------------------------------
# 3. The convolution, written as its definition
# ---------------------------------------------------------------------------


def conv2d(u, k2, D) -> np.ndarray:
    """Depthwise 2D convolution with skip term, by its definition (linear, not circular):

        y[b, c, h, x, y] = sum_{dx, dy} k2[c, h, dx, dy] u[b, h, x - dx, y - dy]
                           + D[c, h] u[b, h, x, y]

    over the offsets with 0 <= x - dx < X and 0 <= y - dy < Y (u is zero outside the
    image).  k2 is centred: shape (C, H, 2Rx + 1, 2Ry + 1), offset (dx, dy) stored at
    (dx + Rx, dy + Ry) (``kernel2d`` gives Rx = X - 1, Ry = Y - 1; offsets that cannot
    reach the image add nothing).  Shapes: u (B, H, X, Y), D (C, H) or None
    -> y (B, C, H, X, Y), float64.
    """
    u = np.asarray(u, dtype=np.float64)  # (B, H, X, Y)
    k2 = np.asarray(k2, dtype=np.float64)  # (C, H, 2Rx+1, 2Ry+1)
    if u.ndim != 4:
        raise ValueError(f"u must have shape (B, H, X, Y), got {u.shape}.")
    if k2.ndim != 4 or k2.shape[1] != u.shape[1] or k2.shape[2] % 2 == 0 or k2.shape[3] % 2 == 0:
        raise ValueError(f"k2 must be a centred kernel (C, H={u.shape[1]}, 2Rx+1, 2Ry+1) of "
                         f"odd sides, got {k2.shape}.")
    B, H, X, Y = u.shape
    C = k2.shape[0]
    Rx, Ry = (k2.shape[2] - 1) // 2, (k2.shape[3] - 1) // 2
    y = np.zeros((B, C, H, X, Y))  # (B, C, H, X, Y)
    # One term of the double sum per offset (dx, dy), added where x - dx and y - dy lie
    # inside the image: nothing wraps around an edge.
    for dx in range(-min(Rx, X - 1), min(Rx, X - 1) + 1):
        x0, x1 = max(0, dx), min(X, X + dx)  # outputs x with 0 <= x - dx < X
        for dy in range(-min(Ry, Y - 1), min(Ry, Y - 1) + 1):
            y0, y1 = max(0, dy), min(Y, Y + dy)
            tap = k2[None, :, :, dx + Rx, dy + Ry, None, None]  # (1, C, H, 1, 1)
            y[..., x0:x1, y0:y1] += tap * u[:, None, :, x0 - dx:x1 - dx, y0 - dy:y1 - dy]
    if D is not None:
        D = np.asarray(D, dtype=np.float64)  # (C, H)
        if D.shape != (C, H):
            raise ValueError(f"D must have shape (C, H) = {(C, H)}, got {D.shape}.")
        y += D[None, :, :, None, None] * u[:, None]  # skip term D u
    return y


# ---------------------------------------------------------------------------
# 4. The whole layer
# ---------------------------------------------------------------------------


def layer2d(state: Mapping, u, transposed=True, interpolation="linear") -> np.ndarray:
    """One 2D SGConv layer in evaluation mode (no dropout).

        y = conv2d(u, kernel2d(state, (X, Y)), D)   (B, C, H, X, Y)
        y = reshape(y, (B, C*H, X, Y))              heads outermost: row c*H + h
        y = GELU(y)
        out[b, :, x, y] = W @ y[b, :, x, y] + bias  (B, H, X, Y)

    Shapes: u (B, H, X, Y) if transposed (the default) else channels-last (B, X, Y, H);
    the output has the input's layout.  float64.
    """
    D = np.asarray(state["D"], dtype=np.float64)  # (C, H)
    C, H = D.shape
    u = np.asarray(u, dtype=np.float64)
    if u.ndim != 4:
        raise ValueError(f"u must have 4 dimensions, got {u.shape}.")
    if not transposed:
        u = np.moveaxis(u, 3, 1)  # (B, H, X, Y) from (B, X, Y, H)
    if u.shape[1] != H:
        raise ValueError(f"u has {u.shape[1]} channels but the state has H={H} (D {D.shape}).")
    B, _, X, Y = u.shape
    W = np.asarray(state["output_linear.weight"], dtype=np.float64)  # (H, C*H)
    bias = np.asarray(state["output_linear.bias"], dtype=np.float64)  # (H,)
    y = conv2d(u, kernel2d(state, (X, Y), interpolation), D)  # (B, C, H, X, Y)
    y = ref1d.gelu(y.reshape(B, C * H, X, Y))  # (B, C*H, X, Y)
    out = np.einsum("oi,bixy->boxy", W, y) + bias[None, :, None, None]  # (B, H, X, Y)
    return out if transposed else np.moveaxis(out, 1, 3)  # (B, X, Y, H)
