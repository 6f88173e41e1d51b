"""The public 2D operator on the active backend: the axis kernels, the 2D convolution, the
layer and the prepared layer for inference, each checked here and run by sgconv._ops2d.

Images are (B, H, X, Y), or channels-last (B, X, Y, H) with ``transposed=False``.
"""

from __future__ import annotations

import numbers

from . import _checks, _ops, _ops2d
from ._ops2d import Prepared2d
from ._params2d import Params2d
from ._switch import backend as _backend

__all__ = ["kernel2d", "conv2d", "apply2d", "prepare2d", "Prepared2d", "check_input2d",
           "check_sizes", "validate_conv2d", "check_prepared2d"]


def check_sizes(sizes, name: str = "sizes") -> tuple[int, int]:
    """An image size (X, Y): a pair of ints >= 1 (one int means a square)."""
    pair = tuple(sizes) if isinstance(sizes, (tuple, list)) else (sizes, sizes)
    if len(pair) != 2 or any(isinstance(s, bool) or not isinstance(s, numbers.Integral)
                             for s in pair):
        raise TypeError(f"{name} must be an int or a pair (X, Y) of ints >= 1, got {sizes!r}")
    if min(pair) < 1:
        raise ValueError(f"{name} must be >= 1 along both axes, got {tuple(pair)}")
    return (int(pair[0]), int(pair[1]))


def check_input2d(bk, u, d_model: int | None, transposed: bool = True, unbatched: bool = False):
    """u as a native float array (B, H, X, Y), or channels-last (B, X, Y, H) when not
    ``transposed``.  unbatched: also accept one image (H, X, Y) / (X, Y, H) (sgconv.jax,
    for vmap).  B = 0 is allowed; X = 0 or Y = 0 is not."""
    u = bk.asarray(u)
    _checks.check_float(bk, "u", u)
    layout = "(B, H, X, Y)" if transposed else "(B, X, Y, H)"
    ranks = (3, 4) if unbatched else (4,)
    if u.ndim not in ranks:
        hint = (f"or one unbatched image {layout.replace('B, ', '')}" if unbatched
                else "add a batch axis with u[None] for a single image")
        if u.ndim == 3 and not unbatched:
            hint += " (a 3D array is a sequence: the 1D layer is sgconv.apply)"
        raise ValueError(f"u must have 4 dimensions {layout}, got shape {tuple(u.shape)}; {hint}")
    shape = tuple(u.shape) if u.ndim == 4 else (1,) + tuple(u.shape)
    H_axis = 1 if transposed else 3
    if d_model is not None and shape[H_axis] != d_model:
        other = 3 if transposed else 1
        if shape[other] == d_model:
            fix = (f"it looks like {'(B, X, Y, H)' if transposed else '(B, H, X, Y)'}: pass "
                   f"transposed={not transposed} for that layout, or move the channel axis")
        else:
            fix = "the input's channels must match the layer's width"
        raise ValueError(f"u has H={shape[H_axis]} channels on axis {H_axis} of {layout} (shape "
                         f"{tuple(u.shape)}), but the layer has d_model={d_model}; {fix}")
    spatial = shape[2:] if transposed else shape[1:3]
    if min(spatial) == 0:
        raise ValueError(f"u has an empty image, (X, Y) = {spatial} (shape {tuple(u.shape)}); "
                         f"expected X >= 1 and Y >= 1")
    return u


