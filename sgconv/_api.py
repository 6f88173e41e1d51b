"""The public operator on the active backend: kernel, convolution, layer, and the prepared
layer for inference, each checked (sgconv._checks) and run by the core (sgconv._ops)."""

from __future__ import annotations

from . import _checks, _ops
from ._ops import Prepared
from ._params import Params
from ._switch import backend as _backend

__all__ = ["kernel", "conv", "apply", "prepare", "Prepared", "validate_conv"]


def validate_conv(bk, u, k, D, bidirectional: bool):
    """Check conv's arguments: u (B, H, L), k (C', H, Lk) with 1 <= Lk <= L, D (C, H) or None.

    Returns them as native arrays on u's device (dtypes unchanged).
    """
    u = _checks.check_input(bk, u, None)
    k = bk.asarray(k, like=u)
    _checks.check_float(bk, "k", k)
    B, H, L = u.shape
    if k.ndim != 3 or k.shape[1] != H:
        raise ValueError(f"k must have shape (C', H={H}, Lk), got {tuple(k.shape)}")
    if not 1 <= k.shape[-1] <= L:
        raise ValueError(f"k has {k.shape[-1]} taps but u has length L={L}; expected 1 <= Lk <= L "
                         f"(cut the kernel to L: k[..., :L])")
    if bidirectional and k.shape[0] % 2:
        raise ValueError(f"bidirectional=True needs an even number of kernel rows (C causal + "
                         f"C anti-causal), got {k.shape[0]}")
    C = k.shape[0] // 2 if bidirectional else k.shape[0]
    if D is not None:
        D = bk.asarray(D, like=u)
        _checks.check_float(bk, "D", D)
        if tuple(D.shape) != (C, H):
            raise ValueError(f"D must have shape (C={C}, H={H}), got {tuple(D.shape)}")
    return u, k, D


def _check_params(params) -> None:
    if not isinstance(params, Params):
        raise TypeError(f"expected sgconv.Params (from sgconv.init, from_state_dict or load), "
                        f"got {type(params).__name__}")


def _arrays(bk, params: Params, dtype: str, like=None) -> dict:
    """The parameters as the backend's arrays in the compute dtype (ARRAY_NAMES)."""
    out = {}
    for name, value in params.arrays().items():
        if name == "kernels":
            out[name] = tuple(bk.asarray(w, dtype=dtype, like=like) for w in value)
        else:
            out[name] = None if value is None else bk.asarray(value, dtype=dtype, like=like)
    return out


def kernel(params: Params, length: int):
    """The SGConv kernel for sequences of ``length`` L: k = Cat(S)[..., :L] / Z, (C', H, L).

    Rows 0..C-1 are causal; in bidirectional mode rows C..2C-1 are the anti-causal half.
    Zero-padded when L exceeds the kernel length K.  Returned in the parameters' dtype
    (float32 for float16/bfloat16 parameters) on the active backend.
    """
    _check_params(params)
    length = _checks.check_length(length)
    bk = _backend()
    dtype = _ops.compute_dtype(bk.dtype_name(bk.asarray(params.D)))
    a = _arrays(bk, params, dtype)
    return _ops.kernel(bk, params.config, a["kernels"], a["multiplier"], a["kernel_norm"],
                       a["decay"], length=length)


def conv(u, k, D=None, *, bidirectional: bool = False, block_size: int | None = None):
    """SGConv's long convolution by FFT (linear, not circular), O(L log L):

        y[b,c,h,t] = sum_{s<=t} k[c,h,s] u[b,h,t-s]
                   (+ sum_{s=1..L-1-t} k[C+c,h,s-1] u[b,h,t+s] when bidirectional)
                   + D[c,h] u[b,h,t]

    u: (B, H, L); k: (C', H, Lk) with 1 <= Lk <= L (shorter kernels are zero-padded);
    D: (C, H) or None.  Returns (B, C, H, L) in u's dtype.  ``block_size``: None lets the
    planner choose overlap-add when the kernel is much shorter than L; 0 forces one FFT.
    """
    bk = _backend()
    bidirectional = _checks.check_bool("bidirectional", bidirectional)
    block_size = _checks.check_block_size(block_size)
    u, k, D = validate_conv(bk, u, k, D, bidirectional)
    dtype = bk.dtype_name(u)
    cdtype = _ops.compute_dtype(dtype)
    if D is not None:
        D = bk.cast(D, cdtype)
    y = _ops.conv(bk, bk.cast(u, cdtype), bk.cast(k, cdtype), D, bidirectional, block_size)
    return bk.cast(y, dtype)


