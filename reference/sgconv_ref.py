"""SGConv, defined in float64 NumPy: the reference that every backend is held to.

Read this file top to bottom beside the paper

    Li, Cai, Zhang, Chen, Dey, "What Makes Convolutional Models Great on Long
    Sequence Modeling?", arXiv 2210.09298,

and beside ``shared/SPEC.md``, which fixes every detail the paper leaves open.

SGConv ("Structured Global Convolution") is a depthwise, global, linear
convolution whose kernel is not learned tap by tap. Instead the kernel is
assembled from N short learned sub-kernels ``w_i`` of length ``d``
(``kernel_dim``): sub-kernel i is stretched by 2^max(0, i-1), damped by a decay
alpha^(N-1-i) = m^(N-1-i) and the pieces are concatenated, so that taps far
in the past are smooth (few degrees of freedom) and small (decay). The paper
calls this construction Cat(S):

    k_raw = Cat( m^(N-1) Up_1(w_0), m^(N-2) Up_1(w_1), m^(N-3) Up_2(w_2), ...,
                 m^0 Up_{2^(N-2)}(w_{N-1}) )                    (C', H, K)

with K = d * 2^(N-1) >= l_max. The kernel is divided by the fixed
normaliser Z = ||k_raw||_2 (taken over the whole length K once, at
initialisation) and convolved with the input. A layer is then

    u (B, H, L) -> conv -> (B, C, H, L) -> (B, C*H, L) -> GELU -> W @ . + b
                -> (B, H, L).

The order of the sections below follows that pipeline:

    1. number of scales N                     n_scales
    2. upsampling a sub-kernel                upsample, scale_factor
    3. Cat(S) with decay                      cat_kernel
    4. normalisation Z                        normaliser
    5. the kernel for a length L              kernel_from_raw, kernel
    6. parameters and their initial values    init_state, num_parameters
    7. the convolution, by its definition     conv_causal, conv_bidirectional, conv
    8. exact GELU                             gelu
    9. the whole layer                        layer

Conventions.

* Shapes are written as in SPEC.md: B batch, H model width (``d_model``),
  C heads (``channels``), C' kernel rows (C causal, 2C bidirectional),
  L sequence length, d ``kernel_dim``, N number of scales, K = d * 2^(N-1).
* Everything is computed in float64; every input is converted with
  ``np.asarray(..., dtype=np.float64)``.
* The convolution is written as its defining double sum, a loop over the lag
  s vectorised over the other axes. There is no FFT here: an FFT is an
  implementation choice of the backends, and this file is what they are
  compared against.
* Dropout is not part of the reference: it computes the layer in evaluation
  mode.
* Parameters travel as a plain dict laid out exactly as the authors' released
  PyTorch module (``GConv``, mode ``cat_randn``) saves its ``state_dict``:

      'D'                        (C, H)
      'kernel_list.{i}'          (C', H, d)      i = 0 .. N-1
      'multiplier'               (1, H, 1)       or 0-d 1.0 in learnable mode
      'decay'                    (H,)            learnable mode only
      'kernel_norm'              (C', H, 1)      holds Z
      'kernel_norm_initialized'  bool, 0-d
      'output_linear.weight'     (H, C*H)
      'output_linear.bias'       (H,)

Supported variants of the released module: ``cat`` concatenation (the
default and the paper's method), 'linear' and 'nearest' interpolation, the
fixed per-channel multiplier and the 'learnable' power-law decay, causal and
bidirectional. Not supported: mode ``sum`` and the ``cos`` initialisation.

This module never imports ``sgconv``: it is the independent oracle.
"""

from __future__ import annotations

import math
import operator
from typing import Mapping, Sequence

import numpy as np
from scipy.special import erf

__all__ = [
    "n_scales",
    "scale_factor",
    "upsample",
    "cat_kernel",
    "normaliser",
    "kernel_from_raw",
    "kernel",
    "init_state",
    "num_parameters",
    "conv_causal",
    "conv_bidirectional",
    "conv",
    "gelu",
    "layer",
]

