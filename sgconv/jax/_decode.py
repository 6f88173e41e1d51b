"""Step-by-step decoding as pure JAX functions: decoder, decode_state, prefill, step.

::

    dec = sgj.decoder(params)                     # a pytree: run coefficients (P, C, H)
    y, state = sgj.prefill(dec, prompt)           # (B, H, T) by FFT; state: a pytree
    y_t, state = sgj.step(dec, state, u_t)        # (B, H) -> (B, H), pure

    def body(state, u_t):                         # the whole decode as one compiled loop
        y_t, state = sgj.step(dec, state, u_t)
        return state, y_t
    state, ys = jax.lax.scan(body, state, us)     # us (T, B, H) -> ys (T, B, H)

``step`` is a pure function: it returns a new state and never changes its arguments, so
it works under ``jit``, ``scan`` and ``vmap``.  Under ``scan`` (the state is the carry) or
``jax.jit(sgj.step, donate_argnums=1)`` XLA writes the new input into the history in
place: O(P) per token.  Called eagerly without donation, each call copies the history
(O(K)).  Precision: with 64-bit mode on, a float32 layer keeps its run sums in float64;
with it off (JAX's default) they are compensated float32 double words (hi + lo, TwoSum
updates), which carry no drift either.  The math is :mod:`sgconv._decode`.
"""

from __future__ import annotations

import functools

import jax

from .. import _checks, _decode, _ops
from .._decode import DecodeState, Decoder
from .._params import Params
from ._functional import _BK, _compute_arrays, _dtype_name, _in_layout, _out_layout, as_jax_params

__all__ = ["Decoder", "DecodeState", "decoder", "decode_state", "prefill", "step"]


def decoder(params: Params, *, dtype=None) -> Decoder:
    """The causal layer made ready to decode: run coefficients computed once (a pytree).

    alpha, beta (P, C, H) with k[a_p + r] = alpha_p + beta_p r on run p (float64 for a
    float32 layer when 64-bit mode is on, else float32); with ``learnable_decay`` the
    kernel (K, C, H) instead (an O(K) dot product per token).  dtype: the compute
    precision (default: the parameters'; float32 for half precision).  Works under jit.
    A bidirectional layer raises ValueError.
    """
    params = as_jax_params(params)
    _decode.check_decodable(params.config)
    cdtype = _ops.compute_dtype(_dtype_name(params.D.dtype if dtype is None else dtype))
    return _decoder_jit(params, cdtype)


@functools.partial(jax.jit, static_argnums=1)
def _decoder_jit(params: Params, cdtype: str) -> Decoder:
    return _decode.make_decoder(_BK, params.config, _compute_arrays(params, cdtype))


def _check_source(source, cdtype: str):
    """The configuration of a Decoder (computing in ``cdtype``) or of decodable Params."""
    if isinstance(source, Decoder):
        want = _BK.dtype_name(source.arrays["out_weight"])
        if want != cdtype:
            raise TypeError(f"this Decoder computes in {want}, but the input computes in "
                            f"{cdtype}; pass {want} input, or make the decoder with "
                            f"sgconv.jax.decoder(params, dtype='{cdtype}')")
        return source.config
    if not isinstance(source, Params):
        raise TypeError(f"expected a sgconv.Decoder (from sgconv.jax.decoder(params)) or "
                        f"sgconv.Params, got {type(source).__name__}")
    _decode.check_decodable(source.config)
    return source.config


def _as_decoder(source, cdtype: str) -> Decoder:
    """A Decoder from a checked Decoder or Params (traced inside the jitted functions)."""
    if isinstance(source, Decoder):
        return source
    return _decode.make_decoder(_BK, source.config, _compute_arrays(source, cdtype))


def decode_state(dec: Decoder, batch: int) -> DecodeState:
    """The state of ``batch`` streams before any input (t = 0): zero history (K + 1, B, H),
    zero run sums (P, B, H), position 0.  A pytree."""
    if not isinstance(dec, Decoder):
        raise TypeError(f"decode_state expects a Decoder (from sgconv.jax.decoder(params)), "
                        f"got {type(dec).__name__}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1 (the number of streams), got {batch!r}")
    return _decode.empty_state(_BK, dec, batch)


def prefill(dec: Decoder | Params, u, *, transposed: bool = True):
    """(y, state): the layer on a prompt u (B, H, T) (or (B, T, H) with ``transposed=False``)
    by FFT, in u's layout and dtype, and the decoding state after it (a pytree).

    dec: a :class:`Decoder`, or Params (the coefficients are then computed in this call).
    ``transposed`` is static.  Works under jit.
    """
    transposed = _checks.check_bool("transposed", transposed)
    if isinstance(dec, Params):
        dec = as_jax_params(dec)
    u = _BK.asarray(u)
    config = _check_source(dec, _ops.compute_dtype(_checks.check_float(_BK, "u", u)))
    u = _checks.check_input(_BK, u, config.d_model, transposed)
    return _prefill_jit(dec, u, transposed)


@functools.partial(jax.jit, static_argnums=2)
def _prefill_jit(dec, u, transposed: bool):
    cdtype = _ops.compute_dtype(_BK.dtype_name(u))
    dec = _as_decoder(dec, cdtype)
    y, state = _decode.prefill(_BK, dec, _in_layout(u, transposed, cdtype))
    return _out_layout(y, u, transposed), state


def step(dec: Decoder | Params, state: DecodeState, u_t):
    """One decoding step, a pure function: (y_t (B, H), new state) for the next input u_t
    (B, H) of every stream.

    y_t equals column t of the layer on the whole sequence so far (t = state.position),
    computed from the P = O(d log K) run sums of each channel.  dec: a :class:`Decoder`
    (Params work too, but then the coefficients are recomputed on every call).  For O(P)
    per token, run it inside ``jax.lax.scan`` or ``jax.jit(step, donate_argnums=1)``.
    """
    if isinstance(dec, Params):
        dec = as_jax_params(dec)
    u_t = _BK.asarray(u_t)
    cdtype = _ops.compute_dtype(_checks.check_float(_BK, "u_t", u_t))
    config = _check_source(dec, cdtype)
    _decode.check_state(_BK, config, cdtype, state)
    _decode.check_step_input(_BK, config, state, u_t)
    return _step_jit(dec, state, u_t)


@jax.jit
def _step_jit(dec, state, u_t):
    cdtype = _ops.compute_dtype(_BK.dtype_name(u_t))
    y, state = _decode.step(_BK, _as_decoder(dec, cdtype), state, u_t.astype(cdtype))
    return y.astype(u_t.dtype), state
