"""The SGConv math, written once for every backend.

Every function takes a :class:`~sgconv.backends.Backend` ``bk`` first and arrays of that
backend.  Only operations spelled identically in NumPy, CuPy, PyTorch and JAX are used
directly (slicing, ``*``, ``+``, ``@``, ``.reshape``, ``.swapaxes``); the rest goes through
``bk``.  Shapes follow shared/SPEC.md: u (B, H, L), kernel rows C' (C, or 2C when
bidirectional), output of the convolution (B, C, H, L).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from typing import Any, NamedTuple

import numpy as np

from ._config import SGConvConfig
from .backends._base import register_structure

__all__ = ["compute_dtype", "upsample_index", "raw_kernel", "normaliser", "kernel", "FFTPlan",
           "plan_fft", "kernel_spectrum", "conv_with_spectrum", "conv", "Prepared", "prepare",
           "spectrum", "layer_plan", "choose_channel_chunk", "layer", "mix", "get_memory_budget",
           "set_memory_budget", "memory_budget", "kernel_layout", "mix_chunks"]

_HALF = ("float16", "bfloat16")


def compute_dtype(dtype: str) -> str:
    """The dtype the FFTs run in: float16/bfloat16 are computed in float32.

    (No CPU FFT exists for half precision, and cuFFT's handles powers of two only.)
    """
    return "float32" if dtype in _HALF else dtype


# --- 1. Upsampling a sub-kernel ------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def upsample_index(kernel_dim: int, factor: int, interpolation: str):
    """Gather indices and blend weights that stretch a length-d sub-kernel by ``factor``.

    Linear, half-pixel centres (PyTorch ``align_corners=False``): output j reads the input at
    x_j = max((j + 0.5)/s - 0.5, 0) and blends w[floor x_j] and w[min(floor x_j + 1, d-1)]
    with weight x_j - floor x_j on the second.  Nearest: w[floor(j / s)].

    Returns (lo, hi, frac) as NumPy arrays of length d*s (hi and frac are None for nearest),
    computed in float64 once per (d, s) and cast by the caller.
    """
    j = np.arange(kernel_dim * factor)
    if interpolation == "nearest":
        return j // factor, None, None
    x = np.maximum((j + 0.5) / factor - 0.5, 0.0)                  # (d*s,)
    lo = np.floor(x).astype(np.int64)
    hi = np.minimum(lo + 1, kernel_dim - 1)
    return lo, hi, x - lo


def _upsample(bk, w, factor: int, interpolation: str):
    """(C', H, d) -> (C', H, d*factor)."""
    if factor == 1:
        return w                                                   # scales 0 and 1 keep length d
    fused = bk.upsample(w, factor, interpolation)
    if fused is not None:
        return fused                                               # the backend's one-pass kernel
    lo, hi, frac = upsample_index(w.shape[-1], factor, interpolation)
    if hi is None:
        return bk.take(w, lo)
    frac = bk.asarray(frac, dtype=bk.dtype_name(w), like=w)
    w_lo = bk.take(w, lo)                                          # (C', H, d*s)
    return w_lo + (bk.take(w, hi) - w_lo) * frac


# --- 2-3. Cat(S) with the decay ------------------------------------------------------------

def raw_kernel(bk, config: SGConvConfig, kernels, multiplier, decay=None, length=None):
    """k_raw = Cat(m^(N-1) Up_0(w_0), ..., m^0 Up_{N-1}(w_{N-1})), cut to ``length``.

    kernels: N arrays (C', H, d); multiplier m: (H,); decay: (H,) in learnable mode, else None.
    Only the scales that start before ``length`` are built.  Returns (C', H, min(length, K)).
    """
    N, K = config.num_scales, config.kernel_length
    length = K if length is None else min(length, K)
    pieces, start = [], 0
    for i, (w, s) in enumerate(zip(kernels, config.scale_factors)):
        if start >= length:
            break                                                  # scales past L never matter
        piece = _upsample(bk, w, s, config.interpolation)          # (C', H, d*s_i)
        if not config.learnable_decay:
            piece = piece * (multiplier ** (N - 1 - i))[:, None]   # nearest scale weighs most
        pieces.append(piece)
        start += config.kernel_dim * s
    k = pieces[0] if len(pieces) == 1 else bk.concat(pieces, axis=-1)
    k = k[..., :length]                                            # (C', H, min(L, K))
    if config.learnable_decay:
        # k_raw[..., t] *= (t + 1)^(-decay[h])
        log_t = bk.asarray(np.log(np.arange(1, length + 1, dtype=np.float64)),
                           dtype=bk.dtype_name(k), like=k)         # (L,)
        k = k * bk.exp(-decay[:, None] * log_t)
    return k


@functools.lru_cache(maxsize=256)
def upsample_gram(kernel_dim: int, factor: int, interpolation: str) -> np.ndarray:
    """G (d, d) with ||Up_s(w)||^2 = w G w^T: the Gram matrix of the upsampling map.

    Up_s(w)[j] = (1 - f_j) w[lo_j] + f_j w[hi_j], so each output j adds the outer product of
    its two blend weights to G.  Built in O(d*s) once per (d, s), in float64.
    """
    lo, hi, frac = upsample_index(kernel_dim, factor, interpolation)
    G = np.zeros((kernel_dim, kernel_dim))
    if hi is None:
        np.add.at(G, (lo, lo), 1.0)
        return G
    a, b = 1.0 - frac, frac
    np.add.at(G, (lo, lo), a * a)
    np.add.at(G, (hi, hi), b * b)
    np.add.at(G, (lo, hi), a * b)
    np.add.at(G, (hi, lo), a * b)
    return G


def normaliser(bk, config: SGConvConfig, kernels, multiplier, decay=None):
    """Z[c, h] = ||k_raw[c, h, :]||_2 over the full length K: (C', H).  Computed once, at init.

    The scales of Cat(S) do not overlap, so Z^2 = sum_i m^(2(N-1-i)) ||Up_i(w_i)||^2, and
    each ||Up_i(w_i)||^2 = w_i G_i w_i^T with the (d, d) Gram matrix of the upsampling:
    O(N d^2) per row instead of building the length-K kernel (K = 2^20 would take
    gigabytes).  The learnable decay depends on the absolute lag, so that mode builds k_raw.
    """
    if config.learnable_decay:
        k = raw_kernel(bk, config, kernels, multiplier, decay)    # (C', H, K)
        return bk.sqrt((k * k).sum(-1))
    N = config.num_scales
    energy = 0.0
    for i, (w, s) in enumerate(zip(kernels, config.scale_factors)):
        G = bk.asarray(upsample_gram(config.kernel_dim, s, config.interpolation),
                       dtype=bk.dtype_name(w), like=w)            # (d, d)
        scale_energy = ((w @ G) * w).sum(-1)                       # (C', H) = ||Up_i(w_i)||^2
        energy = energy + scale_energy * multiplier ** (2 * (N - 1 - i))
    return bk.sqrt(energy)                                         # (C', H)


def kernel(bk, config: SGConvConfig, kernels, multiplier, kernel_norm, decay=None,
           length=None, pad=True):
    """k = k_raw[..., :L] / Z, zero-padded to L when L > K (``pad=False`` skips the padding).

    Returns (C', H, L), or (C', H, min(L, K)) with pad=False.
    """
    length = config.kernel_length if length is None else length
    k = raw_kernel(bk, config, kernels, multiplier, decay, length)
    k = k / bk.stop_gradient(kernel_norm)[..., None]               # Z is state, not trained
    if pad and k.shape[-1] < length:
        k = bk.pad_last(k, 0, length - k.shape[-1])
    return k


# --- 4. The convolution, by FFT -------------------------------------------------------------

class FFTPlan(NamedTuple):
    """How to compute a linear convolution of a length-L signal with a kernel of Lk taps.

    length: L.  n: the FFT length.  block: None for one FFT over the whole signal, else the
    block size P of an overlap-add (each block of P samples convolved with FFTs of length
    n).  anti_taps: a, the anti-causal taps that can reach an output (0 when causal, at
    most L-1).
    """

    length: int
    n: int
    block: int | None
    anti_taps: int

    @property
    def blocks(self) -> int:
        """How many FFTs of length n one sequence takes (1 without overlap-add)."""
        return 1 if self.block is None else -(-self.length // self.block)


def _fft_cost(n: int) -> float:
    return n * math.log2(max(n, 2))


def plan_fft(bk, length: int, taps: int, bidirectional: bool, block_size: int | None = None):
    """Choose the FFT length (and maybe blocks) for a linear convolution.

    One FFT needs n >= L + max(Lk - 1, a): anything shorter wraps the tail of the causal
    result, or the anti-causal lags, onto outputs we keep.  When the kernel is much
    shorter than the signal, overlap-add with blocks of P costs about (L/P) n log n with
    n ~ P + Lk + a instead of 2L log 2L, i.e. grows as L log K.  ``block_size``: None
    picks the cheaper by that estimate; 0 forces one FFT; P > 0 forces blocks of P.
    """
    anti = min(taps, length - 1) if bidirectional else 0
    span = max(taps - 1, 0) + anti                                 # samples a block spills over
    smallest = max(taps - 1, anti, 1)                              # a block must hold the spill
    full = FFTPlan(length, bk.next_fast_len(length + max(taps - 1, anti)), None, anti)
    if block_size == 0:
        return full
    if block_size is not None:
        if block_size < smallest:
            raise ValueError(f"block_size={block_size} is too small for this kernel: overlap-add "
                             f"blocks must hold at least max(kernel taps - 1, anti-causal taps) = "
                             f"{smallest} samples; pass block_size >= {smallest}, 0 (one FFT) "
                             f"or None (the planner chooses)")
        return FFTPlan(length, bk.next_fast_len(block_size + span), block_size, anti)
    best, best_cost = full, _fft_cost(full.n)
    for mult in (4, 8, 16, 32):
        n = bk.next_fast_len(mult * max(span, 1))
        block = n - span
        if block >= length or block < smallest:
            continue
        cost = -(-length // block) * _fft_cost(n)
        if cost < 0.75 * best_cost:                                # blocks only for a clear win
            best, best_cost = FFTPlan(length, n, block, anti), cost
    return best


def kernel_spectrum(bk, k, D, plan: FFTPlan, bidirectional: bool):
    """The kernel's spectrum, with D folded into the lag-0 tap: (C, H, n//2 + 1).

    k: (C', H, Lk); D: (C, H) or None.  The real buffer is :func:`kernel_layout`'s.
    """
    return bk.rfft(kernel_layout(bk, k, D, plan, bidirectional), plan.n)  # (C, H, n//2+1)


def kernel_layout(bk, k, D, plan: FFTPlan, bidirectional: bool):
    """The kernel as the real buffer an FFT of length n reads: (C, H, m) with m <= n
    (the FFT zero-pads it to n).

    k: (C', H, Lk); D: (C, H) or None, added to the lag-0 tap.  In bidirectional mode rows
    C..2C-1 (k1) are placed reversed at the end of the length-n buffer, so k1[s-1] sits at
    lag -s (circularly n-s).
    """
    C = k.shape[0] // 2 if bidirectional else k.shape[0]
    k0 = k[:C]                                                     # (C, H, Lk) causal half
    if D is not None:
        # y += D u is the lag-0 tap: add it to the kernel, not as a pass over the output.
        k0 = bk.concat([k0[..., :1] + D[..., None], k0[..., 1:]], axis=-1)
    if bidirectional and plan.anti_taps > 0:
        k1 = bk.flip_last(k[C:, :, :plan.anti_taps])               # (C, H, a), lag -a .. -1
        k0 = bk.concat([bk.pad_last(k0, 0, plan.n - k0.shape[-1] - plan.anti_taps), k1], axis=-1)
    return k0                                                      # (C, H, <= n)


def conv_with_spectrum(bk, u, k_f, plan: FFTPlan):
    """y = irfft(rfft(u) * k_f)[..., :L], linear: (B, H, L) -> (B, C, H, L).

    k_f: (C, H, n//2+1) from :func:`kernel_spectrum` with the same plan.
    """
    B, H, L = u.shape
    n = plan.n
    if plan.block is None:
        return bk.fft_conv(u, k_f, n, L)                           # (B, C, H, L)
    # Overlap-add: split u into blocks of P, convolve each, add the spill into neighbours.
    P, a, nb = plan.block, plan.anti_taps, plan.blocks
    u = bk.pad_last(u, 0, nb * P - L).reshape(B, H, nb, P)         # (B, H, nb, P)
    out = bk.fft_conv(u, k_f, n, n)                                # (B, C, H, nb, n)
    y = out[..., :P]                                               # each block's own span
    spill = out[..., P:min(n - a, 2 * P)]                          # reaches into block j+1
    if spill.shape[-1] > 0 and nb > 1:
        spill = bk.pad_last(spill[..., :-1, :], 0, P - spill.shape[-1])
        first = bk.zeros(spill[..., :1, :].shape, bk.dtype_name(spill), like=spill)
        y = y + bk.concat([first, spill], axis=-2)
    if a > 0 and nb > 1:
        back = bk.pad_last(out[..., 1:, n - a:], P - a, 0)         # anti-causal lags into j-1
        last = bk.zeros(back[..., :1, :].shape, bk.dtype_name(back), like=back)
        y = y + bk.concat([back, last], axis=-2)
    return y.reshape(B, k_f.shape[0], H, nb * P)[..., :L]          # (B, C, H, L)


def conv(bk, u, k, D=None, bidirectional=False, block_size=None):
    """The SGConv convolution (SPEC), computed by FFT in O(L log L):

        y[b,c,h,t] = sum_{s=0..t} k0[c,h,s] u[b,h,t-s]
                   (+ sum_{s=1..L-1-t} k1[c,h,s-1] u[b,h,t+s] when bidirectional)
                   + D[c,h] u[b,h,t]

    u: (B, H, L); k: (C', H, Lk) with Lk <= L; D: (C, H) or None.  Returns (B, C, H, L).
    """
    plan = plan_fft(bk, u.shape[-1], k.shape[-1], bidirectional, block_size)
    return conv_with_spectrum(bk, u, kernel_spectrum(bk, k, D, plan, bidirectional), plan)


# --- 5. The layer, in two halves -------------------------------------------------------------
#
# Every front end (sgconv.apply, the torch module and functions, sgconv.jax) runs the layer
# through these: the kernel's spectrum for a length (per channel slice, cacheable), then the
# layer from that spectrum, optionally a few channels at a time.

ARRAY_NAMES = ("kernels", "multiplier", "decay", "kernel_norm", "D", "out_weight", "out_bias")
"""The keys of the ``arrays`` mapping the layer functions take (Params.arrays() gives it):
kernels N x (C', H, d), multiplier (H,), decay (H,) or None, kernel_norm Z (C', H), D (C, H),
out_weight (H, C*H), out_bias (H,), all in the compute dtype on the input's device."""


def spectrum(bk, config: SGConvConfig, arrays, plan: FFTPlan, channels: slice = slice(None)):
    """The first half: the kernel's spectrum for the plan's length, D folded into lag 0.

    Only the H channels in ``channels`` are built (kernels are per channel).
    Returns (C, h, n//2+1), complex.
    """
    whole = channels == slice(None)
    pick = (lambda x: x) if whole else (lambda x: x[channels])
    kernels = arrays["kernels"] if whole else tuple(w[:, channels] for w in arrays["kernels"])
    decay = None if arrays["decay"] is None else pick(arrays["decay"])
    k = kernel(bk, config, kernels, pick(arrays["multiplier"]),
               arrays["kernel_norm"] if whole else arrays["kernel_norm"][:, channels], decay,
               length=plan.length, pad=False)                      # (C', h, min(L, K))
    D = arrays["D"] if whole else arrays["D"][:, channels]
    return kernel_spectrum(bk, k, D, plan, config.bidirectional)   # (C, h, F)


def layer_plan(bk, config: SGConvConfig, length: int, block_size=None) -> FFTPlan:
    """The FFT plan of the layer's convolution for sequences of ``length``."""
    return plan_fft(bk, length, min(length, config.kernel_length), config.bidirectional,
                    block_size)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The layer with its kernel already in the frequency domain, for one sequence length.

    ``spectrum`` (C, H, n//2+1) complex (the kernel's FFT with D folded into lag 0),
    ``out_weight`` (H, C*H) and ``out_bias`` (H,) are arrays of one backend; ``config`` and
    the FFT ``plan`` (length L, FFT length n, overlap-add block) are static.  Made by
    :func:`prepare`; the layer functions take it in place of the parameters.  (The torch
    module keeps one as its evaluation cache; under JAX it is a pytree.)
    """

    config: SGConvConfig
    plan: FFTPlan
    spectrum: Any
    out_weight: Any
    out_bias: Any

    @property
    def length(self) -> int:
        """The sequence length L the spectrum was prepared for."""
        return self.plan.length

    @property
    def dtype(self):
        """The real dtype the layer computes in (float32 or float64)."""
        return self.out_weight.dtype


register_structure(Prepared, data=("spectrum", "out_weight", "out_bias"),
                   static=("config", "plan"))


def prepare(bk, config: SGConvConfig, arrays, length: int, block_size=None) -> Prepared:
    """The first half, done once: the spectrum of every channel for sequences of ``length``.

    Built a chunk of channels at a time into one (C, H, F) buffer when the kernel's FFT
    buffers would not fit the memory budget, so that making it takes little more memory
    than it holds (C * H * (n//2+1) complex numbers: about twice a length-L batch of one).
    """
    plan = layer_plan(bk, config, length, block_size)
    itemsize = 8 if bk.dtype_name(arrays["out_weight"]) == "float64" else 4
    h = choose_channel_chunk(config, 1, plan, itemsize)
    if h is None:
        k_f = spectrum(bk, config, arrays, plan)                   # (C, H, F)
    else:
        H = config.d_model
        k_f = bk.empty((config.channels, H, plan.n // 2 + 1),
                       "complex128" if itemsize == 8 else "complex64", like=arrays["D"])
        for h0 in range(0, H, h):
            sl = slice(h0, min(h0 + h, H))
            k_f = bk.set_slice(k_f, (slice(None), sl), spectrum(bk, config, arrays, plan, sl))
    return Prepared(config, plan, k_f, arrays["out_weight"], arrays["out_bias"])


# The memory budget of one channel chunk (bytes): see choose_channel_chunk.
_MEMORY_BUDGET = [64 << 20]


def get_memory_budget() -> int:
    """The bytes one chunk of channels may take for its FFT convolution (default 64 MiB)."""
    return _MEMORY_BUDGET[0]


def set_memory_budget(nbytes: int) -> int:
    """Set the per-chunk memory budget used when ``channel_chunk`` is not given; returns the
    previous value.  Process-wide (it is read when a layer call is traced or run)."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 1:
        raise TypeError(f"the memory budget must be a positive int of bytes, got {nbytes!r}")
    previous, _MEMORY_BUDGET[0] = _MEMORY_BUDGET[0], int(nbytes)
    return previous


@contextlib.contextmanager
def memory_budget(nbytes: int):
    """``with sgconv.memory_budget(1 << 20): ...``: a per-chunk budget for the block only."""
    previous = set_memory_budget(nbytes)
    try:
        yield
    finally:
        set_memory_budget(previous)


def choose_channel_chunk(config: SGConvConfig, batch: int, plan: FFTPlan, itemsize: int,
                         requested: int | None = None) -> int | None:
    """How many of the H channels to convolve at a time; None for all at once.

    ``requested`` (the user's ``channel_chunk``) wins.  Otherwise the chunk is the largest
    h whose inverse FFT output, B * C * h * (blocks * n) reals (the largest buffer of the
    convolution; the input's spectrum and the product are of the same order), fits the
    memory budget.  The H channels are independent until the mixing, so any h gives the
    same numbers; a small h keeps the working set in cache and the peak memory near that
    of the input and output alone (measured in asv_benchmarks/compare_torch.py --long).
    """
    H = config.d_model
    if requested is not None:
        return None if requested >= H else requested
    per_channel = max(batch, 1) * config.channels * plan.blocks * plan.n * itemsize
    h = max(1, get_memory_budget() // per_channel)
    return None if h >= H else int(h)


def layer(bk, config: SGConvConfig, source, u, *, dropout: float = 0.0, rng=None,
          block_size=None, channel_chunk=None):
    """The second half: the layer on u (B, H, L), already in the compute dtype, -> (B, H, L).

        y = conv(u, k) + D u  (B, C, H, L) -> (B, C*H, L) -> GELU -> dropout -> W y + b

    source: the ``arrays`` mapping (ARRAY_NAMES; the spectrum is built here, per chunk) or
    a :class:`Prepared` for this length (block_size must then be None).  channel_chunk:
    None chooses it from the memory budget (:func:`choose_channel_chunk`).  With chunks of h
    channels, out = b + sum_chunks W[:, chunk] @ dropout(GELU(conv(u[:, chunk]))): the
    mixing splits by columns, and each chunk's output is added into one (B, H, L) buffer.
    The mixing weight may have any number of rows H_out (2H when a GLU follows it, as in
    ``sgconv.torch.SGConv(postact='glu')``): the output is then (B, H_out, L).
    """
    B, H, L = u.shape
    if isinstance(source, Prepared):
        plan, full = source.plan, source.spectrum
        out_weight, out_bias = source.out_weight, source.out_bias
        spectrum_of = lambda sl: full if sl == slice(None) else full[:, sl]  # noqa: E731
    else:
        plan = layer_plan(bk, config, L, block_size)
        out_weight, out_bias = source["out_weight"], source["out_bias"]
        spectrum_of = lambda sl: spectrum(bk, config, source, plan, sl)  # noqa: E731
    h = choose_channel_chunk(config, B, plan, _itemsize(bk, u), channel_chunk)

    def convolve(sl):                                              # (B, C, h, L)
        return conv_with_spectrum(bk, u if sl == slice(None) else u[:, sl], spectrum_of(sl), plan)

    return mix_chunks(bk, convolve, H, h, out_weight, out_bias, dropout, rng,
                      like=u)


def mix_chunks(bk, convolve, H: int, chunk, out_weight, out_bias, dropout: float = 0.0,
               rng=None, *, like=None):
    """The layer after the convolution, all channels at once or ``chunk`` at a time.

    convolve(sl) -> (B, C, h, P...): the convolution of the H channels in slice sl over its
    positions (L; the 2D layer's (X, Y)), flattened to P after the GELU.  chunk None:
    :func:`mix` of convolve(all).  Else the mixing splits by columns, out = b + sum_chunks W[:, chunk] @ dropout(GELU(conv(chunk))),
    each chunk's output added into one (B, H_out, P) buffer (H_out = out_weight's rows,
    H).  ``like``: the input, for the device of dropout's generator (one stream for all
    chunks).
    """
    if dropout > 0.0:
        rng = bk.dropout_rng(rng, like=like)                       # one stream for all chunks
    if chunk is None:
        return mix(bk, convolve(slice(None)), out_weight, out_bias, dropout, rng)  # (B, H, P)
    out = None
    for i, h0 in enumerate(range(0, H, chunk)):
        sl = slice(h0, min(h0 + chunk, H))
        out = _mix_part(bk, convolve(sl), out_weight, out_bias, sl, dropout, rng, i, out)
    return out


def _mix_part(bk, y, out_weight, out_bias, sl: slice, dropout: float, rng, i: int, out):
    """out += W[:, (c, sl)] @ dropout(GELU(y)) for channel chunk ``sl`` (the i-th), y (B, C, h,
    P...) flattened to P after the GELU; out None starts the (B, H_out, P) buffer with the
    bias.  Dropout draws chunk i's stream."""
    B, C, h = y.shape[:3]
    H_out = out_weight.shape[0]                                    # the mixing's output rows
    H = out_weight.shape[1] // C
    z = bk.gelu(y).reshape(B, C * h, math.prod(y.shape[3:]))       # (B, C*h, P)
    if dropout > 0.0:
        z = bk.dropout(z, dropout, bk.fold_rng(rng, i))
    W_part = out_weight.reshape(H_out, C, H)[:, :, sl].reshape(H_out, C * h)  # (H_out, C*h)
    return bk.linear_channels(z, W_part, out_bias, out=out)       # (B, H_out, P), accumulated


def _itemsize(bk, x) -> int:
    return 8 if bk.dtype_name(x) == "float64" else 4


def mix(bk, y, out_weight, out_bias, dropout: float = 0.0, rng=None, channel_chunk=None):
    """(B, C, H, P...) -> GELU -> reshape (B, C*H, P) -> dropout -> W @ . + b -> (B, H_out, P).

    y may have several position axes, (B, C, H, X, Y): they are flattened to P = X*Y after
    the GELU (on a cropped view of an FFT buffer, the GELU's output is contiguous, so the
    flattening is a view rather than a copy).  channel_chunk: GELU and mix that many of the
    H channels at a time, accumulating into one output (the GELU buffer is then a chunk's,
    not the whole (B, C*H, P)); the numbers are the same, dropout masks aside (each chunk
    draws from its own stream).
    """
    B, C, H = y.shape[:3]
    if channel_chunk is None or channel_chunk >= H:
        z = bk.gelu(y).reshape(B, C * H, math.prod(y.shape[3:]))   # (B, C*H, P)
        if dropout > 0.0:
            z = bk.dropout(z, dropout, rng)
        return bk.linear_channels(z, out_weight, out_bias)         # (B, H_out, P)
    return mix_chunks(bk, lambda sl: y[:, :, sl], H, channel_chunk, out_weight, out_bias,
                      dropout, rng, like=y)