_INTERPOLATIONS = ("linear", "nearest")


def _positive_int(value, name: str) -> int:
    """Return ``value`` as a Python int, or raise ValueError unless it is an integer >= 1."""
    try:
        n = operator.index(value)
    except TypeError:
        raise ValueError(
            f"{name} must be an integer >= 1, got {value!r} of type {type(value).__name__}; "
            f"pass a Python or NumPy integer."
        ) from None
    if n < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {n}.")
    return n


def _check_interpolation(interpolation: str) -> None:
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}."
        )


# ---------------------------------------------------------------------------
# 1. Number of scales N
# ---------------------------------------------------------------------------


def n_scales(l_max, kernel_dim=64, n_scales=None) -> int:
    """Number of scales N of the Cat(S) kernel.

    Formula (SPEC "Parameters"):

        N = n_scales                              if given,
        N = max(1, 1 + ceil(log2(l_max / d)))     otherwise.

    This is the smallest N >= 1 with K = d * 2^(N-1) >= l_max, so the
    concatenated kernel covers the longest sequence (paper, Section 3: the
    number of sub-kernels grows as log(L), hence O(d log(L/d)) parameters).
    The released module gives N <= 0 when l_max < d and then fails; the
    reference returns N = 1 in that case, as SPEC prescribes.

    Arguments are Python integers: ``l_max`` (the longest sequence),
    ``kernel_dim`` (d), ``n_scales`` (an explicit N, or None).
    """
    if n_scales is not None:
        return _positive_int(n_scales, "n_scales")
    l_max = _positive_int(l_max, "l_max")
    d = _positive_int(kernel_dim, "kernel_dim")
    # Integer search instead of float log2: exact for every l_max, and equal to
    # 1 + ceil(log2(l_max / d)) whenever that is >= 1.
    doublings = 0
    while d * 2**doublings < l_max:
        doublings += 1
    return 1 + doublings


_n_scales = n_scales  # init_state and num_parameters take an argument of the same name


# ---------------------------------------------------------------------------
# 2. Upsampling a sub-kernel
# ---------------------------------------------------------------------------


def scale_factor(i) -> int:
    """Stretch factor s_i = 2^max(0, i-1) of scale i (paper: the i-th sub-kernel
    is "upsampled" so that it spans a span twice as long as the previous one).

    Scales 0 and 1 both keep length d; scale i >= 1 has length d * 2^(i-1), so
    scale i starts exactly where the first i scales end (d * 2^(i-1) taps in).
    """
    i = operator.index(i)
    if i < 0:
        raise ValueError(f"scale index i must be >= 0, got {i}.")
    return 2 ** max(0, i - 1)


