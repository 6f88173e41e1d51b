"""2D SGConv as pure functions over the parameter pytree (:class:`sgconv.Params2d`):
init2d, kernel2d, apply2d, prepare2d, trainable2d.

As the 1D functions: Python-level checks at trace time, then a ``jax.jit``-compiled core
whose static arguments are the configuration (pytree metadata) and the options, so the
functions also work inside the caller's ``jit``, ``grad``, ``vmap``.  The math is the
generic 2D code of :mod:`sgconv._ops2d`.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks, _ops, _ops2d
from .._api2d import check_input2d, check_prepared2d, check_sizes
from .._config2d import SGConv2dConfig
from .._ops2d import Prepared2d
from .._params2d import Params2d, init2d as _numpy_init2d
from ._functional import _BK, _dtype_name, to_jax_leaves

__all__ = ["init2d", "kernel2d", "apply2d", "prepare2d", "Prepared2d", "trainable2d",
           "as_jax_params2d"]

_AXES = ("x", "y")


def _check_params(params) -> None:
    if not isinstance(params, Params2d):
        raise TypeError(f"expected sgconv.Params2d (from sgconv.jax.init2d, "
                        f"sgconv.from_state_dict2d or sgconv.load), got {type(params).__name__}")


def as_jax_params2d(params: Params2d, dtype=None) -> Params2d:
    """``params`` with every array a JAX array (arrays of any backend are converted);
    dtype: None keeps the stored one (float64 needs JAX's 64-bit mode, else TypeError)."""
    _check_params(params)
    return to_jax_leaves(params, dtype)


def init2d(key, config: SGConv2dConfig, dtype=jnp.float32) -> Params2d:
    """Fresh 2D parameters (SPEC) as a pytree of JAX arrays.

    key: an int seed gives exactly the numbers of ``sgconv.init2d(config, seed)`` (NumPy,
    float64, then cast; not jittable).  A JAX key draws with ``jax.random`` (works under
    ``jit`` and ``vmap``), same distributions, other numbers: one normal vector cut, in
    order, into the x sub-kernels, the y sub-kernels (each (2C, H, d)) and D (C, H); one
    uniform vector r in [0, 1) into out_weight (H, C*H) and out_bias (H,) as -b + 2 b r,
    b = 1/sqrt(C*H), then (learnable decay) decay_x and decay_y (H,).  Multipliers
    linspace(decay_min, decay_max, H); each axis's Z computed here, in the draw precision.
    """
    if not isinstance(config, SGConv2dConfig):
        raise TypeError(f"init2d expects an SGConv2dConfig as its second argument, got "
                        f"{type(config).__name__}; call it as init2d(key, config)")
    name = _dtype_name(dtype)
    if isinstance(key, (numbers.Integral, np.integer)) and not isinstance(key, bool):
        return _numpy_init2d(config, int(key), dtype=name, backend="jax")
    return _init2d_random(_BK.prng_key(key, what="init2d"), config, name)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _init2d_random(key, config: SGConv2dConfig, dtype: str) -> Params2d:
    H, C, d = config.d_model, config.channels, config.kernel_dim
    Nx, Ny = config.num_scales
    draw = jnp.float64 if dtype == "float64" else jnp.float32
    key_normal, key_uniform = jax.random.split(key)
    sizes = [2 * C * H * d] * (Nx + Ny) + [C * H]
    pieces = jnp.split(jax.random.normal(key_normal, (sum(sizes),), draw),
                       np.cumsum(sizes)[:-1].tolist())
    fields = {"kernels_x": tuple(w.reshape(2 * C, H, d) for w in pieces[:Nx]),
              "kernels_y": tuple(w.reshape(2 * C, H, d) for w in pieces[Nx:Nx + Ny]),
              "D": pieces[-1].reshape(C, H)}
    n_decay = 2 * H if config.learnable_decay else 0
    r = jax.random.uniform(key_uniform, (H * C * H + H + n_decay,), draw)
    bound = 1.0 / np.sqrt(C * H)                                   # nn.Linear's U(-b, b)
    fields["out_weight"] = (-bound + 2 * bound * r[:H * C * H]).reshape(H, C * H)
    fields["out_bias"] = -bound + 2 * bound * r[H * C * H:H * C * H + H]
    for i, a in enumerate(_AXES):
        if config.learnable_decay:
            start = H * C * H + H + i * H
            fields["decay_" + a] = config.decay_min + (config.decay_max - config.decay_min) \
                * r[start:start + H]
            fields["multiplier_" + a] = jnp.ones((H,), draw)
        else:
            fields["multiplier_" + a] = jnp.linspace(config.decay_min, config.decay_max, H,
                                                     dtype=draw)
    cast = lambda x: None if x is None else x.astype(dtype)  # noqa: E731
    fields = {k: (tuple(cast(w) for w in v) if k.startswith("kernels_") else cast(v))
              for k, v in fields.items()}
    for a, axis in zip(_AXES, config.axes):                        # Z of the stored weights
        up = lambda x: None if x is None else x.astype(draw)  # noqa: E731
        fields["kernel_norm_" + a] = cast(_ops.normaliser(
            _BK, axis, tuple(up(w) for w in fields["kernels_" + a]),
            up(fields["multiplier_" + a]), up(fields.get("decay_" + a))))  # (2C, H)
    return Params2d(config, **fields)


def _compute_arrays(params: Params2d, cdtype: str) -> dict:
    """The arrays in the compute dtype; the state (multipliers, Z) blocks gradients."""
    out = {}
    for name, value in params.arrays().items():
        if name.startswith("kernels_"):
            out[name] = tuple(w.astype(cdtype) for w in value)
        else:
            out[name] = None if value is None else value.astype(cdtype)
    for a in _AXES:
        for state in ("multiplier_", "kernel_norm_"):
            out[state + a] = jax.lax.stop_gradient(out[state + a])
    return out


def kernel2d(params: Params2d, sizes):
    """The two axis kernels for images of ``sizes`` (X, Y): (kx (2C, H, X), ky (2C, H, Y)),
    each a bidirectional 1D SGConv kernel; the 2D kernel is their outer product (see
    :func:`sgconv.kernel2d`).  Differentiable; ``sizes`` is static."""
    return _kernel2d_jit(as_jax_params2d(params), check_sizes(sizes))


@functools.partial(jax.jit, static_argnums=1)
def _kernel2d_jit(params: Params2d, sizes):
    cdtype = _ops.compute_dtype(_BK.dtype_name(params.D))
    kx, ky = _ops2d.axis_kernels(_BK, params.config, _compute_arrays(params, cdtype), sizes)
    return tuple(_BK.pad_last(k, 0, L - k.shape[-1]) if k.shape[-1] < L else k
                 for k, L in zip((kx, ky), sizes))


def prepare2d(params: Params2d, sizes, *, dtype=None) -> Prepared2d:
    """The 2D kernel's spectrum for images of ``sizes``, computed once for inference:
    ``apply2d(prepare2d(params, (X, Y)), u)`` only transforms u.  Returns
    :class:`sgconv.Prepared2d`, a pytree (spectrum (C, H, nx, ny//2+1), out_weight,
    out_bias; config and plan static)."""
    params = as_jax_params2d(params)
    cdtype = _ops.compute_dtype(_dtype_name(params.D.dtype if dtype is None else dtype))
    return _prepare2d_jit(params, check_sizes(sizes), cdtype)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _prepare2d_jit(params: Params2d, sizes, cdtype: str) -> Prepared2d:
    return _ops2d.prepare(_BK, params.config, _compute_arrays(params, cdtype), sizes)


def apply2d(params: Params2d | Prepared2d, u, *, transposed: bool = True,
            dropout: float = 0.0, key=None, deterministic: bool = False,
            channel_chunk: int | None = None):
    """The 2D SGConv layer, a pure function of (params, u, key):

        y = (kx (x) ky) * u + D u   (B, C, H, X, Y)   linear 2D FFT convolution
        out = W dropout(GELU(y)) + b (B, H, X, Y)

    u: (B, H, X, Y), or channels-last (B, X, Y, H) with ``transposed=False``; one unbatched
    image (H, X, Y) / (X, Y, H) is accepted too (for ``jax.vmap``).  Returns u's layout and
    dtype (float16/bfloat16 computed in float32).  dropout > 0 without ``deterministic``
    needs ``key``.  params may be a :class:`Prepared2d` from :func:`prepare2d`.
    ``transposed``, ``dropout``, ``deterministic`` and ``channel_chunk`` are static.
    """
    prepared = isinstance(params, Prepared2d)
    if not prepared:
        params = as_jax_params2d(params)
    transposed = _checks.check_bool("transposed", transposed)
    deterministic = _checks.check_bool("deterministic", deterministic)
    rate = _checks.check_rate(dropout)
    channel_chunk = _checks.check_channel_chunk(channel_chunk)
    u = check_input2d(_BK, u, params.config.d_model, transposed, unbatched=True)
    if prepared:
        check_prepared2d(_BK, params, u, transposed)
    if rate > 0.0 and not deterministic:
        key = _BK.prng_key(key)
    else:
        rate, key = 0.0, None
    # the chunk is chosen here, outside jit, so that the memory budget in force is read
    B = 1 if u.ndim == 3 else u.shape[0]
    sizes = tuple(u.shape[-2:]) if transposed else tuple(u.shape[-3:-1])
    plan = params.plan if prepared else _ops2d.plan2d(_BK, params.config, sizes)
    itemsize = 8 if _ops.compute_dtype(_BK.dtype_name(u)) == "float64" else 4
    chunk = _ops2d.choose_channel_chunk(params.config, B, plan, itemsize, channel_chunk)
    return _apply2d_jit(params, u, key, transposed, rate, chunk or 0)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _apply2d_jit(params, u, key, transposed: bool, rate: float, chunk: int):
    if isinstance(params, Prepared2d):
        cdtype = jnp.dtype(params.dtype).name
        source = params
    else:
        cdtype = _ops.compute_dtype(_BK.dtype_name(u))
        source = _compute_arrays(params, cdtype)
    x = u[None] if u.ndim == 3 else u
    x = (x if transposed else jnp.moveaxis(x, 3, 1)).astype(cdtype)   # (B, H, X, Y)
    y = _ops2d.layer(_BK, params.config, source, x, dropout=rate, rng=key,
                     channel_chunk=chunk or None)                    # (B, H, X, Y)
    y = (y if transposed else jnp.moveaxis(y, 1, 3)).astype(u.dtype)
    return y[0] if u.ndim == 3 else y


def trainable2d(params: Params2d) -> Params2d:
    """A mask with the parameters' pytree structure: True for trained leaves (sub-kernels,
    D, the mixing, learnable decays), False for the state (multipliers and Z); for
    ``optax.masked``."""
    _check_params(params)
    changes = {"D": True, "out_weight": True, "out_bias": True}
    for a in _AXES:
        changes["kernels_" + a] = tuple(True for _ in getattr(params, "kernels_" + a))
        changes["multiplier_" + a] = False
        changes["kernel_norm_" + a] = False
        changes["decay_" + a] = None if getattr(params, "decay_" + a) is None else True
    return dataclasses.replace(params, **changes)
