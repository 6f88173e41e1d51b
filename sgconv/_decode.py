"""Step-by-step decoding of a causal SGConv layer, written once for every backend.

shared/SPEC.md, "Step-by-step decoding".  For a causal layer, output t needs only the
inputs up to t:

    z[b, c, h, t] = sum_{s=0..t} k[c, h, s] u[b, h, t - s] + D[c, h] u[b, h, t]    (B, C, H)
    y[:, :, t]    = W GELU(z[..., t]) + b                                          (B, H)

Computed as a dot product with the cached kernel this costs O(K) per token and channel.
SGConv's kernel is a concatenation of P = O(d log K) *runs*: stretches of lags a_p ..
a_p + l_p - 1 on which it is affine, k[a_p + r] = alpha_p + beta_p r (the half-pixel
linear upsampling is piecewise affine in the lag; nearest is piecewise constant).  With
the window sums of the input each run covers,

    S_p(t) = sum_{r < l_p} u[t - a_p - r],      M_p(t) = sum_{r < l_p} r u[t - a_p - r],

the convolution is z = sum_p alpha_p S_p + beta_p M_p + D u, and a step updates each
window in O(1): the input at lag a_p enters, the one at lag a_p + l_p leaves,

    S_p(t+1) = S_p(t) + u[t+1 - a_p] - u[t+1 - a_p - l_p]
    M_p(t+1) = M_p(t) + S_p(t) - l_p u[t+1 - a_p - l_p]

(runs are contiguous, so the input leaving run p is the one entering run p+1).  The sums
depend on the input and the run geometry only, not on the weights, so one state serves
all C kernel rows: O(P) work per token and channel instead of O(K).

Precision.  Running sums drift: in float32 every update rounds, and the error of S feeds
M at every step.  So the sums are kept in float64 when the layer computes in float32
("wide": a float32 input has 24 significant bits, so its window sums are exact in
float64 for any realistic dynamic range), and as compensated double-word sums
(hi + lo, error-free TwoSum updates, Knuth/Kahan) when no wider type exists: float64
layers, and float32 on JAX without 64-bit mode.  Either way the state carries no drift
that grows with t.

Layout.  Time-major: the input history is a ring buffer (R, B, H), R = span + 1 (slot
n % R holds u[n]), and the run sums are (2, P - T, B, H), [S; M] (the T leading runs are
single taps and need no sums).  A step gathers the P + 1 rows it needs (each a contiguous
(B, H) block, so the gather streams through memory even when the history is gigabytes)
and updates all runs with a handful of vectorised operations: no Python loop over runs.

``learnable`` decay multiplies the kernel by (t + 1)^(-decay), which is not piecewise
affine: a decoder for it keeps the kernel (span, C, H) and takes an exact dot product
with the history, O(K) per token.  Bidirectional layers read the future and cannot be
decoded step by step: that raises ValueError.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import numpy as np

from . import _ops
from ._checks import check_float
from ._config import SGConvConfig
from .backends._base import Backend, array_framework, register_structure

__all__ = ["Runs", "runs", "Decoder", "DecodeState", "accumulation", "make_decoder",
           "empty_state", "prefill_state", "prefill", "step", "check_decodable", "check_state",
           "check_step_input"]


# --- 1. The run decomposition of the kernel -----------------------------------------------

class Runs(NamedTuple):
    """The kernel k[..., :span] as P affine runs, derived from the library's upsampling.

    Run p covers the lags starts[p] .. starts[p] + lengths[p] - 1 of scale ``scale[p]``
    and there, at r = 0 .. lengths[p] - 1,

        Up(w)[j] = w[lo] + (w[hi] - w[lo]) (frac0 + r * slope)

    (the blend of :func:`sgconv._ops.upsample_index`, affine in r).  Runs are contiguous:
    starts[p + 1] = starts[p] + lengths[p], starts[0] = 0, and they end at ``span``.
    All arrays are NumPy, shape (P,).
    """

    starts: np.ndarray
    lengths: np.ndarray
    scale: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    frac0: np.ndarray
    slope: np.ndarray
    span: int

    @property
    def count(self) -> int:
        """P, the number of runs."""
        return int(self.starts.shape[0])

    @property
    def taps(self) -> int:
        """How many leading runs have length 1 (scales 0 and 1, and scale 2's first sample):
        single taps, whose window sum is the input itself, so they need no running sums."""
        longer = np.flatnonzero(self.lengths != 1)
        return int(longer[0]) if longer.size else self.count

    @property
    def ends(self) -> np.ndarray:
        """(P,) the lag one past each run: starts + lengths (= the next run's start)."""
        return self.starts + self.lengths


def _affine_pieces(frac: np.ndarray) -> list:
    """Split one stretch of blend weights into maximal affine pieces: (offset, length).

    Greedy from the right end, which is optimal (affinity holds on every sub-interval)
    and puts the clamped half-pixel samples at the start of a scale in a run of their
    own, as SPEC's decomposition does.  The weights are exact dyadic fractions for the
    power-of-two stretches SGConv uses; the tolerance only absorbs float64 rounding.
    """
    pieces, end = [], len(frac)
    while end > 0:
        if end == 1:
            pieces.append((0, 1))
            break
        slope = frac[end - 1] - frac[end - 2]
        r = np.arange(end)
        fits = np.abs(frac[:end] - (frac[end - 1] - slope * (end - 1 - r))) <= 1e-9
        start = int(np.flatnonzero(~fits)[-1]) + 1 if not fits.all() else 0
        pieces.append((start, end - start))
        end = start
    return pieces[::-1]


@functools.lru_cache(maxsize=256)
def _scale_runs(kernel_dim: int, factor: int, interpolation: str) -> tuple:
    """The runs of one upsampled scale, from :func:`sgconv._ops.upsample_index`.

    Returns (start, length, lo, hi, frac0, slope) arrays over the scale's own lags
    0 .. d*s - 1.  Samples that read the same pair (lo, hi) are grouped, and each group
    is split where its blend weight stops being affine in the lag.
    """
    lo, hi, frac = _ops.upsample_index(kernel_dim, factor, interpolation)
    if hi is None:                                                 # nearest: w[j // s]
        hi, frac = lo, np.zeros(lo.shape)
    change = np.flatnonzero((lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])) + 1
    bounds = np.concatenate([[0], change, [lo.shape[0]]])
    rows = []
    for g0, g1 in zip(bounds[:-1], bounds[1:]):
        if lo[g0] == hi[g0]:                                       # w[lo] whatever the blend
            rows.append((g0, g1 - g0, lo[g0], lo[g0], 0.0, 0.0))
            continue
        for offset, length in _affine_pieces(frac[g0:g1]):
            j = g0 + offset
            slope = frac[j + 1] - frac[j] if length > 1 else 0.0
            rows.append((j, length, lo[j], hi[j], frac[j], slope))
    cols = list(zip(*rows))
    return (np.asarray(cols[0], np.int64), np.asarray(cols[1], np.int64),
            np.asarray(cols[2], np.int64), np.asarray(cols[3], np.int64),
            np.asarray(cols[4], np.float64), np.asarray(cols[5], np.float64))


@functools.lru_cache(maxsize=256)
def runs(config: SGConvConfig, length: int | None = None) -> Runs:
    """The run decomposition of the causal kernel k[..., :length] (default: all K lags).

    For linear interpolation and d >= 2: scales 0 and 1 (s = 1) are d runs of one tap
    each, every scale i >= 2 (s = 2^(i-1)) is d + 1 runs (s/2 clamped taps of w[0], d - 1
    affine stretches of s taps, s/2 taps of w[d-1]), so P = 2d + (N - 2)(d + 1) for the
    whole kernel; nearest has d constant runs per scale, P = N d.  A length L < K cuts
    the runs at L (fewer, the last one shorter).  Lags at and past K are zero: no run.
    """
    K = config.kernel_length
    span = K if length is None else min(int(length), K)
    cols = [[] for _ in range(7)]
    offset = 0
    for i, s in enumerate(config.scale_factors):
        if offset >= span:
            break
        start, size, lo, hi, f0, df = _scale_runs(config.kernel_dim, s, config.interpolation)
        start = start + offset
        keep = start < span
        size = np.minimum(size[keep], span - start[keep])          # the run cut at span
        for col, values in zip(cols, (start[keep], size, np.full(size.shape, i), lo[keep],
                                      hi[keep], f0[keep], df[keep])):
            col.append(values)
        offset += config.kernel_dim * s
    starts, lengths, scale, lo, hi, f0, df = (np.concatenate(c) for c in cols)
    return Runs(starts, lengths, scale, lo, hi, f0, df, span)


# --- 2. The decoder: run coefficients, computed once from the parameters --------------------

def check_decodable(config: SGConvConfig) -> None:
    """ValueError for a bidirectional layer: its anti-causal half reads future inputs."""
    if config.bidirectional:
        raise ValueError(
            "step-by-step decoding needs a causal layer, but this one is bidirectional: its "
            "anti-causal half reads inputs after t, which a step does not have yet. Decode "
            "with a causal layer (bidirectional=False), or run the whole sequence at once "
            "with the layer itself")


def accumulation(bk, dtype: str) -> tuple:
    """(accumulator dtype, compensated) for a layer computing in ``dtype``.

    float32 on a backend with float64: plain float64 sums (exact for float32 inputs).
    Otherwise (float64 layers; JAX without 64-bit mode): compensated double-word sums
    in ``dtype`` itself.
    """
    if dtype == "float32" and bk.float64_supported():
        return "float64", False
    return dtype, True


@dataclasses.dataclass(frozen=True)
class Decoder:
    """A causal layer ready to decode: the run coefficients and the layer's arrays.

    Leaves (arrays of one backend):
        arrays: the layer's parameters (``ARRAY_NAMES``) in the compute dtype, for the
            prefill's FFT layer, D and the mixing linear.
        tap_coef: (T, C, H) the kernel at the T = ``taps`` leading lags, which are runs of
            length 1 (their window sum is the input itself), D folded into lag 0.
        coef: (2, P - T, C, H) the coefficients [alpha; beta] of the longer runs,
            k[a_p + r] = alpha_p + beta_p r.  Both in the accumulator dtype, None for
            learnable decay.
        kernel: (span, C, H) the cached kernel, lag-major (learnable decay only; else None).
        lags: (P + 1,) int, the lags a_0 = 0, a_1, ..., a_P = span where inputs enter
            (and leave) the runs.
        lengths: (P - T, 1, 1) the longer runs' lengths l_p, in the compute dtype (powers
            of two, so l_p u is exact in it).
    Static: config, span (lags covered: K), accumulate (dtype name), compensated (bool),
    taps (T).
    Made by :func:`make_decoder`; a pytree under JAX.
    """

    config: SGConvConfig
    span: int
    accumulate: str
    compensated: bool
    taps: int
    arrays: Any
    tap_coef: Any
    coef: Any
    kernel: Any
    lags: Any
    lengths: Any

    @property
    def alpha(self):
        """(P, C, H) every run's value at r = 0 (D included in alpha_0), or None."""
        if self.coef is None:
            return None
        return _concat0(self.tap_coef, self.coef[0])

    @property
    def beta(self):
        """(P, C, H) every run's slope (0 for the single taps), or None."""
        if self.coef is None:
            return None
        return _concat0(self.tap_coef * 0, self.coef[1])

    @property
    def runs(self) -> Runs | None:
        """The run decomposition, or None for the learnable-decay dot product."""
        return None if self.kernel is not None else runs(self.config, self.span)

    @property
    def dtype(self):
        """The dtype the layer computes in (the input history's)."""
        return self.arrays["out_weight"].dtype


register_structure(Decoder, data=("arrays", "tap_coef", "coef", "kernel", "lags", "lengths"),
                   static=("config", "span", "accumulate", "compensated", "taps"))


def _concat0(a, b):
    """a and b joined along the first axis, with the framework they belong to."""
    from ._switch import backend
    return backend(array_framework(a) or "numpy").concat([a, b], axis=0)


def _run_coefficients(bk, config: SGConvConfig, arrays, geometry: Runs):
    """k[a_p + r] = alpha_p + beta_p r on run p (causal rows), D folded into alpha_0 (run 0
    is lag 0 alone: scale 0 is never stretched), as (alpha of the T leading single taps
    (T, C, H), [alpha; beta] of the other runs (2, P - T, C, H)).

    Per scale i, with the factor g = m^(N-1-i) / Z:  alpha = g (w[lo] + (w[hi] - w[lo]) f0),
    beta = g (w[hi] - w[lo]) slope, gathered from the sub-kernel at the runs' indices.
    Built lag-major and concatenated, so the result is contiguous (the step streams it).
    """
    N, C = config.num_scales, config.channels
    alphas, betas = [], []
    for i, w in enumerate(arrays["kernels"]):
        sel = np.flatnonzero(geometry.scale == i)
        if sel.size == 0:
            break
        w = w[:C]                                                   # (C, H, d) causal rows
        w_lo = bk.take(w, geometry.lo[sel])                         # (C, H, P_i)
        diff = bk.take(w, geometry.hi[sel]) - w_lo
        dtype = bk.dtype_name(w)
        f0 = bk.asarray(geometry.frac0[sel], dtype=dtype, like=w)
        slope = bk.asarray(geometry.slope[sel], dtype=dtype, like=w)
        g = (arrays["multiplier"] ** (N - 1 - i))[:, None]          # (H, 1)
        alphas.append(bk.xp.moveaxis((w_lo + diff * f0) * g, -1, 0))  # (P_i, C, H)
        betas.append(bk.xp.moveaxis(diff * slope * g, -1, 0))
    Z = bk.stop_gradient(arrays["kernel_norm"][:C])                 # (C, H)
    alpha = _fold_skip(bk, bk.concat(alphas, axis=0) / Z, arrays["D"])   # (P, C, H)
    beta = bk.concat(betas, axis=0) / Z                             # (P, C, H)
    T = geometry.taps
    return alpha[:T], bk.concat([alpha[T:][None], beta[T:][None]], axis=0)  # (T,..) (2,P-T,..)


def _cast_arrays(bk, arrays, dtype: str) -> dict:
    out = {}
    for name, value in arrays.items():
        if name == "kernels":
            out[name] = tuple(bk.cast(w, dtype) for w in value)
        else:
            out[name] = None if value is None else bk.cast(value, dtype)
    return out


def _fold_skip(bk, coef, D):
    """D u is the lag-0 tap: add D (C, H) to row 0 of coef (lag-major), as the FFT path
    folds it into its kernel.  Row 0 is lag 0 alone: scale 0 is never stretched."""
    return bk.concat([coef[:1] + D[None], coef[1:]], axis=0)


def make_decoder(bk, config: SGConvConfig, arrays) -> Decoder:
    """The decoder of a causal layer: run coefficients (or the kernel) computed once.

    arrays: the layer's parameters (``ARRAY_NAMES``) in the compute dtype.  The
    coefficients are computed from them cast to the accumulator dtype (float64 for a
    float32 layer where available), so they carry no more rounding than the kernel.
    """
    check_decodable(config)
    dtype = bk.dtype_name(arrays["out_weight"])
    acc, compensated = accumulation(bk, dtype)
    wide = _cast_arrays(bk, arrays, acc)
    like = arrays["out_weight"]
    span = config.kernel_length
    if config.learnable_decay:
        # (t+1)^(-decay) is not affine in t: keep the kernel, lag-major (span, C, H).
        k = _ops.kernel(bk, config, wide["kernels"], wide["multiplier"], wide["kernel_norm"],
                        wide["decay"], length=span, pad=False)[:config.channels]
        k = _fold_skip(bk, bk.xp.moveaxis(k, -1, 0), wide["D"])     # (span, C, H)
        lags = bk.asarray(np.arange(span, dtype=np.int64), like=like)
        return Decoder(config, span, acc, compensated, 0, arrays, None, None, k, lags, None)
    geometry = runs(config, span)
    tap_coef, coef = _run_coefficients(bk, config, wide, geometry)  # (T, C, H), (2, P-T, C, H)
    lags = bk.asarray(np.concatenate([geometry.starts, [span]]).astype(np.int64), like=like)
    if np.any(geometry.lengths & (geometry.lengths - 1)):
        raise AssertionError("run lengths must be powers of two (1, s/2, s) for exact l u")
    lengths = bk.asarray(geometry.lengths[geometry.taps:].astype(np.float64)[:, None, None],
                         dtype=dtype, like=like)                    # (P - T, 1, 1)
    return Decoder(config, span, acc, compensated, geometry.taps, arrays, tap_coef, coef, None,
                   lags, lengths)


# --- 3. The state ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DecodeState:
    """What a causal layer remembers between steps, for B independent streams.

    history: (R, B, H) the last R - 1 = span inputs in a ring (slot n % R holds u[n]),
        in the compute dtype; slots not yet written are zero (the inputs before t = 0).
    sums: (2, P - T, B, H) [S; M], S_p and M_p of each run longer than one tap (None for
        learnable decay), in the accumulator dtype; with compensated sums, the high words.
    sums_lo: (2, P - T, B, H) the low words of compensated sums, else None.
    position: () int, how many inputs the streams have consumed (all advance together).
    A pytree under JAX.
    """

    history: Any
    sums: Any
    sums_lo: Any
    position: Any

    @property
    def batch(self) -> int:
        """B, the number of streams."""
        return int(self.history.shape[1])

    @property
    def nbytes(self) -> int:
        """The memory its arrays take, in bytes."""
        return sum(int(np.prod(x.shape)) * _itemsize(x) for x in dataclasses.astuple(self)
                   if x is not None)

    def to(self, device) -> "DecodeState":
        """The same state on another device, for torch tensors: ``state.to("cuda")`` (dtypes
        kept).  A JAX state is a pytree: ``jax.device_put(state, device)``."""
        if array_framework(self.history) != "torch":
            raise TypeError(f"DecodeState.to moves torch tensors; this state holds "
                            f"{type(self.history).__name__} (for JAX: jax.device_put(state, "
                            f"device))")
        return self._map(lambda x: x.to(device))

    def _map(self, fn) -> "DecodeState":
        return DecodeState(*(None if x is None else fn(x) for x in dataclasses.astuple(self)))


register_structure(DecodeState, data=("history", "sums", "sums_lo", "position"), static=())


def _itemsize(x) -> int:
    return np.dtype(str(x.dtype).removeprefix("torch.")).itemsize


def _position(bk, n: int, like):
    return bk.asarray(np.asarray(n, dtype=np.int64), like=like)


def empty_state(bk, dec: Decoder, batch: int) -> DecodeState:
    """The state before any input (t = 0): zero history, zero sums."""
    like = dec.arrays["out_weight"]
    H = dec.config.d_model
    history = bk.zeros((dec.span + 1, batch, H), bk.dtype_name(like), like=like)
    if dec.kernel is not None:
        return DecodeState(history, None, None, _position(bk, 0, like))
    P = dec.coef.shape[1]                                           # runs past the taps
    zero = lambda: bk.zeros((2, P, batch, H), dec.accumulate, like=like)  # noqa: E731
    return DecodeState(history, zero(), zero() if dec.compensated else None,
                       _position(bk, 0, like))


# --- 4. Compensated (double-word) arithmetic -------------------------------------------------

def _two_sum(a, b):
    """s + e = a + b exactly, s = fl(a + b) (Knuth's TwoSum; no branch, any magnitudes)."""
    s = a + b
    b_virtual = s - a
    return s, (a - (s - b_virtual)) + (b - b_virtual)


def _add(hi, lo, x):
    """(hi, lo) + x for a plain x, renormalised so that |lo| <= ulp(hi) / 2."""
    hi, e = _two_sum(hi, x)
    return _two_sum(hi, lo + e)


def _add_pair(a_hi, a_lo, b_hi, b_lo):
    """(a_hi, a_lo) + (b_hi, b_lo), double-word."""
    hi, e = _two_sum(a_hi, b_hi)
    return _two_sum(hi, (a_lo + b_lo) + e)


# --- 5. Prefill: the prompt's outputs by FFT, and the state after it -------------------------

def _length_groups(geometry: Runs) -> tuple:
    """The runs past the single taps, grouped by length: ([(length, lag index (count, l))],
    order) where ``order`` puts the groups' concatenated results back in run order.

    A run of length l = 2^k is either one of the d - 1 middle runs of scale k + 1 or a
    half run of scale k + 2, so there are about N distinct lengths: the prefill does one
    reduction per length, not per scale.
    """
    T = geometry.taps
    lengths, starts = geometry.lengths[T:], geometry.starts[T:]
    groups, members = [], []
    for l in np.unique(lengths):
        sel = np.flatnonzero(lengths == l)
        groups.append((int(l), starts[sel][:, None] + np.arange(l)))   # (count, l) lags
        members.append(sel)
    order = np.argsort(np.concatenate(members)) if members else np.zeros(0, np.int64)
    return groups, order


def _windows(bk, v, lags):
    """v's rows at ``lags`` (count, l): (count, l, B, H), the windows of one run length."""
    count, l = lags.shape
    rows = bk.take_rows(v, bk.asarray(lags.reshape(-1), like=v))   # (count*l, B, H)
    return rows.reshape((count, l) + tuple(v.shape[1:]))


def _window_sums_wide(bk, v, dec: Decoder, geometry: Runs):
    """[S; M] (2, P - T, B, H) from the reversed history v (span, B, H) (v[a] = u[t - a]): per
    run length l, the (count, l) windows summed with a matrix product against ones and
    against r = 0 .. l-1 in the accumulator dtype (exact for float32 inputs in float64)."""
    groups, order = _length_groups(geometry)
    B, H = v.shape[1], v.shape[2]
    if not groups:                                                  # single taps only
        return bk.zeros((2, 0, B, H), dec.accumulate, like=v)
    parts = []
    for l, lags in groups:
        seg = bk.cast(_windows(bk, v, lags), dec.accumulate).reshape(lags.shape[0], l, B * H)
        weights = bk.asarray(np.stack([np.ones(l), np.arange(l, dtype=np.float64)])[None],
                             dtype=dec.accumulate, like=seg)        # (1, 2, l)
        parts.append(bk.xp.moveaxis(weights @ seg, 1, 0))           # (2, count, B*H)
    sums = bk.concat(parts, axis=1)                                 # (2, P - T, B*H), grouped
    order = bk.asarray(order, like=v)
    sums = bk.concat([bk.take_rows(sums[0], order)[None], bk.take_rows(sums[1], order)[None]],
                     axis=0)                                        # run order
    return sums.reshape(2, -1, B, H)


def _window_sums_compensated(bk, v, geometry: Runs):
    """[S; M] (2, P - T, B, H) as double words (hi, lo) from v (span, B, H), in v's dtype.

    S must be exact: its error would stay in the state and feed M at every step.  Per run
    length l, the (count, l) windows are summed as a pairwise tree of double-word
    additions (a window of length not a power of two is padded with zeros).  M's rounding
    does not grow (no sum feeds it but S), so M is one plain weighted sum, low word zero.
    """
    groups, order = _length_groups(geometry)
    B, H = v.shape[1], v.shape[2]
    dtype = bk.dtype_name(v)
    if not groups:                                                  # single taps only
        zero = bk.zeros((2, 0, B, H), dtype, like=v)
        return zero, zero
    s_parts, lo_parts, m_parts = [], [], []
    for l, lags in groups:
        seg = _windows(bk, v, lags)                                 # (count, l, B, H)
        count = lags.shape[0]
        r = bk.asarray(np.arange(l, dtype=np.float64)[None], dtype=dtype, like=v)  # (1, l)
        m_parts.append((r @ seg.reshape(count, l, B * H)).reshape(count, B, H))
        width = 1 << (l - 1).bit_length()
        if width > l:
            seg = bk.concat([seg, bk.zeros((count, width - l, B, H), dtype, like=v)], axis=1)
        hi, lo = seg, bk.zeros(seg.shape, dtype, like=v)
        while hi.shape[1] > 1:
            hi, lo = _add_pair(hi[:, 0::2], lo[:, 0::2], hi[:, 1::2], lo[:, 1::2])
        s_parts.append(hi[:, 0])
        lo_parts.append(lo[:, 0])
    order = bk.asarray(order, like=v)

    def ordered(parts):
        return bk.take_rows(bk.concat(parts, axis=0), order)[None]  # (1, P - T, B, H)

    zero = bk.zeros((1, len(order), B, H), dtype, like=v)
    return (bk.concat([ordered(s_parts), ordered(m_parts)], axis=0),
            bk.concat([ordered(lo_parts), zero], axis=0))


def prefill_state(bk, dec: Decoder, u) -> DecodeState:
    """The state after the streams have consumed u (B, H, T) (from t = 0), in O(K) per channel.

    The history gets the last min(T, span) inputs; the run sums are the windows of the
    reversed history v[a] = u[T - 1 - a] (zero before t = 0).
    """
    B, H, T = u.shape
    span, R = dec.span, dec.span + 1
    m = min(T, span)
    recent = u[..., T - m:]                                         # (B, H, m)
    rows = bk.xp.moveaxis(recent, -1, 0)                            # (m, B, H)
    slots = bk.asarray((np.arange(T - m, T) % R).astype(np.int64), like=u)
    history = bk.zeros((R, B, H), bk.dtype_name(u), like=u)
    history = bk.set_slice(history, slots, rows)                    # (R, B, H)
    position = _position(bk, T, u)
    if dec.kernel is not None:
        return DecodeState(history, None, None, position)
    reversed_ = bk.pad_last(bk.flip_last(recent), 0, span - m)      # (B, H, span)
    v = bk.xp.moveaxis(reversed_, -1, 0)                            # (span, B, H): lag-major
    geometry = runs(dec.config, span)
    if dec.compensated:
        return DecodeState(history, *_window_sums_compensated(bk, v, geometry), position)
    return DecodeState(history, _window_sums_wide(bk, v, dec, geometry), None, position)


def prefill(bk, dec: Decoder, u, source=None):
    """(y (B, H, T), state): the prompt's outputs by the FFT layer and the state after it.

    u: (B, H, T) in the compute dtype.  source: what the layer runs from (the decoder's
    arrays by default, or a :class:`sgconv.Prepared` for length T).
    """
    y = _ops.layer(bk, dec.config, dec.arrays if source is None else source, u)
    return y, prefill_state(bk, dec, u)


# --- 6. One step -----------------------------------------------------------------------------

def step(bk, dec: Decoder, state: DecodeState, u_t):
    """(y_t (B, H), next state): the layer's output for the next input u_t (B, H).

    y_t equals column t of the layer applied to the whole sequence so far (t = the
    state's position).  u_t in the compute dtype.  Where arrays are mutable (NumPy,
    PyTorch, CuPy) the state's history, and on NumPy and PyTorch its float64 run sums,
    are updated in place: use the state returned, not the one passed.  Under JAX the
    state is a new pytree (donate it under ``jit``, or scan, to update it in place).

    Cost per token and channel: a gather of P + 1 history rows, O(P) updates and the
    contraction with alpha, beta (P, C, H): O(P C), P = O(d log K).
    """
    n = state.position
    R = dec.span + 1
    history = bk.set_slice(state.history, n % R, u_t)               # u[n] joins the history
    if dec.kernel is not None:
        # learnable decay: the exact dot product with the cached kernel, O(span) per token
        window = bk.take_rows(history, (n - dec.lags) % R)         # (span, B, H): u[n - a]
        z = bk.contract_rows(dec.kernel, bk.cast(window, dec.accumulate))   # (B, C, H)
        return _output(bk, dec, z, u_t), DecodeState(history, None, None, n + 1)
    else:
        # rows[q] = u[n - a_q], q = 0..P: the input entering run q and leaving run q - 1
        rows = bk.take_rows(history, (n - dec.lags) % R)           # (P + 1, B, H)
        T = dec.taps                                                # single taps: S_p = u
        z = bk.contract_rows(dec.tap_coef, bk.cast(rows[:T], dec.accumulate))  # (B, C, H)
        rows = rows[T:]                                             # (P - T + 1, B, H)
        if dec.compensated:
            # double words: every input is added exactly; l_p u is exact (l_p a power of 2)
            enter, leave = rows[:-1], rows[1:]
            (S, M), (S_lo, M_lo) = state.sums, state.sums_lo
            m_hi, m_lo = _add_pair(M, M_lo, S, S_lo)                # uses S before the step
            m_hi, m_lo = _add(m_hi, m_lo, -(dec.lengths * leave))
            s_hi, s_lo = _add(*_add(S, S_lo, enter), -leave)
            hi = bk.concat([s_hi[None], m_hi[None]], axis=0)        # (2, P - T, B, H)
            lo = bk.concat([s_lo[None], m_lo[None]], axis=0)
            sums, now = (hi, lo), hi + lo
        else:
            now = bk.update_runs(state.sums, rows, dec.lengths)    # (2, P - T, B, H)
            sums = (now, None)
        P2 = 2 * dec.coef.shape[1]
        z = z + bk.contract_rows(dec.coef.reshape((P2,) + tuple(dec.coef.shape[2:])),
                                 now.reshape((P2,) + tuple(now.shape[2:])))  # (B, C, H)
    return _output(bk, dec, z, u_t), DecodeState(history, *sums, n + 1)


def _output(bk, dec: Decoder, z, u_t):
    """z (B, C, H) (D u included) -> GELU -> mixing linear -> y_t (B, H), u_t's dtype."""
    config = dec.config
    z = bk.cast(z, bk.dtype_name(u_t))
    # The exact GELU from erf, not a backend's fused kernel: torch's F.gelu on these few
    # elements took 2-8 ms per call with 2 threads on a loaded 2-core machine (erf: 2 us).
    y = Backend.gelu(bk, z.reshape(u_t.shape[0], config.channels * config.d_model, 1))
    return bk.linear_channels(y, dec.arrays["out_weight"], dec.arrays["out_bias"])[..., 0]


# --- 7. Argument checks shared by the front ends ---------------------------------------------

def check_state(bk, config: SGConvConfig, dtype: str, state) -> None:
    """TypeError/ValueError unless ``state`` is a DecodeState of a layer with this
    configuration computing in ``dtype`` (checks shapes only: works on traced arrays)."""
    if not isinstance(state, DecodeState):
        raise TypeError(f"state must be a DecodeState (from prefill or decode_state), got "
                        f"{type(state).__name__}")
    if not bk.is_native(state.history):
        raise TypeError(f"this DecodeState holds arrays of another framework "
                        f"({type(state.history).__name__}) than the active backend {bk.name!r}")
    H, R = config.d_model, config.kernel_length + 1
    if state.history.ndim != 3 or (state.history.shape[0], state.history.shape[2]) != (R, H):
        raise ValueError(f"this DecodeState was made for another layer: its history has shape "
                         f"{tuple(state.history.shape)}, this layer's is (K + 1 = {R}, B, "
                         f"H = {H})")
    if (state.sums is None) != config.learnable_decay:
        raise ValueError("this DecodeState was made for another layer (run sums vs the "
                         "learnable decay's dot product)")
    if bk.dtype_name(state.history) != dtype:
        raise TypeError(f"this DecodeState holds {bk.dtype_name(state.history)} inputs but the "
                        f"layer computes in {dtype} here; continue with input of the dtype the "
                        f"state was started with")


def check_step_input(bk, config: SGConvConfig, state: DecodeState, u_t):
    """u_t as a native float array (B, H) matching the state's batch; returns it."""
    u_t = bk.asarray(u_t)
    check_float(bk, "u_t", u_t)
    H, B = config.d_model, state.batch
    if u_t.ndim != 2 or tuple(u_t.shape) != (B, H):
        raise ValueError(f"u_t must be one time step of shape (B={B}, H={H}) for this state, "
                         f"got shape {tuple(u_t.shape)}"
                         + ("; pass u[..., t] of a (B, H, L) input" if u_t.ndim == 3 else ""))
    return u_t