def validate_conv2d(bk, u, kx, ky, D):
    """Check conv2d's arguments: u (B, H, X, Y); kx (2C, H, tx), 1 <= tx <= X; ky (2C, H,
    ty), 1 <= ty <= Y; D (C, H) or None.  Returns them as native arrays on u's device."""
    u = check_input2d(bk, u, None)
    B, H, X, Y = u.shape
    out = []
    for name, k, size, letter in (("kx", kx, X, "X"), ("ky", ky, Y, "Y")):
        k = bk.asarray(k, like=u)
        _checks.check_float(bk, name, k)
        if k.ndim != 3 or k.shape[1] != H or k.shape[0] % 2:
            raise ValueError(f"{name} must be a bidirectional axis kernel (2C, H={H}, taps) with "
                             f"an even number of rows (C causal, then C anti-causal), got shape "
                             f"{tuple(k.shape)}")
        if not 1 <= k.shape[-1] <= size:
            raise ValueError(f"{name} has {k.shape[-1]} taps but the image has {letter}={size}; "
                             f"expected 1 <= taps <= {letter} (cut it: {name}[..., :{size}])")
        out.append(k)
    kx, ky = out
    if kx.shape[0] != ky.shape[0]:
        raise ValueError(f"kx and ky must have the same rows 2C, got {kx.shape[0]} and "
                         f"{ky.shape[0]}")
    C = kx.shape[0] // 2
    if D is not None:
        D = bk.asarray(D, like=u)
        _checks.check_float(bk, "D", D)
        if tuple(D.shape) != (C, H):
            raise ValueError(f"D must have shape (C={C}, H={H}), got {tuple(D.shape)}")
    return u, kx, ky, D


def _check_params(params) -> None:
    if not isinstance(params, Params2d):
        hint = ("; 1D parameters go to sgconv.apply" if type(params).__name__ == "Params" else "")
        raise TypeError(f"expected sgconv.Params2d (from sgconv.init2d, from_state_dict2d or "
                        f"load), got {type(params).__name__}{hint}")


def arrays2d(bk, params: Params2d, dtype: str, like=None) -> dict:
    """The parameters as the backend's arrays in the compute dtype (ARRAY_NAMES_2D)."""
    out = {}
    for name, value in params.arrays().items():
        if name.startswith("kernels_"):
            out[name] = tuple(bk.asarray(w, dtype=dtype, like=like) for w in value)
        else:
            out[name] = None if value is None else bk.asarray(value, dtype=dtype, like=like)
    return out


def kernel2d(params: Params2d, sizes):
    """The two axis kernels of the 2D kernel for images of ``sizes`` (X, Y):

        (kx (2C, H, X), ky (2C, H, Y))     k = Cat(S)[..., :size] / Z per axis

    each a bidirectional 1D SGConv kernel (rows 0..C-1 causal, C..2C-1 anti-causal),
    zero-padded past its K.  The 2D kernel is their outer product, k2[c, h, dx, dy] =
    kx~[c, h, dx] ky~[c, h, dy] with k~[delta] = k0[delta] (delta >= 0), k1[-delta-1]
    (delta < 0); it is never formed in space by the layer.  Parameters' dtype (float32 for
    half precision), on the active backend.
    """
    _check_params(params)
    sizes = check_sizes(sizes)
    bk = _backend()
    dtype = _ops.compute_dtype(bk.dtype_name(bk.asarray(params.D)))
    a = arrays2d(bk, params, dtype)
    kx, ky = _ops2d.axis_kernels(bk, params.config, a, sizes)
    return tuple(bk.pad_last(k, 0, L - k.shape[-1]) if k.shape[-1] < L else k
                 for k, L in zip((kx, ky), sizes))


def conv2d(u, kx, ky, D=None):
    """SGConv's 2D convolution by FFT (linear, not circular), O(X Y log(X Y)):

        y[b,c,h,x,y] = sum_{dx,dy} kx~[c,h,dx] ky~[c,h,dy] u[b,h,x-dx,y-dy] + D[c,h] u[b,h,x,y]

    k~[delta] = k[c, delta] for delta >= 0 and k[C + c, -delta - 1] for delta < 0, per axis.
    u: (B, H, X, Y); kx: (2C, H, tx), 1 <= tx <= X; ky: (2C, H, ty), 1 <= ty <= Y; D: (C, H)
    or None.  Returns (B, C, H, X, Y) in u's dtype (half precision computed in float32).
    """
    bk = _backend()
    u, kx, ky, D = validate_conv2d(bk, u, kx, ky, D)
    dtype = bk.dtype_name(u)
    cdtype = _ops.compute_dtype(dtype)
    if D is not None:
        D = bk.cast(D, cdtype)
    y = _ops2d.conv2d(bk, bk.cast(u, cdtype), bk.cast(kx, cdtype), bk.cast(ky, cdtype), D)
    return bk.cast(y, dtype)


