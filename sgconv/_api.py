"""The public operator: kernel, convolution and layer on the active backend, with checks."""

from __future__ import annotations

import numbers

from . import _ops
from ._params import Params
from ._switch import backend as _backend

__all__ = ["kernel", "conv", "apply", "validate_input", "validate_conv"]

_FLOATS = ("float16", "bfloat16", "float32", "float64")


def _check_float(name: str, dtype: str) -> None:
    if dtype not in _FLOATS:
        kind = "complex" if dtype.startswith("complex") else dtype
        raise TypeError(f"{name} must be a real floating array (float16, bfloat16, float32 or "
                        f"float64), got dtype {kind}; convert it first, e.g. u.astype('float32')")


def _check_length(length) -> int:
    if isinstance(length, bool) or not isinstance(length, numbers.Integral):
        raise TypeError(f"length must be an int >= 1, got {length!r}")
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    return int(length)


def validate_input(bk, u, d_model: int | None, transposed: bool = True):
    """u as a native float array of shape (B, H, L) (or (B, L, H) when not transposed)."""
    u = bk.asarray(u)
    _check_float("u", bk.dtype_name(u))
    layout = "(B, H, L)" if transposed else "(B, L, H)"
    if u.ndim != 3:
        raise ValueError(f"u must have 3 dimensions {layout}, got shape {tuple(u.shape)}; "
                         f"add a batch axis with u[None] for a single sequence")
    H_axis, L_axis = (1, 2) if transposed else (2, 1)
    if d_model is not None and u.shape[H_axis] != d_model:
        raise ValueError(f"u has H={u.shape[H_axis]} channels on axis {H_axis} of {layout} "
                         f"(shape {tuple(u.shape)}) but the parameters have d_model={d_model}"
                         + ("" if transposed else "; for (B, H, L) input pass transposed=True"))
    if u.shape[L_axis] == 0:
        raise ValueError(f"u has length L=0 (shape {tuple(u.shape)}); expected L >= 1")
    if u.shape[0] == 0:
        raise ValueError(f"u has batch size B=0 (shape {tuple(u.shape)}); expected B >= 1")
    return u


def validate_conv(bk, u, k, D, bidirectional: bool):
    """Check conv's arguments: u (B, H, L), k (C', H, Lk) with 1 <= Lk <= L, D (C, H) or None.

    Returns them as native arrays on u's device (dtypes unchanged).
    """
    u = validate_input(bk, u, None)
    k = bk.asarray(k, like=u)
    _check_float("k", bk.dtype_name(k))
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
        _check_float("D", bk.dtype_name(D))
        if tuple(D.shape) != (C, H):
            raise ValueError(f"D must have shape (C={C}, H={H}), got {tuple(D.shape)}")
    return u, k, D


def _check_params(params) -> None:
    if not isinstance(params, Params):
        raise TypeError(f"expected sgconv.Params (from sgconv.init, from_state_dict or load), "
                        f"got {type(params).__name__}")


def _arrays(bk, params: Params, dtype: str, like=None) -> dict:
    """The parameters as the backend's arrays in the compute dtype."""
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
    length = _check_length(length)
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
    u, k, D = validate_conv(bk, u, k, D, bidirectional)
    dtype = bk.dtype_name(u)
    cdtype = _ops.compute_dtype(dtype)
    if D is not None:
        D = bk.cast(D, cdtype)
    y = _ops.conv(bk, bk.cast(u, cdtype), bk.cast(k, cdtype), D, bidirectional, block_size)
    return bk.cast(y, dtype)


def apply(params: Params, u, *, transposed: bool = True, dropout: float = 0.0, rng=None,
          block_size: int | None = None, return_kernel: bool = False):
    """The SGConv layer: u -> conv -> (B, C*H, L) -> GELU -> dropout -> Linear(C*H -> H).

    u: (B, H, L), or (B, L, H) with ``transposed=False``.  Returns the same layout and
    dtype as u.  The parameters are cast to u's dtype for the computation; float16 and
    bfloat16 inputs are computed in float32 and the result cast back.  ``dropout``: the
    rate (0 = evaluation); ``rng`` seeds it (a backend-specific key or seed).
    ``return_kernel=True`` also returns the kernel (C', H, L).
    """
    _check_params(params)
    if not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a rate in [0, 1), got {dropout!r}")
    bk = _backend()
    u = validate_input(bk, u, params.config.d_model, transposed)
    dtype = bk.dtype_name(u)
    cdtype = _ops.compute_dtype(dtype)
    if not transposed:
        u = u.swapaxes(-1, -2)                                     # (B, L, H) -> (B, H, L)
    a = _arrays(bk, params, cdtype, like=u)
    out = _ops.layer(bk, params.config, a, bk.cast(u, cdtype), dropout=float(dropout), rng=rng,
                     block_size=block_size, return_kernel=return_kernel)
    y, k = out if return_kernel else (out, None)
    y = bk.cast(y, dtype)
    if not transposed:
        y = y.swapaxes(-1, -2)
    return (y, k) if return_kernel else y
