"""Conformance of step-by-step decoding: prefill a prefix, step to the end, equal the layer.

:func:`check_decoding` is a property in the style of properties.py (``check(name, ex)``,
AssertionError with the reproduction): for a causal example, ``sgconv.prefill`` of a
random prefix u[..., :T0] (or ``sgconv.decode_state`` when T0 = 0) and then
``sgconv.step`` for t = T0 .. L-1 (on JAX: ``sgconv.jax``'s functions, the steps in a
``lax.scan``) must give, at every t, the float64 reference layer on
the whole sequence, within the tolerance rule.

:func:`check_long_horizon` decodes L = 65536 float32 steps of a layer whose kernel has
K = 65536 taps (P = 713 runs) and checks two things at every t: the error is within the
tolerance rule, and it does not drift: the largest error/bound ratio over the last
quarter of the steps is at most twice the largest over the first quarter.  Running sums
kept in float32 fail the second check (conformance/meta/test_decoding_meta.py shows it).

Why the layer's bound (tolerance.layer_bound) applies to stepping.  The causal layer's
output at t depends on u[..., :t+1] only, so column t of the layer on the whole sequence
is the exact value a step must give.  A step computes it from run sums that are exact
(float64 sums of float32 inputs) or compensated (double words), with run coefficients
computed from the float32 weights in the wider precision, so its error before the GELU is
at most the rounding of z_t to the compute dtype, eps |z_t|, plus float64 rounding, plus
(without float64, JAX's default) a float32 contraction of 2P products, about
eps log2(2P) sum |alpha S| + |beta M| <= 2.2 eps log2(2P) ||u|| ||k||.  Rule part 1 allows
each element C_FFT eps log2(n) (||u|| ||k_D|| + ||z||) >= 4 * 17 eps ||u|| ||k_D|| at these
lengths, and |z_t| <= ||u|| ||k_D|| (Cauchy-Schwarz, k_D the kernel with |D| at lag 0),
so the convolution part of the bound covers the step's error; the GELU and the mixing
linear are the same pointwise operations as the layer's (parts 4).  The prefill's
outputs are the FFT layer itself on the prefix and are held to the bound of the prefix.
"""

from __future__ import annotations

import numpy as np

from . import reference
import sgconv

from . import oracle, tolerance
from .examples import Example
from .properties import NotApplicable, _np, _random, _rng, make_params, session

__all__ = ["check_decoding", "check_long_horizon", "decode_sequence", "fft_conv",
           "LONG_EXAMPLE"]


def _scan(dec, state, xs):
    """sgconv.jax.step over xs (n, B, H) as one compiled ``lax.scan``: (state, ys)."""
    import jax
    import sgconv.jax as sgj

    def body(s, x):
        y, s = sgj.step(dec, s, x)
        return s, y

    return jax.lax.scan(body, state, xs)


def _steps(bk, name: str, dec, state, u, scan: bool = False):
    """Step through u (B, H, n) from ``state``; returns the outputs (B, H, n) as float64.

    ``scan``: on JAX, run the steps as one ``lax.scan`` of ``sgconv.jax.step`` (its
    idiom; eagerly, every operation of every step is dispatched and compiled on its
    own: 3 s per drawn example instead of 0.3 s); otherwise loop over ``sgconv.step``
    (see :func:`_api`).
    """
    if scan and name == "jax":
        import jax
        xs = bk.asarray(np.ascontiguousarray(np.moveaxis(u, -1, 0)))
        state, ys = jax.jit(_scan)(dec, state, xs)
        return np.moveaxis(_np(bk, ys), 0, -1), state
    ys = [np.zeros(u.shape[:-1] + (0,))]
    for t in range(u.shape[-1]):
        y, state = sgconv.step(dec, state, bk.asarray(np.ascontiguousarray(u[..., t])))
        ys.append(_np(bk, y)[..., None])
    return np.concatenate(ys, axis=-1), state


def _api(name: str):
    """The decoding functions to check: ``sgconv``'s on the active backend, or, on JAX,
    ``sgconv.jax``'s (its idiom: jitted once, where the generic functions would dispatch
    and compile every operation on its own, 100 compilations per drawn example;
    tests/test_decode.py runs the generic ones on JAX too)."""
    if name == "jax":
        import sgconv.jax as sgj
        return sgj
    return sgconv


def decode_sequence(bk, name: str, params, u, prefix: int, transposed: bool = True):
    """Prefill u[..., :prefix] (or start empty when prefix = 0), then step to the end.

    u: (B, H, L) NumPy in the compute dtype.  Returns (y (B, H, L) float64, final state).
    """
    api = _api(name)
    dec = api.decoder(params)
    B = u.shape[0]
    parts = []
    if prefix:
        x = u[..., :prefix] if transposed else u[..., :prefix].swapaxes(1, 2)
        y0, state = api.prefill(dec, bk.asarray(np.ascontiguousarray(x)), transposed=transposed)
        y0 = _np(bk, y0)
        parts.append(y0 if transposed else y0.swapaxes(1, 2))
    else:
        state = api.decode_state(dec, B)
    ys, state = _steps(bk, name, dec, state, u[..., prefix:], scan=True)
    parts.append(ys)
    return np.concatenate(parts, axis=-1), state