def prepare2d(params: Params2d, sizes, *, dtype: str | None = None) -> Prepared2d:
    """The 2D layer with its kernel's spectrum computed once, for images of ``sizes`` (X, Y).

    :func:`apply2d` builds the axis kernels and the 2D spectrum on every call (what
    training needs).  For inference with fixed parameters ``fast = prepare2d(params, (X,
    Y))`` does it once and ``apply2d(fast, u)`` only transforms u.  dtype: the compute
    precision (default: the parameters'; float32 for half precision).
    """
    _check_params(params)
    sizes = check_sizes(sizes)
    bk = _backend()
    cdtype = _ops.compute_dtype(dtype if dtype is not None else
                                bk.dtype_name(bk.asarray(params.D)))
    if cdtype not in _checks.FLOAT_DTYPES:
        raise TypeError(f"dtype must be one of {', '.join(_checks.FLOAT_DTYPES)}, got {dtype!r}")
    return _ops2d.prepare(bk, params.config, arrays2d(bk, params, cdtype), sizes)


def check_prepared2d(bk, prepared: Prepared2d, u, transposed: bool) -> None:
    """A Prepared2d layer only runs at its image size and precision, on its backend."""
    if not bk.is_native(prepared.spectrum):
        raise TypeError(f"this Prepared2d layer holds arrays of another framework "
                        f"({type(prepared.spectrum).__name__}) than the active backend "
                        f"{bk.name!r}; call prepare2d(params, sizes) with {bk.name!r} active")
    sizes = tuple(u.shape[-2:]) if transposed else tuple(u.shape[-3:-1])
    if sizes != prepared.sizes:
        raise ValueError(f"this Prepared2d layer was made for images of (X, Y) = "
                         f"{prepared.sizes}, got {sizes}; call prepare2d(params, {sizes})")
    got = _ops.compute_dtype(bk.dtype_name(u))
    want = bk.dtype_name(prepared.out_weight)
    if got != want:
        raise TypeError(f"this Prepared2d layer computes in {want}, but u ({bk.dtype_name(u)}) "
                        f"computes in {got}; pass {want} input, or prepare with dtype='{got}'")


def apply2d(params: Params2d | Prepared2d, u, *, transposed: bool = True, dropout: float = 0.0,
            rng=None, channel_chunk: int | None = None):
    """The 2D SGConv layer (shared/SPEC.md, "Two-dimensional SGConv"):

        y = conv2d(u, kx (x) ky) + D u     (B, C, H, X, Y)
        out = W GELU(y) + b                (B, H, X, Y)   (dropout after the GELU)

    u: (B, H, X, Y), or channels-last (B, X, Y, H) with ``transposed=False``; any X, Y >= 1
    (smaller than the configured sizes crops the axis kernels, larger zero-pads them).
    Returns u's layout and dtype; float16/bfloat16 are computed in float32.  ``dropout``:
    the rate (0 = evaluation), ``rng`` its seed or generator/key.  ``channel_chunk``:
    convolve that many channels at a time (None: from sgconv.get_memory_budget()).  params
    may be a :class:`Prepared2d` from :func:`prepare2d`.
    """
    prepared = isinstance(params, Prepared2d)
    if not prepared:
        _check_params(params)
    transposed = _checks.check_bool("transposed", transposed)
    rate = _checks.check_rate(dropout)
    channel_chunk = _checks.check_channel_chunk(channel_chunk)
    bk = _backend()
    u = check_input2d(bk, u, params.config.d_model, transposed)
    if prepared:
        check_prepared2d(bk, params, u, transposed)
    dtype = bk.dtype_name(u)
    cdtype = _ops.compute_dtype(dtype)
    x = bk.cast(u if transposed else bk.xp.moveaxis(u, 3, 1), cdtype)  # (B, H, X, Y)
    source = params if prepared else arrays2d(bk, params, cdtype, like=x)
    y = _ops2d.layer(bk, params.config, source, x, dropout=rate, rng=rng,
                     channel_chunk=channel_chunk)                   # (B, H, X, Y)
    y = bk.cast(y, dtype)
    return y if transposed else bk.xp.moveaxis(y, 1, 3)
