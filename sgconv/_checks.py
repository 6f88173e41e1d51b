"""Argument checks, in one place: every front end (``sgconv.apply``, ``sgconv.torch``,
``sgconv.jax``) calls these, so the same bad value raises the same error type and message
whichever framework it was given to.

The rule: a value of the wrong *type* raises TypeError, a value of the right type outside
its range raises ValueError; both say what was expected, what arrived, and how to fix it.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["FLOAT_DTYPES", "check_bool", "check_rate", "check_block_size", "check_channel_chunk",
           "check_length", "check_float", "check_input", "check_int"]

#: The real floating dtypes sgconv computes with (half precision is computed in float32).
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _got(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_bool(name: str, value) -> bool:
    """A Python (or NumPy) bool; options like ``transposed`` select code paths, so they
    cannot be arrays or traced values."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool (True or False), got {_got(value)}")
    return bool(value)


def check_rate(dropout) -> float:
    """The dropout rate: a real number in [0, 1)."""
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
        raise TypeError(f"dropout must be a rate in [0, 1) (a Python float), got {_got(dropout)}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be a rate in [0, 1), got {dropout!r}")
    return float(dropout)


_BLOCK_EXPECTED = ("block_size must be None (the planner chooses), 0 (one FFT over the whole "
                   "sequence) or an int P >= 1 (overlap-add blocks of P samples)")


def check_block_size(block_size) -> int | None:
    """None, 0 or a positive int (whether P is large enough for the kernel is the FFT
    planner's check, which knows the kernel's length)."""
    if block_size is None:
        return None
    if not _is_int(block_size):
        raise TypeError(f"{_BLOCK_EXPECTED}, got {_got(block_size)}")
    if block_size < 0:
        raise ValueError(f"{_BLOCK_EXPECTED}, got {block_size}")
    return int(block_size)


_CHUNK_EXPECTED = ("channel_chunk must be None (chosen from the memory budget) or an int "
                   "h >= 1 (convolve h of the H channels at a time)")


def check_channel_chunk(channel_chunk) -> int | None:
    """None (automatic) or a positive int."""
    if channel_chunk is None:
        return None
    if not _is_int(channel_chunk):
        raise TypeError(f"{_CHUNK_EXPECTED}, got {_got(channel_chunk)}")
    if channel_chunk < 1:
        raise ValueError(f"{_CHUNK_EXPECTED}, got {channel_chunk}")
    return int(channel_chunk)


def check_length(length) -> int:
    """A sequence length L: a Python int >= 1 (it is a shape, so it is static under jit)."""
    if not _is_int(length):
        raise TypeError(f"length must be an int L >= 1, got {_got(length)}")
    if length < 1:
        raise ValueError(f"length must be an int L >= 1, got {length}")
    return int(length)


def check_float(bk, name: str, x) -> str:
    """The dtype name of ``x``, which must be a real float; the fix is spelled for ``bk``."""
    dtype = bk.dtype_name(x)
    if dtype not in FLOAT_DTYPES:
        kind = "complex" if dtype.startswith("complex") else dtype
        raise TypeError(f"{name} must be a real floating array (float16, bfloat16, float32 or "
                        f"float64), got dtype {kind}; convert it first, e.g. "
                        f"{bk.cast_hint(name)}")
    return dtype


def check_input(bk, u, d_model: int | None, transposed: bool = True,
                unbatched: bool = False):
    """u as a native float array (B, H, L), or (B, L, H) when not ``transposed``.

    unbatched: also accept one sequence (H, L) / (L, H) (sgconv.jax, for vmap).
    B = 0 is allowed (the layer returns an empty output, as torch layers do); L = 0 is not.
    """
    u = bk.asarray(u)
    check_float(bk, "u", u)
    layout = "(B, H, L)" if transposed else "(B, L, H)"
    ranks = (2, 3) if unbatched else (3,)
    if u.ndim not in ranks:
        hint = (f"or one unbatched sequence {layout.replace('B, ', '')}" if unbatched
                else "add a batch axis with u[None] for a single sequence")
        raise ValueError(f"u must have 3 dimensions {layout}, got shape {tuple(u.shape)}; {hint}")
    shape = tuple(u.shape) if u.ndim == 3 else (1,) + tuple(u.shape)
    H_axis, L_axis = (1, 2) if transposed else (2, 1)
    if d_model is not None and shape[H_axis] != d_model:
        if shape[L_axis] == d_model:
            fix = (f"it looks like {'(B, L, H)' if transposed else '(B, H, L)'}: pass "
                   f"transposed={not transposed} for that layout, or transpose u")
        else:
            fix = "the input's channels must match the layer's width"
        raise ValueError(f"u has H={shape[H_axis]} channels on axis {H_axis} of {layout} (shape "
                         f"{tuple(u.shape)}), but the layer has d_model={d_model}; {fix}")
    if shape[L_axis] == 0:
        raise ValueError(f"u has length L=0 (shape {tuple(u.shape)}); expected L >= 1")
    return u


def check_int(name: str, value, minimum: int = 1) -> int:
    """A Python (or NumPy) int >= ``minimum`` (a size, a count, a seed); bools are refused."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an int >= {minimum}, got {_got(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)