def check_decoding(name: str, ex: Example) -> None:
    """Prefill of a random prefix then steps equal the layer at every t (causal layers).

    The prefix length T0 is drawn from 0 .. L (0: start from ``decode_state``); the
    prompt is given in the example's layout.  The streams of the batch are independent
    and advance together.
    """
    if ex.bidirectional:
        raise NotApplicable("bidirectional layers cannot be decoded step by step")
    rng = _rng(ex, 20)
    u = _random(rng, (ex.batch, ex.d_model, ex.length), ex.dtype)    # (B, H, L)
    T0 = int(rng.integers(0, ex.length + 1))
    with session(name, ex.dtype) as bk:
        params = make_params(bk, name, ex)
        state = oracle.params_state(params, bk)
        y, final = decode_sequence(bk, name, params, u, T0, ex.transposed)
        position = int(_np(bk, final.position))
    expected = reference.layer(state, u, False, True, ex.interpolation)  # (B, H, L)
    where = (f"[check_decoding] prefill of T0={T0} of L={ex.length} inputs, then steps\n  "
             f"{ex.describe(name, 'check_decoding')}\n  (check_decoding lives in "
             f"conformance.decoding: from conformance.decoding import check_decoding)")
    if T0:
        bound = tolerance.layer_bound(state, ex.config, u[..., :T0], ex.dtype)
        tolerance.assert_close(y[..., :T0], expected[..., :T0], bound,
                               f"{where}\n  prefill outputs == reference.layer")
    if T0 < ex.length:
        bound = tolerance.layer_bound(state, ex.config, u, ex.dtype)[..., T0:]
        tolerance.assert_close(y[..., T0:], expected[..., T0:], bound,
                               f"{where}\n  step outputs == reference.layer on the whole "
                               f"sequence, column by column")
    if position != ex.length:
        raise AssertionError(f"{where}\n  the state has consumed {position} inputs, "
                             f"expected {ex.length}")


# --- the long horizon ----------------------------------------------------------------------------

#: L = K = 65536 (d = 64, N = 11, P = 713 runs), float32, trained weights, two channels.
LONG_EXAMPLE = Example(d_model=2, channels=1, kernel_dim=64, n_scales=None, l_max=65536,
                       length=65536, batch=1, dtype="float32", seed=14)
LONG_PREFIX = 1000


def fft_conv(u, k, D, bidirectional=False):
    """The causal convolution in float64 by numpy.fft (the oracle's sums at L = 65536 would
    take O(L^2)): y = irfft(rfft(u, 2L) rfft(k, 2L))[:L] + D u, (B, C, H, L)."""
    if bidirectional:
        raise ValueError("fft_conv is the causal oracle only")
    L = u.shape[-1]
    n = 2 * L
    y = np.fft.irfft(np.fft.rfft(u, n)[:, None] * np.fft.rfft(k[..., :L], n), n)[..., :L]
    return y + D[None, :, :, None] * u[:, None]


def _fft_layer(state, u):
    """reference.layer's pointwise parts on fft_conv: (B, H, L) float64."""
    L = u.shape[-1]
    z = fft_conv(u, reference.kernel(state, L), state["D"])        # (B, C, H, L)
    B, C, H, _ = z.shape
    y = reference.gelu(z.reshape(B, C * H, L))
    return (np.einsum("oi,bil->bol", state["output_linear.weight"], y)
            + state["output_linear.bias"][None, :, None])


def long_horizon_ratios(name: str, make_decoder=None, ex: Example = LONG_EXAMPLE,
                        prefix: int = LONG_PREFIX) -> np.ndarray:
    """max over (b, h) of |error| / bound at every t >= prefix: (L - prefix,).

    make_decoder(bk, params) -> (decoder, state after the prefix) replaces the library's
    decoder (the meta-tests plant drifting ones); default: sgconv.decoder + prefill.
    """
    rng = _rng(ex, 21)
    u = _random(rng, (ex.batch, ex.d_model, ex.length), ex.dtype)
    with session(name, ex.dtype) as bk:
        params = make_params(bk, name, ex)
        state = oracle.params_state(params, bk)
        if make_decoder is None:
            api = _api(name)
            dec = api.decoder(params)
            _, start = api.prefill(dec, bk.asarray(u[..., :prefix]))
        else:
            dec, start = make_decoder(bk, params, u[..., :prefix])
        y, _ = _steps(bk, name, dec, start, u[..., prefix:], scan=True)
    expected = _fft_layer(state, u.astype(np.float64))[..., prefix:]
    bound = tolerance.layer_bound(state, ex.config, u, ex.dtype, exact_conv=fft_conv)
    err = np.abs(y - expected)
    if not np.all(np.isfinite(err)):
        raise AssertionError(f"[check_long_horizon] backend={name!r}: non-finite outputs")
    return (err / bound[..., prefix:]).max(axis=(0, 1))


def check_long_horizon(name: str, make_decoder=None) -> dict:
    """L = 65536 float32 steps stay within the tolerance rule and do not drift.

    Returns the summary (largest error/bound ratio overall, in the first and the last
    quarter of the steps).
    """
    ratio = long_horizon_ratios(name, make_decoder)
    n = ratio.shape[0]
    early, late = float(ratio[: n // 4].max()), float(ratio[-(n // 4):].max())
    summary = {"max": float(ratio.max()), "at": int(ratio.argmax()) + LONG_PREFIX,
               "first quarter": early, "last quarter": late}
    what = (f"[check_long_horizon] backend={name!r}, {LONG_EXAMPLE.describe(name)}, prefix "
            f"{LONG_PREFIX}, then {n} steps: {summary}")
    if not summary["max"] <= 1.0:
        raise AssertionError(f"{what}\n  an output left the tolerance rule (ratio > 1)")
    if not late <= 2.0 * early:
        raise AssertionError(f"{what}\n  the error drifts: the last quarter's largest "
                             f"error/bound is more than twice the first quarter's")
    return summary