def prepare(params: Params, length: int, *, dtype: str | None = None,
            block_size: int | None = None) -> Prepared:
    """The layer with its kernel's spectrum computed once, for sequences of ``length``.

    :func:`apply` builds the kernel and its FFT on every call (what training needs: the
    sub-kernels change every step).  For inference with fixed parameters,
    ``fast = prepare(params, L)`` does that work once and ``apply(fast, u)`` only transforms
    u: the same numbers in less time.  dtype: the compute precision (default: the
    parameters'; float32 for half precision); block_size: fixed here with the FFT plan.
    Returns a :class:`Prepared` on the active backend.
    """
    _check_params(params)
    length = _checks.check_length(length)
    block_size = _checks.check_block_size(block_size)
    bk = _backend()
    cdtype = _ops.compute_dtype(dtype if dtype is not None else
                                bk.dtype_name(bk.asarray(params.D)))
    if cdtype not in _checks.FLOAT_DTYPES:
        raise TypeError(f"dtype must be one of {', '.join(_checks.FLOAT_DTYPES)}, got {dtype!r}")
    return _ops.prepare(bk, params.config, _arrays(bk, params, cdtype), length, block_size)


def check_prepared(bk, prepared: Prepared, u, transposed: bool, block_size) -> None:
    """A Prepared layer only runs at its length and precision, with its own FFT plan."""
    if not bk.is_native(prepared.spectrum):
        raise TypeError(f"this Prepared layer holds arrays of another framework "
                        f"({type(prepared.spectrum).__name__}) than the active backend "
                        f"{bk.name!r}; call prepare(params, length) with {bk.name!r} active")
    if block_size is not None:
        raise ValueError("block_size is fixed when the spectrum is prepared: pass it to "
                         "prepare(params, length, block_size=...)")
    L = u.shape[-1] if transposed else u.shape[-2]
    if L != prepared.length:
        raise ValueError(f"this Prepared layer was made for sequences of length "
                         f"{prepared.length}, got u of length {L}; call "
                         f"prepare(params, {L}) for that length")
    got = _ops.compute_dtype(bk.dtype_name(u))
    want = bk.dtype_name(prepared.out_weight)
    if got != want:
        raise TypeError(f"this Prepared layer computes in {want}, but u ({bk.dtype_name(u)}) "
                        f"computes in {got}; pass {want} input, or prepare with "
                        f"dtype='{got}'")


def apply(params: Params | Prepared, u, *, transposed: bool = True, dropout: float = 0.0,
          rng=None, block_size: int | None = None, channel_chunk: int | None = None,
          return_kernel: bool = False):
    """The SGConv layer: u -> conv -> (B, C*H, L) -> GELU -> dropout -> Linear(C*H -> H).

    u: (B, H, L), or (B, L, H) with ``transposed=False``.  Returns the same layout and
    dtype as u.  The parameters are cast to u's dtype for the computation; float16 and
    bfloat16 inputs are computed in float32 and the result cast back.  ``dropout``: the
    rate (0 = evaluation); ``rng`` seeds it (None, an int seed, or the backend's
    generator / key).  ``channel_chunk``: convolve that many of the H channels at a time
    (None: chosen from :func:`sgconv.get_memory_budget`; the result is the same).
    ``return_kernel=True`` also returns the kernel (C', H, L).  params may be a
    :class:`Prepared` from :func:`prepare` (then block_size must be None).
    """
    prepared = isinstance(params, Prepared)
    if not prepared:
        _check_params(params)
    transposed = _checks.check_bool("transposed", transposed)
    rate = _checks.check_rate(dropout)
    block_size = _checks.check_block_size(block_size)
    channel_chunk = _checks.check_channel_chunk(channel_chunk)
    bk = _backend()
    u = _checks.check_input(bk, u, params.config.d_model, transposed)
    if prepared:
        check_prepared(bk, params, u, transposed, block_size)
        if return_kernel:
            raise ValueError("return_kernel needs the parameters, not a Prepared layer")
    dtype = bk.dtype_name(u)
    cdtype = _ops.compute_dtype(dtype)
    x = bk.cast(u if transposed else u.swapaxes(-1, -2), cdtype)  # (B, H, L)
    source = params if prepared else _arrays(bk, params, cdtype, like=x)
    y = _ops.layer(bk, params.config, source, x, dropout=rate, rng=rng, block_size=block_size,
                   channel_chunk=channel_chunk)                     # (B, H, L)
    y = bk.cast(y, dtype)
    if not transposed:
        y = y.swapaxes(-1, -2)
    if return_kernel:
        k = _ops.kernel(bk, params.config, source["kernels"], source["multiplier"],
                        source["kernel_norm"], source["decay"], length=x.shape[-1])
        return y, k
    return y
