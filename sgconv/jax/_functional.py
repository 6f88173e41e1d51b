"""Pure functions over the parameter pytree: init, kernel, apply, trainable.

Each public function checks its Python-level arguments (types, dtypes, shapes, options)
and then calls a ``jax.jit``-compiled core whose static arguments are the configuration
(the pytree metadata of :class:`sgconv.Params`) and the options.  The checks run at
trace time only, so the functions also work inside the caller's own ``jit``, ``grad``,
``vmap`` and ``value_and_grad``; repeated calls at the same shapes reuse one compiled
program.  The SGConv math itself is the generic code in :mod:`sgconv._ops`.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks, _ops
from .._api import check_prepared
from .._config import SGConvConfig
from .._ops import Prepared
from .._params import Params, init as _numpy_init
from .._switch import backend as _get_backend
from ..backends._base import array_framework

__all__ = ["init", "kernel", "apply", "prepare", "Prepared", "trainable", "as_jax_params"]

_BK = _get_backend("jax")  # loads the backend: registers Params and Prepared as pytrees


# --- argument checks ----------------------------------------------------------------------

def _dtype_name(dtype) -> str:
    """A float dtype given as a name, a NumPy/JAX dtype or a scalar type -> its name."""
    try:
        name = jnp.dtype(dtype).name
    except TypeError:
        name = None
    if name not in _checks.FLOAT_DTYPES:
        raise TypeError(f"dtype must be one of {', '.join(_checks.FLOAT_DTYPES)} (e.g. jnp.float32), "
                        f"got {dtype!r}")
    if name == "float64" and not _BK.x64_enabled():
        raise _BK._refuse_64("the requested parameter dtype")
    return name


def _check_params(params) -> None:
    if not isinstance(params, Params):
        raise TypeError(f"expected sgconv.Params (from sgconv.jax.init, sgconv.from_state_dict "
                        f"or sgconv.load), got {type(params).__name__}")


def as_jax_params(params: Params, dtype=None) -> Params:
    """``params`` with every array a JAX array (arrays of any backend are converted).

    dtype: None keeps the stored dtype; float64 needs JAX's 64-bit mode (else TypeError,
    never a silent rounding to float32).  JAX arrays and tracers pass through (cast only
    when ``dtype`` asks for it).
    """
    _check_params(params)
    try:
        return to_jax_leaves(params, dtype)
    except TypeError as exc:
        raise TypeError(f"cannot convert the {params.backend} parameters to JAX: {exc} (or "
                        f"choose the dtype: sgconv.jax.as_jax_params(params, jnp.float32))") from exc


def to_jax_leaves(params, dtype=None):
    """Every array of ``params`` (sgconv.Params or Params2d: anything with ``_map``) as a JAX
    array, cast to ``dtype`` when given; arrays of other frameworks go via the host."""
    name = None if dtype is None else _dtype_name(dtype)

    def convert(x):
        if _BK.is_native(x):
            return x if name is None else _BK.cast(x, name)
        owner = array_framework(x)
        if owner not in (None, "numpy"):
            x = _get_backend(owner).to_numpy(x)                   # torch, cupy: via the host
        return _BK.asarray(x, dtype=name)

    return params._map(convert)


# --- init ---------------------------------------------------------------------------------

def init(key, config: SGConvConfig, dtype=jnp.float32) -> Params:
    """Fresh SGConv parameters (SPEC) as a pytree of JAX arrays.

    key: a JAX key (``jax.random.key(0)`` or ``jax.random.PRNGKey(0)``) or a Python int.

    - An int seed gives exactly the numbers of ``sgconv.init(config, seed)`` (drawn by
      NumPy in float64, the same on every backend), then cast to ``dtype``.  Not jittable.
    - A key draws with ``jax.random`` (so init works under ``jit`` and ``vmap``, e.g.
      ``jax.vmap(lambda k: init(k, config))(keys)`` for an ensemble).  Same distributions,
      different numbers from the seed path: ``k1, k2 = jax.random.split(key)``; one
      ``jax.random.normal(k1, (N*C'*H*d + C*H,))`` is cut, in order, into w_0 .. w_{N-1}
      (each (C', H, d)) and D (C, H); one ``jax.random.uniform(k2, ...)`` r in [0, 1) into
      out_weight (H, C*H) and out_bias (H,) as -b + 2 b r with b = 1/sqrt(C*H), then (in
      learnable-decay mode) decay (H,) as decay_min + (decay_max - decay_min) r.

    The multiplier is linspace(decay_min, decay_max, H) (ones in learnable-decay mode).
    Z (``kernel_norm``, (C', H)) is the norm of each row of the full raw kernel (length K),
    computed once here; together with the multiplier it is state: :func:`apply` blocks
    their gradients.  Arrays are drawn in float32 (float64 for dtype=float64, which needs
    JAX's 64-bit mode) and stored in ``dtype``; for float16/bfloat16, Z is the norm of the
    rounded weights.

    Returns Params with kernels N x (C', H, d), multiplier (H,), kernel_norm (C', H),
    D (C, H), out_weight (H, C*H), out_bias (H,), decay (H,) or None.
    """
    if not isinstance(config, SGConvConfig):
        raise TypeError(f"init expects an SGConvConfig as its second argument, got "
                        f"{type(config).__name__}; call it as init(key, config)")
    name = _dtype_name(dtype)
    if isinstance(key, (numbers.Integral, np.integer)) and not isinstance(key, bool):
        return _numpy_init(config, int(key), dtype=name, backend="jax")
    key = _BK.prng_key(key, what="init")
    return _init_random(key, config, name)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _init_random(key, config: SGConvConfig, dtype: str) -> Params:
    N, H, C, Cp, d = (config.num_scales, config.d_model, config.channels, config.kernel_rows,
                      config.kernel_dim)
    draw = jnp.float64 if dtype == "float64" else jnp.float32     # half: draw in float32
    # Two draws in all (each random-bits program costs compile time): one normal vector
    # cut into the sub-kernels and D, one uniform vector cut into W, b (and the decay).
    key_normal, key_uniform = jax.random.split(key)
    sizes = [Cp * H * d] * N + [C * H]
    normal = jax.random.normal(key_normal, (sum(sizes),), draw)   # (N*C'*H*d + C*H,)
    pieces = jnp.split(normal, np.cumsum(sizes)[:-1].tolist())
    kernels = tuple(w.reshape(Cp, H, d).astype(dtype) for w in pieces[:N])  # N x (C', H, d)
    D = pieces[N].reshape(C, H)                                    # (C, H)
    n_decay = H if config.learnable_decay else 0
    r = jax.random.uniform(key_uniform, (H * C * H + H + n_decay,), draw)   # U[0, 1)
    bound = 1.0 / np.sqrt(C * H)                                   # nn.Linear's U(-b, b)
    out_weight = (-bound + 2 * bound * r[:H * C * H]).reshape(H, C * H)     # (H, C*H)
    out_bias = -bound + 2 * bound * r[H * C * H:H * C * H + H]     # (H,)
    if config.learnable_decay:
        decay = config.decay_min + (config.decay_max - config.decay_min) * r[H * C * H + H:]
        multiplier = jnp.ones((H,), draw)
    else:
        decay = None
        multiplier = jnp.linspace(config.decay_min, config.decay_max, H, dtype=draw)
    # Z from the weights as stored (rounded to dtype), computed in the draw precision.
    norm = _ops.normaliser(_BK, config, tuple(w.astype(draw) for w in kernels),
                        multiplier.astype(dtype).astype(draw),
                        None if decay is None else decay.astype(dtype).astype(draw))  # (C', H)
    cast = lambda x: None if x is None else x.astype(dtype)  # noqa: E731
    return Params(config, kernels, cast(multiplier), cast(norm), cast(D), cast(out_weight),
                  cast(out_bias), cast(decay))


# --- kernel and apply ---------------------------------------------------------------------

def _compute_arrays(params: Params, cdtype: str) -> dict:
    """The arrays in the compute dtype; the state (multiplier m and Z) blocks gradients."""
    a = {}
    for name, value in params.arrays().items():
        if name == "kernels":
            a[name] = tuple(w.astype(cdtype) for w in value)
        elif value is not None:
            a[name] = value.astype(cdtype)
        else:
            a[name] = None
    # m and Z are buffers in the released module, not trained: no gradient flows into them.
    a["multiplier"] = jax.lax.stop_gradient(a["multiplier"])
    a["kernel_norm"] = jax.lax.stop_gradient(a["kernel_norm"])
    return a


def kernel(params: Params, length: int):
    """The SGConv kernel for length L: k = Cat(S)[..., :L] / Z (zero-padded when L > K).

    Returns (C', H, L): rows 0..C-1 causal, rows C..2C-1 the anti-causal half when
    bidirectional.  dtype: the parameters' (float32 for float16/bfloat16 parameters).
    Differentiable w.r.t. the sub-kernels and the learnable decay; ``length`` is static.
    """
    params = as_jax_params(params)
    return _kernel_jit(params, _checks.check_length(length))


@functools.partial(jax.jit, static_argnums=1)
def _kernel_jit(params: Params, length: int):
    cdtype = _ops.compute_dtype(_BK.dtype_name(params.D))
    a = _compute_arrays(params, cdtype)
    return _ops.kernel(_BK, params.config, a["kernels"], a["multiplier"], a["kernel_norm"],
                       a["decay"], length=length)                  # (C', H, L)


def prepare(params: Params, length: int, *, dtype=None, block_size: int | None = None
            ) -> Prepared:
    """The kernel's spectrum for sequences of ``length``, computed once for inference.

    :func:`apply` builds the kernel and its FFT on every call, which is what training
    needs (the sub-kernels change every step).  For evaluation or serving with fixed
    parameters, ``fast = prepare(params, L)`` does that work once and ``apply(fast, u)``
    only transforms u: the same numbers in less time (the PyTorch module does the same
    in ``eval()``; timings in ``asv_benchmarks/compare_jax_torch.py`` and docs/jax.md).

    Returns :class:`sgconv.Prepared`, a pytree: ``spectrum`` (C, H, n//2+1) complex (the
    kernel's FFT with D folded into lag 0), ``out_weight`` (H, C*H) and ``out_bias`` (H,)
    are its leaves; the configuration and the FFT plan (length L, FFT length n, overlap-add
    block) are static.

    dtype: the compute precision (default: the parameters' own; float32 for
    float16/bfloat16); inputs must then compute in that precision.  block_size: as in
    :func:`apply`, fixed here with the FFT plan.  ``prepare`` works under ``jit`` (with
    ``length``, ``dtype`` and ``block_size`` static).  It is meant for inference: train
    with :func:`apply`, whose gradients reach the sub-kernels.
    """
    params = as_jax_params(params)
    length = _checks.check_length(length)
    block_size = _checks.check_block_size(block_size)
    cdtype = _ops.compute_dtype(_dtype_name(params.D.dtype if dtype is None else dtype))
    return _prepare_jit(params, length, block_size, cdtype)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _prepare_jit(params: Params, length: int, block_size, cdtype: str) -> Prepared:
    return _ops.prepare(_BK, params.config, _compute_arrays(params, cdtype), length, block_size)


def apply(params: Params | Prepared, u, *, transposed: bool = True, dropout: float = 0.0,
          key=None, deterministic: bool = False, block_size: int | None = None,
          channel_chunk: int | None = None):
    """The SGConv layer, a pure function of (params, u, key):

        y = k * u + D u        (B, C, H, L)   causal (and anti-causal) FFT convolution
        y = GELU(y)            (B, C*H, L)    exact erf form
        y = dropout(y)                        only with dropout > 0 and not deterministic
        out = W y + b          (B, H, L)

    u: (B, H, L), or (B, L, H) with ``transposed=False``; a single unbatched sequence
    (H, L) / (L, H) is accepted too (so ``jax.vmap`` over examples works).  Returns the
    same layout and dtype as u.  The parameters are cast to u's dtype; float16/bfloat16
    inputs are computed in float32 (FFT included) and the result cast back.

    params: :class:`sgconv.Params`, or a :class:`sgconv.Prepared` from :func:`prepare`
    (the kernel's spectrum computed once, for inference at that length and precision).
    dropout: rate in [0, 1); when > 0 and ``deterministic`` is False it needs ``key`` (a
    JAX key; split a new one per step), else ValueError.  ``deterministic=True`` turns
    dropout off (evaluation).  block_size: None lets the FFT planner choose overlap-add
    for kernels much shorter than L; 0 forces one FFT.  channel_chunk: convolve that many
    of the H channels at a time (None: chosen from ``sgconv.get_memory_budget()``; the
    numbers are the same).  ``transposed``, ``dropout``, ``deterministic``, ``block_size``
    and ``channel_chunk`` are static (they select the compiled program).
    """
    prepared = isinstance(params, Prepared)
    if not prepared:
        params = as_jax_params(params)
    transposed, rate, key, block_size, channel_chunk = check_options(
        transposed, dropout, key, deterministic, block_size, channel_chunk)
    u = _checks.check_input(_BK, u, params.config.d_model, transposed, unbatched=True)
    if prepared:
        check_prepared(_BK, params, u, transposed, block_size)
    # the chunk is chosen here, outside jit, so that the memory budget in force is read
    B = 1 if u.ndim == 2 else u.shape[0]
    L = u.shape[-1] if transposed else u.shape[-2]
    plan = params.plan if prepared else _ops.layer_plan(_BK, params.config, L, block_size)
    itemsize = 8 if _ops.compute_dtype(_BK.dtype_name(u)) == "float64" else 4
    chunk = _ops.choose_channel_chunk(params.config, B, plan, itemsize, channel_chunk)
    return _apply_jit(params, u, key, transposed, rate, block_size, chunk or 0)


def check_options(transposed, dropout, key, deterministic, block_size, channel_chunk):
    """The layer call's options, checked: (transposed, rate, key, block_size, channel_chunk),
    with the rate and key cleared when dropout is off (evaluation: the key is not used)."""
    transposed = _checks.check_bool("transposed", transposed)
    deterministic = _checks.check_bool("deterministic", deterministic)
    rate = _checks.check_rate(dropout)
    block_size = _checks.check_block_size(block_size)
    channel_chunk = _checks.check_channel_chunk(channel_chunk)
    if rate > 0.0 and not deterministic:
        key = _BK.prng_key(key)               # missing key -> ValueError naming the fix
    else:
        rate, key = 0.0, None
    return transposed, rate, key, block_size, channel_chunk


def _in_layout(u, transposed: bool, cdtype: str):
    """u (B, H, L) / (B, L, H) / unbatched -> (B, H, L) in the compute dtype."""
    if u.ndim == 2:
        u = u[None]
    if not transposed:
        u = u.swapaxes(-1, -2)                                     # (B, L, H) -> (B, H, L)
    return u.astype(cdtype)


def _out_layout(y, like, transposed: bool):
    """(B, H, L) -> the layout, batching and dtype of the input ``like``."""
    y = y.astype(like.dtype)
    if not transposed:
        y = y.swapaxes(-1, -2)                                     # (B, L, H)
    return y[0] if like.ndim == 2 else y


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6))
def _apply_jit(params, u, key, transposed: bool, rate: float, block_size, chunk: int):
    """params: Params or Prepared; chunk: the channel chunk (0 for all channels at once)."""
    if isinstance(params, Prepared):
        cdtype = jnp.dtype(params.dtype).name
        source = params
    else:
        cdtype = _ops.compute_dtype(_BK.dtype_name(u))             # half precision: FFT in f32
        source = _compute_arrays(params, cdtype)
    y = _ops.layer(_BK, params.config, source, _in_layout(u, transposed, cdtype), dropout=rate,
                   rng=key, block_size=block_size, channel_chunk=chunk or None)  # (B, H, L)
    return _out_layout(y, u, transposed)


# --- which leaves are trained -------------------------------------------------------------

def trainable(params: Params) -> Params:
    """A mask with the parameters' pytree structure: True for trained leaves.

    True for the sub-kernels, D, the mixing weight and bias and the learnable decay;
    False for the state (the multiplier m and Z = ``kernel_norm``).  Their gradients are
    zero, but optimisers that add weight decay would still change them: pass this mask to
    e.g. ``optax.masked`` (or use it to filter updates).
    """
    _check_params(params)
    return dataclasses.replace(
        params, kernels=tuple(True for _ in params.kernels), multiplier=False,
        kernel_norm=False, D=True, out_weight=True, out_bias=True,
        decay=None if params.decay is None else True)