def upsample(w, factor, interpolation="linear") -> np.ndarray:
    """Stretch a sub-kernel by an integer factor along its last axis.

    Shapes: w (..., d) -> (..., d * factor), float64.

    'linear' (PyTorch ``F.interpolate(mode="linear", align_corners=False)``,
    half-pixel centres): output position j, 0 <= j < d*s, reads the input at

        x_j = max((j + 0.5) / s - 0.5, 0)
        out[j] = (1 - lam_j) * w[floor(x_j)] + lam_j * w[min(floor(x_j) + 1, d - 1)]
        lam_j = x_j - floor(x_j)

    'nearest' (PyTorch ``F.interpolate(mode="nearest")``): out[j] = w[floor(j / s)].

    The paper's "Up" operator; it makes far-away parts of the kernel smooth.
    """
    _check_interpolation(interpolation)
    s = _positive_int(factor, "factor")
    w = np.asarray(w, dtype=np.float64)  # (..., d)
    if w.ndim < 1 or w.shape[-1] < 1:
        raise ValueError(f"w must have a last axis of length d >= 1, got shape {w.shape}.")
    d = w.shape[-1]
    j = np.arange(d * s)  # (d*s,) output positions
    if interpolation == "nearest":
        # Integer floor division: exactly floor(j / s), no rounding questions.
        src = np.minimum(j // s, d - 1)  # (d*s,)
        return w[..., src]  # (..., d*s)
    # Half-pixel centres; clamp at 0 on the left (align_corners=False).
    x = np.maximum((j + 0.5) / s - 0.5, 0.0)  # (d*s,)
    left = np.floor(x).astype(np.int64)  # (d*s,) always <= d-1 since x < d - 0.5
    right = np.minimum(left + 1, d - 1)  # (d*s,) clamp at the last sample
    lam = x - left  # (d*s,) weight on the right sample
    # Written as (1 - lam) * a + lam * b, the same blend PyTorch evaluates.
    return w[..., left] * (1.0 - lam) + w[..., right] * lam  # (..., d*s)


# ---------------------------------------------------------------------------
# 3. Cat(S): upsample, decay, concatenate
# ---------------------------------------------------------------------------


def _per_channel(values, h: int, name: str) -> np.ndarray:
    """Return ``values`` as an (H,) float64 vector; accepts 0-d, (H,), (1, H, 1), ..."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == h:
        return a.reshape(h)  # (H,)
    if a.size == 1:
        return np.full(h, a.reshape(()))  # (H,) one value for every channel
    raise ValueError(
        f"{name} must hold 1 or H={h} values (shapes (), (H,) or (1, H, 1)), "
        f"got shape {a.shape}."
    )


def cat_kernel(weights, multiplier, decay=None, interpolation="linear") -> np.ndarray:
    """The raw Cat(S) kernel k_raw (before normalisation), paper Eq. for SGConv.

        k_raw[c, h, :] = Cat_{i=0..N-1}( m[h]^(N-1-i) * Up_{s_i}(w_i[c, h, :]) )

    with s_i = 2^max(0, i-1), so K = d * 2^(N-1). In 'learnable' decay mode,
    afterwards

        k_raw[c, h, t] *= (t + 1)^(-decay[h]),     t = 0 .. K-1

    (the released module then sets m = 1).

    Shapes: weights a sequence of N arrays (C', H, d); multiplier broadcastable
    to (H,) (e.g. (H,), (1, H, 1) or 0-d); decay None or (H,).
    Returns k_raw (C', H, K), float64.
    """
    _check_interpolation(interpolation)
    if len(weights) < 1:
        raise ValueError(
            "weights must be a non-empty sequence (list/tuple) of N arrays of shape "
            "(C', H, d), one per scale."
        )
    ws = [np.asarray(w, dtype=np.float64) for w in weights]  # N x (C', H, d)
    shape = ws[0].shape
    if len(shape) != 3:
        raise ValueError(f"each sub-kernel must have shape (C', H, d), got {shape}.")
    for i, w in enumerate(ws):
        if w.shape != shape:
            raise ValueError(
                f"all sub-kernels must share one shape (C', H, d); scale 0 has {shape}, "
                f"scale {i} has {w.shape}."
            )
    n = len(ws)
    h = shape[1]
    m = _per_channel(multiplier, h, "multiplier")  # (H,)
    pieces = []
    for i, w in enumerate(ws):
        up = upsample(w, scale_factor(i), interpolation)  # (C', H, d * s_i)
        # Decay: scale i is weighted m^(N-1-i); the nearest scale weighs most
        # when alpha = 1/m < 1.
        pieces.append(up * (m ** (n - 1 - i))[None, :, None])  # (C', H, d * s_i)
    k_raw = np.concatenate(pieces, axis=-1)  # (C', H, K)
    if decay is not None:
        p = _per_channel(decay, h, "decay")  # (H,)
        t = np.arange(k_raw.shape[-1], dtype=np.float64)  # (K,)
        # Learnable variant: a power law (t + 1)^(-decay) over the full length.
        k_raw = k_raw * (t[None, :] + 1.0) ** (-p[:, None])  # (C', H, K)
    return k_raw


# ---------------------------------------------------------------------------
# 4. The normaliser Z
# ---------------------------------------------------------------------------


def normaliser(k_raw) -> np.ndarray:
    """Normaliser Z of the kernel: the L2 norm of each row over the full length K.

        Z[c, h] = sqrt( sum_{t=0..K-1} k_raw[c, h, t]^2 )

    Shapes: k_raw (C', H, K) -> Z (C', H), float64.

    Z is computed once, from the initial weights, and then held fixed (state,
    not a trained parameter); it is stored as 'kernel_norm' (C', H, 1).
    """
    k_raw = np.asarray(k_raw, dtype=np.float64)  # (C', H, K)
    if k_raw.ndim != 3:
        raise ValueError(f"k_raw must have shape (C', H, K), got {k_raw.shape}.")
    return np.sqrt(np.sum(k_raw * k_raw, axis=-1))  # (C', H)


# ---------------------------------------------------------------------------
# 5. The kernel for a sequence of length L
# ---------------------------------------------------------------------------


def kernel_from_raw(k_raw, Z, length) -> np.ndarray:
    """Normalised kernel k for a sequence of length L.

        k = k_raw[..., :L] / Z                    if L <= K
        k = pad(k_raw / Z, zeros up to L)         if L >  K

    Shapes: k_raw (C', H, K), Z (C', H) (or (C', H, 1)) -> k (C', H, L), float64.
    A zero row of Z gives inf/nan, as in the released module; no guard is added.
    """
    k_raw = np.asarray(k_raw, dtype=np.float64)  # (C', H, K)
    if k_raw.ndim != 3:
        raise ValueError(f"k_raw must have shape (C', H, K), got {k_raw.shape}.")
    c_rows, h, K = k_raw.shape
    Z = np.asarray(Z, dtype=np.float64)
    if Z.shape not in ((c_rows, h), (c_rows, h, 1)):
        raise ValueError(
            f"Z must have shape (C', H) = {(c_rows, h)} or (C', H, 1), got {Z.shape}."
        )
    L = _positive_int(length, "length")
    k = k_raw / Z.reshape(c_rows, h, 1)  # (C', H, K)
    if L <= K:
        return k[..., :L]  # (C', H, L) truncate: taps beyond L never meet the input
    # Longer than the kernel was built for: zero taps, i.e. no contribution.
    return np.concatenate([k, np.zeros((c_rows, h, L - K))], axis=-1)  # (C', H, L)


def _sub_kernels(state: Mapping) -> list:
    """The N sub-kernels 'kernel_list.0' .. 'kernel_list.{N-1}' of a state dict."""
    ws = []
    while f"kernel_list.{len(ws)}" in state:
        ws.append(np.asarray(state[f"kernel_list.{len(ws)}"], dtype=np.float64))  # (C', H, d)
    if not ws:
        raise ValueError(
            "state has no 'kernel_list.0'; expected keys 'kernel_list.{i}' of shape "
            "(C', H, d) for i = 0 .. N-1, as the released module's state_dict has."
        )
    return ws


def kernel(state: Mapping, length, interpolation="linear") -> np.ndarray:
    """The normalised SGConv kernel k (C', H, L) of a parameter dict, for length L.

        k = Cat(S)(kernel_list.*, multiplier, decay)[..., :L] / Z

    Z is read from state['kernel_norm'] (C', H, 1). If the state says
    'kernel_norm_initialized' is False (a released model saved before its first
    forward call), Z is what that module would compute on its first call: the
    norm of the current k_raw. The state itself is never modified.
    """
    ws = _sub_kernels(state)  # N x (C', H, d)
    decay = state.get("decay")
    k_raw = cat_kernel(ws, state["multiplier"], decay, interpolation)  # (C', H, K)
    initialised = state.get("kernel_norm_initialized")
    if initialised is not None and not bool(np.asarray(initialised)):
        Z = normaliser(k_raw)  # (C', H) lazily defined Z of the released module
    else:
        Z = np.asarray(state["kernel_norm"], dtype=np.float64)  # (C', H, 1)
    return kernel_from_raw(k_raw, Z, length)  # (C', H, L)


# ---------------------------------------------------------------------------
# 6. Parameters and their initial values
# ---------------------------------------------------------------------------


def init_state(
    d_model,
    l_max,
    channels=1,
    kernel_dim=64,
    n_scales=None,
    decay_min=2.0,
    decay_max=2.0,
    bidirectional=False,
    learnable_decay=False,
    interpolation="linear",
    rng=None,
) -> dict:
    """A fresh parameter dict, laid out as the released module's state_dict.

    Initial values (SPEC "Parameters and their initial values"):

        kernel_list.i         (C', H, d)   ~ N(0, 1),               i = 0 .. N-1
        multiplier            (1, H, 1)    = linspace(decay_min, decay_max, H)
                              (learnable: 0-d 1.0, and decay (H,) ~ U[decay_min, decay_max])
        D                     (C, H)       ~ N(0, 1)
        output_linear.weight  (H, C*H)     ~ U(-1/sqrt(C*H), 1/sqrt(C*H))   (nn.Linear default)
        output_linear.bias    (H,)         ~ U(-1/sqrt(C*H), 1/sqrt(C*H))
        kernel_norm           (C', H, 1)   = Z of the initial weights
        kernel_norm_initialized            = True

    Draw order from ``rng`` (a numpy Generator, an int seed, or None):
    kernel_list.0 .. kernel_list.{N-1}, D, output_linear.weight,
    output_linear.bias, then decay (learnable mode only).
    """
    H = _positive_int(d_model, "d_model")
    C = _positive_int(channels, "channels")
    d = _positive_int(kernel_dim, "kernel_dim")
    N = _n_scales(l_max, d, n_scales)
    _check_interpolation(interpolation)
    rng = np.random.default_rng(rng)
    c_rows = 2 * C if bidirectional else C  # C': the anti-causal half doubles the rows
    state = {}
    for i in range(N):
        state[f"kernel_list.{i}"] = rng.standard_normal((c_rows, H, d))  # (C', H, d)
    state["D"] = rng.standard_normal((C, H))  # (C, H)
    bound = 1.0 / math.sqrt(C * H)  # PyTorch nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    state["output_linear.weight"] = rng.uniform(-bound, bound, (H, C * H))  # (H, C*H)
    state["output_linear.bias"] = rng.uniform(-bound, bound, H)  # (H,)
    if learnable_decay:
        state["multiplier"] = np.array(1.0)  # () the fixed decay is switched off
        state["decay"] = rng.uniform(decay_min, decay_max, H)  # (H,)
    else:
        state["multiplier"] = np.linspace(decay_min, decay_max, H).reshape(1, H, 1)  # (1, H, 1)
    ws = [state[f"kernel_list.{i}"] for i in range(N)]  # N x (C', H, d)
    k_raw = cat_kernel(ws, state["multiplier"], state.get("decay"), interpolation)  # (C', H, K)
    # Z is fixed here, at construction, never lazily on a forward call.
    state["kernel_norm"] = normaliser(k_raw)[..., None]  # (C', H, 1)
    state["kernel_norm_initialized"] = np.array(True)  # () bool
    return state


def num_parameters(
    d_model, l_max, channels=1, kernel_dim=64, n_scales=None, bidirectional=False
) -> int:
    """Number of learned kernel weights: N * C' * H * d.

    This counts the sub-kernels only (not D, the multiplier or the mixing
    layer); it grows as O(d log(l_max / d)), sub-linearly in l_max (paper, the
    "sub-linear parameter" principle).
    """
    H = _positive_int(d_model, "d_model")
    C = _positive_int(channels, "channels")
    d = _positive_int(kernel_dim, "kernel_dim")
    N = _n_scales(l_max, d, n_scales)
    c_rows = 2 * C if bidirectional else C
    return N * c_rows * H * d


# ---------------------------------------------------------------------------
# 7. The convolution, written as its definition
# ---------------------------------------------------------------------------


def _check_conv_inputs(u, k, D, rows_per_head: int, name: str):
    """Convert and validate u (B, H, L), k (rows, H, Lk), D (C, H) or None; return C too."""
    u = np.asarray(u, dtype=np.float64)  # (B, H, L)
    k = np.asarray(k, dtype=np.float64)  # (C', H, Lk)
    if u.ndim != 3:
        raise ValueError(f"{name}: u must have shape (B, H, L), got {u.shape}.")
    if k.ndim != 3:
        raise ValueError(f"{name}: k must have shape (C', H, L), got {k.shape}.")
    if k.shape[1] != u.shape[1]:
        raise ValueError(
            f"{name}: k has H={k.shape[1]} channels but u has H={u.shape[1]} "
            f"(k {k.shape}, u {u.shape})."
        )
    if k.shape[0] % rows_per_head:
        raise ValueError(
            f"{name}: k must have {rows_per_head}*C rows, got {k.shape[0]} (k {k.shape})."
        )
    C = k.shape[0] // rows_per_head
    if D is not None:
        D = np.asarray(D, dtype=np.float64)  # (C, H)
        if D.shape != (C, u.shape[1]):
            raise ValueError(
                f"{name}: D must have shape (C, H) = {(C, u.shape[1])} for k {k.shape} "
                f"and u {u.shape}, got {D.shape}."
            )
    return u, k, D, C


def conv_causal(u, k, D) -> np.ndarray:
    """Causal depthwise convolution with skip term, by its definition.

        y[b, c, h, t] = sum_{s=0..t} k[c, h, s] * u[b, h, t - s]  +  D[c, h] * u[b, h, t]

    for 0 <= t < L: each of the H input channels is convolved with C kernels
    (the paper's "global convolution" y = k * u + D u).

    Shapes: u (B, H, L), k (C, H, Lk), D (C, H) or None (no skip term)
    -> y (B, C, H, L), float64. Taps of k beyond L are never reached; a
    kernel shorter than L acts as if padded with zeros.
    """
    u, k, D, C = _check_conv_inputs(u, k, D, 1, "conv_causal")
    B, H, L = u.shape
    y = np.zeros((B, C, H, L))  # (B, C, H, L)
    # One term of the sum per lag s; lags >= min(L, Lk) contribute nothing.
    for s in range(min(L, k.shape[-1])):
        # y[..., t] += k[s] * u[..., t - s] for t = s .. L-1
        y[..., s:] += k[None, :, :, s, None] * u[:, None, :, : L - s]  # (B, C, H, L-s)
    if D is not None:
        y += D[None, :, :, None] * u[:, None, :, :]  # (B, C, H, L) skip term D u
    return y


def conv_bidirectional(u, k, D) -> np.ndarray:
    """Bidirectional depthwise convolution with skip term, by its definition.

    Kernel rows 0..C-1 are the causal half k0, rows C..2C-1 the anti-causal
    half k1, and for 0 <= t < L

        y[b, c, h, t] = sum_{s=0..t}     k0[c, h, s]     * u[b, h, t - s]
                      + sum_{s=1..L-1-t} k1[c, h, s - 1] * u[b, h, t + s]
                      + D[c, h] * u[b, h, t]

    so k1[0] reaches one step ahead (lag -1), k1[1] two steps, and so on;
    lag 0 belongs to k0 alone (the released module's layout).

    Shapes: u (B, H, L), k (2C, H, Lk), D (C, H) or None -> y (B, C, H, L), float64.
    """
    u, k, D, C = _check_conv_inputs(u, k, D, 2, "conv_bidirectional")
    B, H, L = u.shape
    k0 = k[:C]  # (C, H, Lk) causal half: lags 0, 1, 2, ...
    k1 = k[C:]  # (C, H, Lk) anti-causal half: lags -1, -2, ...
    y = conv_causal(u, k0, D)  # (B, C, H, L) causal sum and skip term
    # Anti-causal lag -s uses tap k1[s-1]; lags beyond L-1 or beyond the kernel vanish.
    for s in range(1, min(L - 1, k1.shape[-1]) + 1):
        # y[..., t] += k1[s-1] * u[..., t + s] for t = 0 .. L-1-s
        y[..., : L - s] += k1[None, :, :, s - 1, None] * u[:, None, :, s:]  # (B, C, H, L-s)
    return y


def conv(u, k, D, bidirectional=False) -> np.ndarray:
    """SGConv's convolution: ``conv_bidirectional`` if bidirectional else ``conv_causal``.

    Shapes: u (B, H, L), k (C', H, Lk), D (C, H) or None -> y (B, C, H, L).
    """
    if bidirectional:
        return conv_bidirectional(u, k, D)  # (B, C, H, L)
    return conv_causal(u, k, D)  # (B, C, H, L)


# ---------------------------------------------------------------------------
# 8. Exact GELU
# ---------------------------------------------------------------------------


def gelu(x) -> np.ndarray:
    """Gaussian error linear unit, exact (erf) form, not the tanh approximation.

        GELU(x) = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))

    Shapes: any -> same shape, float64.
    """
    x = np.asarray(x, dtype=np.float64)  # (...)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))  # (...)


# ---------------------------------------------------------------------------
# 9. The whole layer
# ---------------------------------------------------------------------------


def layer(state: Mapping, u, bidirectional=False, transposed=True, interpolation="linear"):
    """One SGConv layer in evaluation mode (no dropout).

        y = conv(u, k, D)                      (B, C, H, L)
        y = reshape(y, (B, C*H, L))            heads outermost, as rearrange 'b c h l -> b (c h) l'
        y = GELU(y)
        out[b, :, t] = W @ y[b, :, t] + bias   (B, H, L)

    with k = kernel(state, L) of shape (C', H, L), W = state['output_linear.weight']
    (H, C*H), bias = state['output_linear.bias'] (H,).

    Shapes: u (B, H, L) if transposed (the default) else (B, L, H); the output
    has the same layout as the input. float64.
    """
    D = np.asarray(state["D"], dtype=np.float64)  # (C, H)
    if D.ndim != 2:
        raise ValueError(f"state['D'] must have shape (C, H), got {D.shape}.")
    C, H = D.shape
    u = np.asarray(u, dtype=np.float64)
    if u.ndim != 3:
        raise ValueError(
            f"u must have shape {'(B, H, L)' if transposed else '(B, L, H)'}, got {u.shape}."
        )
    if not transposed:
        u = np.swapaxes(u, 1, 2)  # (B, H, L) from (B, L, H)
    if u.shape[1] != H:
        raise ValueError(
            f"u has {u.shape[1]} channels but the state has H={H} (D {D.shape}); "
            f"with transposed={transposed} u must be "
            f"{'(B, H, L)' if transposed else '(B, L, H)'}."
        )
    B, _, L = u.shape
    k = kernel(state, L, interpolation)  # (C', H, L)
    rows = 2 * C if bidirectional else C
    if k.shape[0] != rows:
        raise ValueError(
            f"bidirectional={bidirectional} with C={C} (from D {D.shape}) needs "
            f"{rows} kernel rows, but kernel_list.* has {k.shape[0]}."
        )
    W = np.asarray(state["output_linear.weight"], dtype=np.float64)  # (H, C*H)
    bias = np.asarray(state["output_linear.bias"], dtype=np.float64)  # (H,)
    if W.shape != (H, C * H) or bias.shape != (H,):
        raise ValueError(
            f"output_linear must be weight (H, C*H) = {(H, C * H)} and bias (H,) = {(H,)}, "
            f"got {W.shape} and {bias.shape}."
        )
    y = conv(u, k, D, bidirectional)  # (B, C, H, L)
    y = y.reshape(B, C * H, L)  # (B, C*H, L) index c*H + h
    y = gelu(y)  # (B, C*H, L)
    out = np.einsum("oi,bil->bol", W, y) + bias[None, :, None]  # (B, H, L) position-wise linear
    if not transposed:
        out = np.swapaxes(out, 1, 2)  # (B, L, H)
    return out
