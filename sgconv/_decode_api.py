"""Step-by-step decoding on the active backend: decoder, decode_state, prefill, step.

::

    dec = sgconv.decoder(params)                 # run coefficients, computed once
    y, state = sgconv.prefill(dec, prompt)       # (B, H, T) by FFT, and the state after it
    y_t, state = sgconv.step(dec, state, u_t)    # (B, H) -> (B, H), O(P) = O(d log K) each

The math is :mod:`sgconv._decode`, run by the active backend.
"""

from __future__ import annotations

from . import _checks, _decode, _ops
from ._api import _arrays, _check_params
from ._decode import DecodeState, Decoder
from ._params import Params
from ._switch import backend as _backend

__all__ = ["Decoder", "DecodeState", "decoder", "decode_state", "prefill", "step"]


def decoder(params: Params, *, dtype: str | None = None) -> Decoder:
    """A causal layer made ready for step-by-step decoding on the active backend.

    Computes once the run coefficients alpha, beta (P, C, H) of the kernel
    (k[a_p + r] = alpha_p + beta_p r on run p; P = 2d + (N-2)(d+1) runs for linear
    interpolation) in float64 for a float32 layer, or, with ``learnable_decay``, keeps
    the kernel (K, C, H) for an exact O(K) dot product per token (that decay is not
    piecewise affine).  dtype: the compute precision (default: the parameters';
    float32 for float16/bfloat16).  A bidirectional layer raises ValueError: its
    anti-causal half reads inputs a step does not have yet.
    """
    _check_params(params)
    _decode.check_decodable(params.config)
    bk = _backend()
    cdtype = _ops.compute_dtype(dtype if dtype is not None else
                                bk.dtype_name(bk.asarray(params.D)))
    if cdtype not in _checks.FLOAT_DTYPES:
        raise TypeError(f"dtype must be one of {', '.join(_checks.FLOAT_DTYPES)}, got {dtype!r}")
    return _decode.make_decoder(bk, params.config, _arrays(bk, params, cdtype))


def _config_of(source):
    """The configuration of a Decoder or Params (TypeError for anything else)."""
    if not isinstance(source, Decoder):
        if not isinstance(source, Params):
            raise TypeError(f"expected a sgconv.Decoder (from sgconv.decoder(params)) or "
                            f"sgconv.Params, got {type(source).__name__}")
    return source.config


def _decoder_for(bk, source, cdtype: str) -> Decoder:
    """source as a Decoder computing in ``cdtype`` (a Params is made into one)."""
    if isinstance(source, Decoder):
        if not bk.is_native(source.arrays["out_weight"]):
            raise TypeError(f"this Decoder holds arrays of another framework "
                            f"({type(source.arrays['out_weight']).__name__}) than the active "
                            f"backend {bk.name!r}; make it with sgconv.decoder(params) while "
                            f"{bk.name!r} is active")
        want = bk.dtype_name(source.arrays["out_weight"])
        if want != cdtype:
            raise TypeError(f"this Decoder computes in {want}, but the input computes in "
                            f"{cdtype}; pass {want} input, or make the decoder with "
                            f"sgconv.decoder(params, dtype='{cdtype}')")
        return source
    _check_params(source)
    _decode.check_decodable(source.config)
    return _decode.make_decoder(bk, source.config, _arrays(bk, source, cdtype))


def decode_state(dec: Decoder, batch: int) -> DecodeState:
    """The state of ``batch`` streams before any input (t = 0), to decode without a prompt.

    Shapes: history (K + 1, B, H) in the compute dtype; run sums (2, P - T, B, H), [S; M]
    of the runs longer than one tap (float64 for a float32 layer; compensated hi/lo words
    where no wider type exists); ``state.nbytes`` is its memory.
    """
    if not isinstance(dec, Decoder):
        raise TypeError(f"decode_state expects a Decoder (from sgconv.decoder(params)), got "
                        f"{type(dec).__name__}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1 (the number of streams), got {batch!r}")
    return _decode.empty_state(_backend(), dec, batch)


def prefill(dec: Decoder | Params, u, *, transposed: bool = True):
    """Run a prompt u (B, H, T) (or (B, T, H) with ``transposed=False``) through the layer by
    FFT and return (y, state): the outputs in u's layout and dtype, and the state after the
    prompt, from which :func:`step` continues at t = T.

    dec: a :class:`Decoder`, or Params (a decoder is made for this call).
    """
    transposed = _checks.check_bool("transposed", transposed)
    bk = _backend()
    u = _checks.check_input(bk, u, _config_of(dec).d_model, transposed)
    dtype = bk.dtype_name(u)
    cdtype = _ops.compute_dtype(dtype)
    dec = _decoder_for(bk, dec, cdtype)
    x = bk.cast(u if transposed else u.swapaxes(-1, -2), cdtype)   # (B, H, T)
    y, state = _decode.prefill(bk, dec, x)
    y = bk.cast(y, dtype)
    return (y if transposed else y.swapaxes(-1, -2)), state


def step(dec: Decoder | Params, state: DecodeState, u_t):
    """One step: (y_t, state) for the next input u_t (B, H) of every stream.

    y_t (B, H) equals column t of the layer applied to the whole sequence so far, t =
    the number of inputs the state has consumed; computed from P = O(d log K) run sums
    per channel (O(K) for learnable decay).  On NumPy, PyTorch and CuPy the state's input
    history is updated in place: keep using the state returned.  dec: a
    :class:`Decoder` (Params also work, but rebuild the coefficients on every call).
    """
    _config_of(dec)
    bk = _backend()
    u_t = bk.asarray(u_t)
    dtype = _checks.check_float(bk, "u_t", u_t)
    dec = _decoder_for(bk, dec, _ops.compute_dtype(dtype))
    cdtype = _ops.compute_dtype(dtype)
    _decode.check_state(bk, dec.config, cdtype, state)
    u_t = _decode.check_step_input(bk, dec.config, state, u_t)
    y, state = _decode.step(bk, dec, state, bk.cast(u_t, cdtype))
    return bk.cast(y, dtype), state
