"""The conformance properties, as plain functions ``check_*(backend_name, example)``.

Each one runs sgconv's public API on backend ``backend_name`` (``sgconv.using``,
``sgconv.init`` / ``kernel`` / ``conv`` / ``apply``, ``Params.to``, the checkpoint
functions), compares with the float64 reference or with a law the operator must obey,
and raises AssertionError with the backend, dtype, shapes, seed and the call that
reproduces it.  The Hypothesis tests (test_properties.py) call them with drawn
:class:`~conformance.examples.Example` s; the meta-tests (meta/) call them with broken
backends.  A property that says nothing about an example raises :class:`NotApplicable`.

Every random array is drawn from the example's seed and rounded to its dtype before
either side sees it, so the backend and the reference start from the same numbers and
every difference is the backend's rounding error, held to the bounds of
conformance/tolerance.py.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile

import numpy as np
from scipy import stats

import reference
import sgconv

from . import frameworks, oracle, tolerance
from .examples import Example

__all__ = ["PROPERTIES", "NotApplicable", "session", "make_params"] + [
    "check_kernel", "check_kernel_blocks", "check_conv", "check_layer", "check_causality",
    "check_reach", "check_linearity", "check_shift", "check_impulse", "check_batch",
    "check_nonfinite", "check_dropout", "check_init", "check_init_values",
    "check_dtypes_shapes", "check_transfer", "check_gradients", "check_framework_layers",
    "Example"]


class NotApplicable(Exception):
    """The property says nothing about this example (e.g. gradients of a non-autodiff backend)."""


# --- shared helpers -------------------------------------------------------------------------

@contextlib.contextmanager
def session(name: str, dtype: str):
    """Backend ``name`` active, with what ``dtype`` needs on it (JAX float64: x64 on)."""
    with sgconv.using(name) as bk, frameworks.precision(bk, dtype):
        yield bk


def _rng(ex: Example, salt: int) -> np.random.Generator:
    return np.random.default_rng([ex.seed, salt])


def _random(rng, shape, dtype: str) -> np.ndarray:
    """Standard normal numbers rounded to ``dtype`` (both sides get exactly these)."""
    return rng.standard_normal(shape).astype(dtype)


def _np(bk, x) -> np.ndarray:
    return oracle.to_float64(bk, x)


def _where(check: str, name: str, ex: Example, what: str) -> str:
    return f"[{check}] {what}\n  {ex.describe(name, check)}"


def _close(check, name, ex, actual, expected, bound, what):
    tolerance.assert_close(actual, expected, bound, _where(check, name, ex, what))


def _valid_block(ex: Example, taps: int):
    """ex.block_size if the planner accepts it for a kernel of ``taps`` taps, else None."""
    if not ex.block_size:
        return ex.block_size
    anti = min(taps, ex.length - 1) if ex.bidirectional else 0
    return ex.block_size if ex.block_size >= max(taps - 1, anti, 1) else None


def make_params(bk, name: str, ex: Example, trained: bool = True):
    """Parameters on backend ``name`` in ex.dtype: ``sgconv.init`` with ex.seed, then, when
    ``trained``, sub-kernels and D moved away from their initial values with Z kept as
    stored (as after training: Z is state fixed at init, so a backend that recomputes it
    from the current weights gives another kernel)."""
    params = sgconv.init(ex.config, seed=ex.seed, dtype=ex.dtype, backend=name)
    if not trained:
        return params
    rng = _rng(ex, 1)
    kernels = tuple(bk.asarray(0.5 * _np(bk, w) + rng.standard_normal(tuple(w.shape)),
                               dtype=ex.dtype) for w in params.kernels)
    D = bk.asarray(_np(bk, params.D) + rng.standard_normal(tuple(params.D.shape)), dtype=ex.dtype)
    return params.replace(kernels=kernels, D=D)


def _conv_inputs(ex: Example, rng, taps: int | None = None):
    """u (B, H, L), k (C', H, Lk), D (C, H) or None: random, in ex.dtype."""
    taps = ex.taps if taps is None else taps
    u = _random(rng, (ex.batch, ex.d_model, ex.length), ex.dtype)
    k = _random(rng, (ex.kernel_rows, ex.d_model, taps), ex.dtype)
    D = _random(rng, (ex.channels, ex.d_model), ex.dtype) if ex.skip else None
    return u, k, D


def _conv(bk, ex: Example, u, k, D, block_size="example"):
    """sgconv.conv on native copies of u, k, D; the result as float64 (B, C, H, L)."""
    block = _valid_block(ex, k.shape[-1]) if block_size == "example" else block_size
    y = sgconv.conv(bk.asarray(u), bk.asarray(k), None if D is None else bk.asarray(D),
                    bidirectional=ex.bidirectional, block_size=block)
    return _np(bk, y)


def _conv_bound(ex: Example, u, k, D, block_size="example"):
    block = _valid_block(ex, k.shape[-1]) if block_size == "example" else block_size
    return tolerance.conv_bound(u, k, D, ex.bidirectional, ex.dtype, blocks=block != 0)


def _apply(bk, ex: Example, params, u):
    """sgconv.apply on u (B, H, L) given in ex's layout; the result as float64 (B, H, L)."""
    x = u if ex.transposed else u.swapaxes(1, 2)
    y = _np(bk, sgconv.apply(params, bk.asarray(np.ascontiguousarray(x)),
                             transposed=ex.transposed, block_size=ex.block_size))
    return y if ex.transposed else y.swapaxes(1, 2)


def _layer_bound(ex: Example, state, u):
    return tolerance.layer_bound(state, ex.config, u, ex.dtype, blocks=ex.block_size != 0)


def _layout(ex: Example, u):
    """u (B, H, L) in ex's layout, contiguous ((B, L, H) when not transposed)."""
    return np.ascontiguousarray(u if ex.transposed else u.swapaxes(1, 2))


def _bhl(bk, ex: Example, y):
    """A layer output in ex's layout as float64 (B, H, L)."""
    y = _np(bk, y)
    return y if ex.transposed else y.swapaxes(1, 2)


# --- the kernel -------------------------------------------------------------------------------

def check_kernel(name: str, ex: Example) -> None:
    """sgconv.kernel(params, L) equals the reference kernel Cat(S)[..., :L] / Z.

    With trained weights and the stored Z, for L below, at and above K (zeros beyond K).
    """
    with session(name, ex.dtype) as bk:
        params = make_params(bk, name, ex)
        state = oracle.params_state(params, bk)
        k = _np(bk, sgconv.kernel(params, ex.length))
    expected = reference.kernel(state, ex.length, ex.interpolation)       # (C', H, L)
    _close("check_kernel", name, ex, k, expected,
           tolerance.kernel_bound(state, ex.config, ex.length, ex.dtype),
           "sgconv.kernel(params, L) == reference.kernel(state, L) (stored Z, zero beyond K)")


def check_kernel_blocks(name: str, ex: Example) -> None:
    """Per scale i, the kernel's block i is m^(N-1-i) * Up_{s_i}(w_i) / Z (SPEC steps 1-4).

    Learnable decay: (t+1)^(-decay) * Up_{s_i}(w_i) / Z.  Block i spans
    [d*s_i, 2*d*s_i) for i >= 1 (scale 0: [0, d)), s_i = 2^max(0, i-1).
    """
    cfg = ex.config
    K, N, d = cfg.kernel_length, cfg.num_scales, cfg.kernel_dim
    with session(name, ex.dtype) as bk:
        params = make_params(bk, name, ex)
        state = oracle.params_state(params, bk)
        k = _np(bk, sgconv.kernel(params, K))                              # (C', H, K)
    ws = oracle.sub_kernels(state)
    Z = state["kernel_norm"][..., 0]                                        # (C', H)
    bound = tolerance.kernel_bound(state, cfg, K, ex.dtype)
    m = np.asarray(state["multiplier"], dtype=np.float64).reshape(-1)
    offset = 0
    for i in range(N):
        s = 2 ** max(0, i - 1)
        n = d * s
        if cfg.learnable_decay:
            t = np.arange(offset, offset + n, dtype=np.float64)
            factor = (t[None, :] + 1.0) ** (-state["decay"][:, None])     # (H, n)
            rule = "(t+1)^(-decay) * Up(w_i) / Z"
        else:
            factor = np.broadcast_to(m, (ex.d_model,))[:, None] ** (N - 1 - i)  # (H, 1)
            rule = f"m^(N-1-i) = m^{N - 1 - i} * Up(w_i) / Z"
        expected = factor[None] * reference.upsample(ws[i], s, ex.interpolation) / Z[..., None]
        _close("check_kernel_blocks", name, ex, k[..., offset:offset + n], expected,
               bound[..., offset:offset + n],
               f"scale i={i} of N={N}: k[..., {offset}:{offset + n}] == {rule} (s_i={s})")
        offset += n


# --- the convolution and the layer -------------------------------------------------------------

def check_conv(name: str, ex: Example) -> None:
    """sgconv.conv(u, k, D) equals the reference's direct sums (linear, not circular)."""
    u, k, D = _conv_inputs(ex, _rng(ex, 2))
    with session(name, ex.dtype) as bk:
        y = _conv(bk, ex, u, k, D)
    _close("check_conv", name, ex, y, reference.conv(u, k, D, ex.bidirectional),
           _conv_bound(ex, u, k, D),
           f"sgconv.conv(u, k, D={'given' if D is not None else None}) == reference.conv")


def check_layer(name: str, ex: Example) -> None:
    """sgconv.apply equals reference.layer; its return_kernel equals the reference kernel."""
    u = _random(_rng(ex, 3), (ex.batch, ex.d_model, ex.length), ex.dtype)
    with session(name, ex.dtype) as bk:
        params = make_params(bk, name, ex)
        state = oracle.params_state(params, bk)
        x = u if ex.transposed else u.swapaxes(1, 2)
        y, k = sgconv.apply(params, bk.asarray(np.ascontiguousarray(x)), transposed=ex.transposed,
                            block_size=ex.block_size, return_kernel=True)
        y, k = _np(bk, y), _np(bk, k)
    expected = reference.layer(state, x, ex.bidirectional, ex.transposed, ex.interpolation)
    bound = _layer_bound(ex, state, u)
    _close("check_layer", name, ex, y, expected, bound if ex.transposed else bound.swapaxes(1, 2),
           f"sgconv.apply(params, u, transposed={ex.transposed}) == reference.layer")
    _close("check_layer", name, ex, k, reference.kernel(state, ex.length, ex.interpolation),
           tolerance.kernel_bound(state, ex.config, ex.length, ex.dtype),
           "the kernel from sgconv.apply(..., return_kernel=True) == reference.kernel")


# --- laws of the operator -----------------------------------------------------------------------

def _first_unaffected(ex: Example, taps: int, rng) -> tuple[int, int] | None:
    """(t0, limit): u changed from t0 on must leave y[..., :limit] unchanged, limit >= 1.

    Causal: limit = t0.  Bidirectional: the anti-causal half reads a = min(Lk, L-1)
    samples ahead, so limit = t0 - a.  None when no such t0 exists.
    """
    reach = min(taps, ex.length - 1) if ex.bidirectional else 0
    if reach + 1 >= ex.length:
        return None
    t0 = int(rng.integers(reach + 1, ex.length))
    return t0, t0 - reach


def check_causality(name: str, ex: Example) -> None:
    """Changing u at and after t0 leaves y unchanged before t0 (causal) or before t0 - a
    (bidirectional, a anti-causal taps), for the convolution and the whole layer."""
    rng = _rng(ex, 4)
    u, k, D = _conv_inputs(ex, rng)
    conv_cut = _first_unaffected(ex, ex.taps, rng)
    layer_cut = _first_unaffected(ex, min(ex.length, ex.config.kernel_length), rng)
    if conv_cut is None and layer_cut is None:
        raise NotApplicable("no output lies before the reach of a change (L too short)")
    with session(name, ex.dtype) as bk:
        if conv_cut is not None:
            t0, limit = conv_cut
            u2 = u.copy()
            u2[..., t0:] = _random(rng, u2[..., t0:].shape, ex.dtype)
            y1, y2 = _conv(bk, ex, u, k, D), _conv(bk, ex, u2, k, D)
            bound = _conv_bound(ex, u, k, D) + _conv_bound(ex, u2, k, D)
            _close("check_causality", name, ex, y2[..., :limit], y1[..., :limit], bound,
                   f"conv: changing u[..., {t0}:] changed y[..., :{limit}] (reach "
                   f"{t0 - limit} taps ahead)")
        if layer_cut is not None:
            t0, limit = layer_cut
            params = make_params(bk, name, ex)
            state = oracle.params_state(params, bk)
            u2 = u.copy()
            u2[..., t0:] = _random(rng, u2[..., t0:].shape, ex.dtype)
            y1, y2 = _apply(bk, ex, params, u), _apply(bk, ex, params, u2)
            bound = _layer_bound(ex, state, u) + _layer_bound(ex, state, u2)
            _close("check_causality", name, ex, y2[..., :limit], y1[..., :limit],
                   bound[..., :limit],
                   f"layer: changing u[..., {t0}:] changed y[..., :{limit}]")


def check_reach(name: str, ex: Example) -> None:
    """A unit tap moves a unit impulse exactly: causal tap j from t0 to t0 + j, anti-causal
    tap j from t0 to t0 - j - 1 (one step further than its index, SPEC), and nothing
    wraps around when the target lies outside [0, L)."""
    rng = _rng(ex, 5)
    L, H, C, taps = ex.length, ex.d_model, ex.channels, ex.taps
    cases = []
    j, t0 = int(rng.integers(0, taps)), int(rng.integers(0, L))
    cases.append(("causal", j, t0))                                       # target t0 + j
    j = taps - 1
    cases.append(("causal", j, int(rng.integers(max(L - j - 1, 0), L))))  # often beyond L
    if ex.bidirectional and L >= 2:
        a = min(taps, L - 1)
        j = int(rng.integers(0, a))
        cases.append(("anti-causal", j, int(rng.integers(j + 1, L))))    # target t0 - j - 1
        j = int(rng.integers(0, taps))
        cases.append(("anti-causal", j, int(rng.integers(0, min(j, L - 1) + 1))))  # before 0
    with session(name, ex.dtype) as bk:
        for half, j, t0 in cases:
            k = np.zeros((ex.kernel_rows, H, taps), dtype=ex.dtype)
            rows = slice(0, C) if half == "causal" else slice(C, 2 * C)
            k[rows, :, j] = 1
            u = np.zeros((1, H, L), dtype=ex.dtype)
            u[..., t0] = 1
            target = t0 + j if half == "causal" else t0 - j - 1
            expected = np.zeros((1, C, H, L))
            if 0 <= target < L:
                expected[..., target] = 1.0
            y = _conv(bk, ex, u, k, None)
            _close("check_reach", name, ex, y, expected, _conv_bound(ex, u, k, None),
                   f"{half} tap {j} must carry an impulse at t={t0} to t={target}"
                   + ("" if 0 <= target < L else " (outside [0, L): no output at all)"))


def check_linearity(name: str, ex: Example) -> None:
    """conv(a u1 + b u2) = a conv(u1) + b conv(u2), and likewise in (k, D) jointly.

    The combined input is rounded to the dtype; the exact effect of that rounding
    (reference.conv of the rounding difference) is added to the expectation.
    """
    rng = _rng(ex, 6)
    u1, k1, D1 = _conv_inputs(ex, rng)
    u2, k2, D2 = _conv_inputs(ex, rng)
    a, b = rng.uniform(-2.0, 2.0, size=2)
    u3 = (a * u1.astype(np.float64) + b * u2).astype(ex.dtype)
    du = u3 - (a * u1.astype(np.float64) + b * u2)                        # rounding of u3
    k3 = (a * k1.astype(np.float64) + b * k2).astype(ex.dtype)
    dk = k3 - (a * k1.astype(np.float64) + b * k2)
    D3 = dD = None
    if D1 is not None:
        D3 = (a * D1.astype(np.float64) + b * D2).astype(ex.dtype)
        dD = D3 - (a * D1.astype(np.float64) + b * D2)
    with session(name, ex.dtype) as bk:
        y1, y2, y3 = (_conv(bk, ex, x, k1, D1) for x in (u1, u2, u3))
        bound = (_conv_bound(ex, u3, k1, D1) + abs(a) * _conv_bound(ex, u1, k1, D1)
                 + abs(b) * _conv_bound(ex, u2, k1, D1))
        _close("check_linearity", name, ex, y3,
               a * y1 + b * y2 + reference.conv(du, k1, None, ex.bidirectional), bound,
               f"conv(a u1 + b u2) == a conv(u1) + b conv(u2), a={a:.4g}, b={b:.4g}")
        z1, z2, z3 = _conv(bk, ex, u1, k1, D1), _conv(bk, ex, u1, k2, D2), _conv(bk, ex, u1, k3, D3)
        bound = (_conv_bound(ex, u1, k3, D3) + abs(a) * _conv_bound(ex, u1, k1, D1)
                 + abs(b) * _conv_bound(ex, u1, k2, D2))
        _close("check_linearity", name, ex, z3,
               a * z1 + b * z2 + reference.conv(u1, dk, dD, ex.bidirectional), bound,
               f"conv(u, a k1 + b k2, a D1 + b D2) == a conv(u, k1, D1) + b conv(u, k2, D2), "
               f"a={a:.4g}, b={b:.4g}")


def check_shift(name: str, ex: Example) -> None:
    """Delaying u by tau delays y by tau (u ends in tau zeros, so nothing is lost), for the
    convolution and the layer."""
    if ex.length < 2:
        raise NotApplicable("a sequence of length 1 cannot be shifted")
    rng = _rng(ex, 7)
    tau = int(rng.integers(1, ex.length))
    u, k, D = _conv_inputs(ex, rng)
    u[..., ex.length - tau:] = 0
    us = np.zeros_like(u)
    us[..., tau:] = u[..., :ex.length - tau]
    with session(name, ex.dtype) as bk:
        y, ys = _conv(bk, ex, u, k, D), _conv(bk, ex, us, k, D)
        bound = _conv_bound(ex, u, k, D) + _conv_bound(ex, us, k, D)
        _close("check_shift", name, ex, ys[..., tau:], y[..., :ex.length - tau], bound,
               f"conv(u delayed by {tau})[..., {tau}:] == conv(u)[..., :L-{tau}]")
        params = make_params(bk, name, ex)
        state = oracle.params_state(params, bk)
        y, ys = _apply(bk, ex, params, u), _apply(bk, ex, params, us)
        bound = _layer_bound(ex, state, u)[..., :ex.length - tau] + \
            _layer_bound(ex, state, us)[..., tau:]
        _close("check_shift", name, ex, ys[..., tau:], y[..., :ex.length - tau], bound,
               f"layer(u delayed by {tau})[..., {tau}:] == layer(u)[..., :L-{tau}]")


def check_impulse(name: str, ex: Example) -> None:
    """A unit impulse at t=p returns the kernel: y[t] = k0[t-p] (t >= p) + k1[p-t-1] (t < p),
    plus D at lag 0 (p = 0 when causal: exactly the kernel, with D added to its first tap)."""
    rng = _rng(ex, 8)
    L, H = ex.length, ex.d_model
    p = int(rng.integers(0, L)) if ex.bidirectional else 0
    with session(name, ex.dtype) as bk:
        params = make_params(bk, name, ex)
        k_native = sgconv.kernel(params, L)                                # (C', H, L)
        u = np.zeros((1, H, L), dtype=ex.dtype)
        u[..., p] = 1
        block = _valid_block(ex, L)
        y = _np(bk, sgconv.conv(bk.asarray(u), k_native, params.D,
                                bidirectional=ex.bidirectional, block_size=block))
        k, D = _np(bk, k_native), _np(bk, params.D)
    C = ex.channels
    expected = np.zeros((1, C, H, L))
    expected[0, ..., p:] = k[:C, :, :L - p]
    expected[0, ..., p] += D
    if ex.bidirectional and p > 0:
        expected[0, ..., :p] = k[C:, :, :p][..., ::-1]                     # t < p: k1[p-t-1]
    _close("check_impulse", name, ex, y, expected,
           tolerance.conv_bound(u, k, D, ex.bidirectional, ex.dtype, blocks=block != 0),
           f"conv(unit impulse at t={p}, kernel(params, L), D) == kernel around t={p} + D at lag 0")


def check_batch(name: str, ex: Example) -> None:
    """Each batch row is computed alone: apply(u)[b] == apply(u[b:b+1]), and permuting the
    batch permutes the output (the same for conv)."""
    rng = _rng(ex, 9)
    u, k, D = _conv_inputs(ex, rng)
    perm = rng.permutation(ex.batch)
    with session(name, ex.dtype) as bk:
        params = make_params(bk, name, ex)
        state = oracle.params_state(params, bk)
        y = _apply(bk, ex, params, u)
        bound = _layer_bound(ex, state, u)
        for b in range(ex.batch):
            _close("check_batch", name, ex, _apply(bk, ex, params, u[b:b + 1]), y[b:b + 1],
                   2 * bound[b:b + 1], f"layer: row {b} of the batch == the sequence alone")
        _close("check_batch", name, ex, _apply(bk, ex, params, u[perm]), y[perm], 2 * bound[perm],
               f"layer: permuting the batch by {perm.tolist()} permutes the output")
        yc = _conv(bk, ex, u, k, D)
        bound = _conv_bound(ex, u, k, D)
        for b in range(ex.batch):
            _close("check_batch", name, ex, _conv(bk, ex, u[b:b + 1], k, D), yc[b:b + 1],
                   2 * bound[b:b + 1], f"conv: row {b} of the batch == the sequence alone")


# --- non-finite input -----------------------------------------------------------------------

def _reached_times(t0: int, length: int, taps: int, bidirectional: bool) -> np.ndarray:
    """Boolean (L,): the outputs a non-finite u[t0] reaches through a kernel of ``taps`` taps.

    Causal lags s = 0..taps-1 reach t0 + s; the anti-causal half's a = min(taps, L-1) taps
    reach t0 - 1 .. t0 - a.  (SPEC's sums multiply u[t0] by exactly these taps.)
    """
    reached = np.zeros(length, dtype=bool)
    reached[t0:min(length, t0 + taps)] = True
    if bidirectional:
        a = min(taps, length - 1)
        reached[max(0, t0 - a):t0] = True
    return reached


def _assert_nonfinite(check, name, ex, y, mask, what):
    """Every element of y[mask] must be NaN or +-Inf."""
    finite = np.isfinite(y) & mask
    if finite.any():
        first = tuple(int(i) for i in np.argwhere(finite)[0])
        raise AssertionError(_where(check, name, ex,
                                    f"{what}: {int(finite.sum())} of {int(mask.sum())} outputs "
                                    f"the non-finite value reaches are finite (first at index "
                                    f"{first}: {y[first]!r}); NaN and Inf must propagate, never "
                                    f"be zeroed or clipped"))


def check_nonfinite(name: str, ex: Example) -> None:
    """NaN and +-Inf propagate exactly where the linear operator carries them.

    A non-finite u[b, h, t0] must make non-finite every conv output y[b, c, h, t] (all c)
    at the times its taps reach (t0 .. t0+Lk-1, and t0-a .. t0-1 when bidirectional), and
    every layer output out[b, o, t] (all o: the mixing linear reads every channel) at the
    times the layer's kernel reaches.  A non-finite tap j of kernel row (c, h) must make
    non-finite y[b, c, h, t] for every b at t >= j (anti-causal: t <= L-2-j).  Outputs the
    value cannot reach by any path (other channels and batch rows) equal the reference.
    Within a reached row, other times are not checked: an FFT spreads a NaN over its whole
    block (NaN * 0 = NaN in the frequency domain), so they may be NaN too.  GELU maps
    NaN and +-Inf to non-finite values (the erf form gives GELU(-Inf) = -Inf * 0 = NaN).
    """
    rng = _rng(ex, 13)
    B, H, L, C = ex.batch, ex.d_model, ex.length, ex.channels
    u, k, D = _conv_inputs(ex, rng)
    bad_values = (np.nan, np.inf, -np.inf)
    check = "check_nonfinite"
    # NumPy warns of the invalid operations that NaN and Inf are meant to undergo here
    with session(name, ex.dtype) as bk, np.errstate(invalid="ignore", over="ignore"):
        params = make_params(bk, name, ex)
        state = oracle.params_state(params, bk)
        for value in (np.nan, bad_values[int(rng.integers(1, 3))]):
            # --- a non-finite input sample, through the convolution and the layer
            b, h, t0 = int(rng.integers(B)), int(rng.integers(H)), int(rng.integers(L))
            clean = u.copy()
            clean[b, h, t0] = 0
            poisoned = clean.copy()
            poisoned[b, h, t0] = value
            y = _conv(bk, ex, poisoned, k, D)                                 # (B, C, H, L)
            mask = np.zeros(y.shape, dtype=bool)
            mask[b, :, h] = _reached_times(t0, L, ex.taps, ex.bidirectional)
            _assert_nonfinite(check, name, ex, y, mask,
                              f"conv with u[{b}, {h}, {t0}] = {value}")
            other = np.ones((B, C, H), dtype=bool)
            other[b, :, h] = False
            if other.any():
                _close(check, name, ex, y[other], reference.conv(clean, k, D, ex.bidirectional)
                       [other], _conv_bound(ex, clean, k, D)[other],
                       f"conv with u[{b}, {h}, {t0}] = {value}: rows it cannot reach")
            out = _apply(bk, ex, params, poisoned)                            # (B, H, L)
            mask = np.zeros(out.shape, dtype=bool)
            mask[b] = _reached_times(t0, L, min(L, ex.config.kernel_length), ex.bidirectional)
            _assert_nonfinite(check, name, ex, out, mask,
                              f"layer with u[{b}, {h}, {t0}] = {value}")
            if B > 1:
                keep = np.arange(B) != b
                x = clean if ex.transposed else clean.swapaxes(1, 2)
                expected = reference.layer(state, x, ex.bidirectional, ex.transposed,
                                           ex.interpolation)
                expected = expected if ex.transposed else expected.swapaxes(1, 2)
                _close(check, name, ex, out[keep], expected[keep],
                       _layer_bound(ex, state, clean)[keep],
                       f"layer with u[{b}, {h}, {t0}] = {value}: other batch rows")
        # --- a non-finite kernel tap, through the convolution
        a = min(ex.taps, L - 1) if ex.bidirectional else 0
        anti = a > 0 and bool(rng.integers(2))
        r = C + int(rng.integers(C)) if anti else int(rng.integers(C))
        h, j = int(rng.integers(H)), int(rng.integers(a if anti else ex.taps))
        value = bad_values[int(rng.integers(3))]
        clean = k.copy()
        clean[r, h, j] = 0
        poisoned = clean.copy()
        poisoned[r, h, j] = value
        y = _conv(bk, ex, u, poisoned, D)
    c = r - C if anti else r
    reached = np.zeros(L, dtype=bool)
    if anti:
        reached[:L - 1 - j] = True                                           # t <= L-2-j
    else:
        reached[j:] = True
    mask = np.zeros(y.shape, dtype=bool)
    mask[:, c, h] = reached
    half = "anti-causal" if anti else "causal"
    _assert_nonfinite(check, name, ex, y, mask, f"conv with {half} tap k[{r}, {h}, {j}] = {value}")
    other = np.ones((C, H), dtype=bool)
    other[c, h] = False
    if other.any():
        _close(check, name, ex, y[:, other], reference.conv(u, clean, D, ex.bidirectional)
               [:, other], _conv_bound(ex, u, clean, D)[:, other],
               f"conv with {half} tap k[{r}, {h}, {j}] = {value}: rows it cannot reach")


# --- dropout --------------------------------------------------------------------------------------

#: Dropout rates the property draws from, and its statistical rule: at least
#: DROPOUT_ELEMENTS observed elements, and a false-alarm probability DROPOUT_ALPHA per test.
DROPOUT_RATES = (0.1, 0.25, 0.5, 0.8)
DROPOUT_ELEMENTS = 4096
DROPOUT_ALPHA = 1e-9


def _dropout_params(bk, name: str, ex: Example):
    """Trained parameters whose mixing shows the dropped elements: out_weight = [I | 0 ...]
    (H, C*H) passes channel c = 0 of GELU's output through unchanged, out_bias = 0."""
    params = make_params(bk, name, ex)
    H, C = ex.d_model, ex.channels
    W = np.concatenate([np.eye(H), np.zeros((H, (C - 1) * H))], axis=1)   # (H, C*H)
    return params.replace(out_weight=bk.asarray(W, dtype=ex.dtype, like=params.D),
                          out_bias=bk.asarray(np.zeros(H), dtype=ex.dtype, like=params.D))


def _dropout_outputs(bk, ex: Example, params, u_train, u_eval, rate: float, seed: int):
    """(training outputs, evaluation outputs on u_eval): [(what, y (B, H, L) float64)]
    through every public API of the backend's framework; training with ``rate`` on u_train
    (u_eval, a prefix of its batch, for sgconv.apply on JAX, which compiles each operation
    for each new shape), evaluation with rate 0 or in evaluation mode.  u_*: (B, H, L)."""
    train, evaluation = [], []
    kw = dict(transposed=ex.transposed, block_size=ex.block_size)
    xt, xe = bk.asarray(_layout(ex, u_train)), bk.asarray(_layout(ex, u_eval))
    fw = frameworks.framework_of(bk)
    train.append((f"sgconv.apply(dropout={rate}, rng={seed})",
                  sgconv.apply(params, xe if fw == "jax" else xt, dropout=rate, rng=seed, **kw)))
    evaluation.append((f"sgconv.apply(dropout=0.0, rng={seed})",
                       sgconv.apply(params, xe, dropout=0.0, rng=seed, **kw)))
    if fw == "torch":
        import torch
        from sgconv.torch import SGConv
        module = SGConv.from_params(params, dropout=rate, dtype=getattr(torch, ex.dtype),
                                    device=xt.device, **kw)
        module.train()
        with torch.random.fork_rng(devices=[xt.device] if xt.is_cuda else []):
            torch.manual_seed(seed)
            train.append((f"sgconv.torch.SGConv(dropout={rate}).train()", module(xt).detach()))
        module.eval()
        with torch.no_grad():
            evaluation.append((f"sgconv.torch.SGConv(dropout={rate}).eval()", module(xe)))
    elif fw == "jax":
        import jax
        import sgconv.jax as sgj
        train.append((f"sgconv.jax.apply(dropout={rate}, key=key({seed}))",
                      sgj.apply(params, xt, dropout=rate, key=jax.random.key(seed), **kw)))
        evaluation.append((f"sgconv.jax.apply(dropout={rate}, deterministic=True)",
                           sgj.apply(params, xe, dropout=rate, deterministic=True, **kw)))
        layer = sgj.SGConv(params, dropout=rate, **kw)
        train.append((f"sgconv.jax.SGConv(dropout={rate})(u, key=key({seed + 1}))",
                      layer(xt, key=jax.random.key(seed + 1))))
        evaluation.append((f"sgconv.jax.SGConv(dropout={rate})(u, deterministic=True)",
                           layer(xe, deterministic=True)))
    return ([(what, _bhl(bk, ex, y)) for what, y in train],
            [(what, _bhl(bk, ex, y)) for what, y in evaluation])


def check_dropout(name: str, ex: Example) -> None:
    """Dropout (after GELU, before the mixing linear): in training each element is dropped
    with probability ``rate`` and every kept one is scaled by exactly 1/(1-rate), so the
    mean is preserved; with rate 0, and in evaluation, the layer is the reference layer.

    Checked through ``sgconv.apply(dropout=, rng=)`` on every backend, and
    ``sgconv.torch.SGConv(dropout=)`` in train()/eval(), ``sgconv.jax.apply(dropout=, key=,
    deterministic=)`` and ``sgconv.jax.SGConv``.  The mixing is [I | 0] with zero bias, so
    out[b, h, t] = dropout(GELU(z[b, 0, h, t])) shows each element (see
    :func:`_dropout_params`); the batch is enlarged to observe >= DROPOUT_ELEMENTS of them
    (evaluation, and sgconv.apply on JAX, use the example's own batch: see
    :func:`_dropout_outputs`).

    The statistical rule (false alarm <= DROPOUT_ALPHA per test, whatever the seed):
    every element must be either dropped (|y| <= its bound) or kept (|(1-rate) y - y_ref|
    <= bound + 2 eps |y_ref|, the scaling's rounding); elements that fit both (|y_ref| about
    the bound) are not counted.  Of the n counted, the number K dropped is
    Binomial(n, rate) for a correct backend, so K must lie in [F^-1(alpha/2),
    F^-1(1 - alpha/2)] of that binomial.  The sum of the n outputs, S = sum X_i with
    independent X_i in [0, y_i/(1-rate)] (or [y_i/(1-rate), 0]) and E S = sum y_i, obeys
    Hoeffding's inequality: |S - sum y_i| <= sqrt(ln(2/alpha)/2 sum (y_i/(1-rate))^2),
    plus the rounding of the y_i.
    """
    rng = _rng(ex, 14)
    H, L = ex.d_model, ex.length
    rate = DROPOUT_RATES[int(rng.integers(len(DROPOUT_RATES)))]
    seed = int(rng.integers(2 ** 31))
    B = max(ex.batch, -(-DROPOUT_ELEMENTS // (H * L)))
    u = _random(rng, (B, H, L), ex.dtype)
    u_eval = u[:ex.batch]                      # the example's own shape (compiled already)
    check = "check_dropout"
    with session(name, ex.dtype) as bk:
        params = _dropout_params(bk, name, ex)
        state = oracle.params_state(params, bk)
        train, evaluation = _dropout_outputs(bk, ex, params, u, u_eval, rate, seed)
    y_ref_all = reference.layer(state, u, ex.bidirectional, True, ex.interpolation)  # (B, H, L)
    bound_all = _layer_bound(ex, state, u)
    for what, y in evaluation:
        _close(check, name, ex, y, y_ref_all[:ex.batch], bound_all[:ex.batch],
               f"{what} must be the layer without dropout")
    e = tolerance.eps(ex.dtype)
    for what, y in train:
        y_ref, bound = y_ref_all[:len(y)], bound_all[:len(y)]       # u's first len(y) rows
        dropped = np.abs(y) <= bound
        kept = np.abs((1.0 - rate) * y - y_ref) <= bound + 2 * e * np.abs(y_ref)
        neither = ~(dropped | kept)
        if neither.any():
            i = tuple(int(v) for v in np.argwhere(neither)[0])
            raise AssertionError(_where(check, name, ex, (
                f"{what}: {int(neither.sum())} of {y.size} outputs are neither dropped (0) nor "
                f"kept and scaled by 1/(1-rate) = {1 / (1 - rate):.6g}: at {i} got {y[i]!r}, "
                f"reference without dropout {y_ref[i]!r}, so kept would be "
                f"{y_ref[i] / (1 - rate)!r}")))
        counted = dropped != kept                                          # unambiguous
        n, K = int(counted.sum()), int((dropped & counted).sum())
        lo = int(stats.binom.ppf(DROPOUT_ALPHA / 2, n, rate))
        hi = int(stats.binom.isf(DROPOUT_ALPHA / 2, n, rate))
        assert lo <= K <= hi, _where(check, name, ex, (
            f"{what}: dropped {K} of {n} elements ({K / max(n, 1):.4f}), rate {rate}; a "
            f"Binomial({n}, {rate}) count lies in [{lo}, {hi}] but with probability "
            f"{DROPOUT_ALPHA:g}"))
        r = np.abs(y_ref[counted]) / (1.0 - rate)
        slack = math.sqrt(math.log(2 / DROPOUT_ALPHA) / 2 * float(np.sum(r * r)))
        slack += float(np.sum(bound[counted] + 2 * e * np.abs(y_ref[counted]))) / (1.0 - rate)
        S, mean = float(np.sum(y[counted])), float(np.sum(y_ref[counted]))
        assert abs(S - mean) <= slack, _where(check, name, ex, (
            f"{what}: the sum of {n} outputs is {S:.6g}, without dropout {mean:.6g}; "
            f"dropout must preserve the mean (Hoeffding bound {slack:.4g} at probability "
            f"{DROPOUT_ALPHA:g})"))


# --- parameters ---------------------------------------------------------------------------------

def check_init(name: str, ex: Example) -> None:
    """Fresh parameters: every kernel row has unit norm over the full length K (and a prefix
    at most 1); N follows SPEC; N*C'*H*d sub-kernel weights, sub-linear in l_max."""
    cfg = ex.config
    K, d = cfg.kernel_length, ex.kernel_dim
    with session(name, ex.dtype) as bk:
        params = sgconv.init(cfg, seed=ex.seed, dtype=ex.dtype, backend=name)
        state = oracle.params_state(params, bk)
        k_full = _np(bk, sgconv.kernel(params, K))                         # (C', H, K)
        k_part = _np(bk, sgconv.kernel(params, ex.length))                 # (C', H, L)
        sizes = [math.prod(tuple(w.shape)) for w in params.kernels]
        shapes = [tuple(w.shape) for w in params.kernels]
        trained = sum(sizes) + sum(math.prod(tuple(x.shape)) for x in
                                   (params.D, params.out_weight, params.out_bias))
        if cfg.learnable_decay:
            trained += math.prod(tuple(params.decay.shape))
    where = lambda what: _where("check_init", name, ex, what)  # noqa: E731
    # |norm - 1|: the computed kernel's error (2-norm of the elementwise bound), plus the
    # rounding of Z and of the weights to the dtype after Z was taken in float64.
    env, _ = tolerance.kernel_envelope(state, cfg, K)
    e = tolerance.eps(ex.dtype)
    slack = (tolerance.norm2(tolerance.kernel_bound(state, cfg, K, ex.dtype))
             + e * (1.0 + tolerance.norm2(env)))                           # (C', H)
    norms = tolerance.norm2(k_full)
    tolerance.assert_close(norms, np.ones_like(norms), slack,
                           where("initial kernel rows must have unit norm over the full K"))
    excess = np.maximum(tolerance.norm2(k_part) - 1.0, 0.0)
    tolerance.assert_close(excess, np.zeros_like(excess), slack,
                           where(f"a prefix kernel(params, L={ex.length}) must have row "
                                 f"norms <= 1"))
    # N per SPEC: n_scales, else 1 + ceil(log2(l_max / d)), never below 1.
    N = ex.n_scales if ex.n_scales is not None else max(1, 1 + math.ceil(math.log2(ex.l_max / d)))
    Cp, H = ex.kernel_rows, ex.d_model
    assert cfg.num_scales == N, where(f"config.num_scales={cfg.num_scales}, SPEC says N={N}")
    assert shapes == [(Cp, H, d)] * N, where(f"sub-kernel shapes {shapes}, expected "
                                             f"{N} x {(Cp, H, d)}")
    count = N * Cp * H * d
    assert sum(sizes) == count == cfg.num_kernel_parameters, where(
        f"{sum(sizes)} sub-kernel weights (config says {cfg.num_kernel_parameters}), "
        f"expected N*C'*H*d = {N}*{Cp}*{H}*{d} = {count}")
    ref = reference.num_parameters(H, ex.l_max, ex.channels, d, ex.n_scales, ex.bidirectional)
    assert ref == count, where(f"reference.num_parameters={ref}, expected {count}")
    assert trained == cfg.num_parameters, where(
        f"the trained arrays hold {trained} numbers but config.num_parameters={cfg.num_parameters}")
    assert K >= ex.l_max or ex.n_scales is not None, where(f"K={K} < l_max={ex.l_max}")
    if ex.n_scales is None:
        doubled = ex.replace(l_max=2 * ex.l_max).config
        growth = doubled.num_kernel_parameters - cfg.num_kernel_parameters
        assert 0 <= growth <= Cp * H * d, where(
            f"doubling l_max {ex.l_max} -> {2 * ex.l_max} added {growth} sub-kernel weights; "
            f"sub-linear growth allows at most one scale, C'*H*d = {Cp * H * d}")


#: The width of the layers whose initial values are tested as samples, and the false-alarm
#: probability of each statistical test on them.
INIT_WIDTH = 128
INIT_ALPHA = 1e-9


def _initial_arrays(bk, name: str, ex: Example, cfg) -> list:
    """[(what, arrays)]: fresh parameters of ``cfg`` from every initialiser the backend's
    framework has, as float64 NumPy arrays plus the fresh kernel over the full K.

    sgconv.init (NumPy draws from the seed, every backend); sgconv.torch.SGConv after
    reset_parameters() (torch's generator); sgconv.jax.init with a key (jax.random).
    """
    K = cfg.kernel_length
    out = []

    def arrays(kernels, multiplier, kernel_norm, D, W, b, decay, k):
        f = lambda x: None if x is None else _np(bk, x)  # noqa: E731
        H = cfg.d_model
        m = f(multiplier).reshape(-1)
        return {"kernels": [f(w) for w in kernels], "multiplier": np.broadcast_to(m, (H,)),
                "kernel_norm": f(kernel_norm).reshape(cfg.kernel_rows, H), "D": f(D),
                "out_weight": f(W), "out_bias": f(b), "decay": f(decay), "kernel": f(k)}

    p = sgconv.init(cfg, seed=ex.seed, dtype=ex.dtype, backend=name)
    out.append((f"sgconv.init(config, seed={ex.seed})",
                arrays(p.kernels, p.multiplier, p.kernel_norm, p.D, p.out_weight, p.out_bias,
                       p.decay, sgconv.kernel(p, K))))
    fw = frameworks.framework_of(bk)
    if fw == "torch":
        import torch
        from sgconv.torch import SGConv, functional
        mode = "cat_randn" + ("_nearest" if cfg.interpolation == "nearest" else "") \
            + ("_learnable" if cfg.learnable_decay else "")
        device = bk.asarray(np.zeros(1)).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(ex.seed)
            layer = SGConv(cfg.d_model, cfg.l_max, channels=cfg.channels,
                           bidirectional=cfg.bidirectional, kernel_dim=cfg.kernel_dim,
                           n_scales=cfg.num_scales, decay_min=cfg.decay_min,
                           decay_max=cfg.decay_max, mode=mode, dtype=getattr(torch, ex.dtype),
                           device=device)
            layer.reset_parameters()
        with torch.no_grad():
            k = functional.kernel(list(layer.kernel_list), layer.multiplier, layer.kernel_norm,
                                  K, decay=layer.decay, interpolation=cfg.interpolation)
            out.append(("sgconv.torch.SGConv(...).reset_parameters()",
                        arrays([w.detach() for w in layer.kernel_list], layer.multiplier,
                               layer.kernel_norm, layer.D.detach(),
                               layer.output_linear.weight.detach(),
                               layer.output_linear.bias.detach(),
                               None if layer.decay is None else layer.decay.detach(), k)))
    elif fw == "jax":
        import jax
        import sgconv.jax as sgj
        q = sgj.init(jax.random.key(ex.seed), cfg, dtype=getattr(jax.numpy, ex.dtype))
        out.append((f"sgconv.jax.init(jax.random.key({ex.seed}), config)",
                    arrays(q.kernels, q.multiplier, q.kernel_norm, q.D, q.out_weight,
                           q.out_bias, q.decay, sgj.kernel(q, K))))
    return out


def _ks(sample, cdf, args, what, where):
    """Kolmogorov-Smirnov test of ``sample`` against ``cdf``: a correct initialiser fails
    it with probability INIT_ALPHA (the KS statistic's distribution does not depend on the
    law tested)."""
    sample = np.ravel(sample)
    result = stats.kstest(sample, cdf, args=args)
    assert result.pvalue >= INIT_ALPHA, where(
        f"{what}: {sample.size} values are not distributed as {cdf}{args} (KS statistic "
        f"{result.statistic:.4f}, p = {result.pvalue:.3g} < {INIT_ALPHA:g}; mean "
        f"{sample.mean():.4g}, std {sample.std():.4g}, range [{sample.min():.4g}, "
        f"{sample.max():.4g}])")


def _uniform_bound(sample, bound: float, dtype: str, what, where):
    """All |x| <= bound (after rounding to dtype), and max |x| near the bound: n draws of
    U(-b, b) all stay below (1 - delta) b with probability (1 - delta)^n, so
    delta = 1 - INIT_ALPHA^(1/n) makes missing the bound a 1-in-1/alpha event."""
    x = np.abs(np.ravel(sample))
    top = bound * (1 + 2 * tolerance.eps(dtype))     # b, r * 2b and -b + 2b r each round once
    assert x.max() <= top, where(f"{what}: max |x| = {x.max():.6g} exceeds the bound "
                                 f"1/sqrt(C*H) = {bound:.6g} (nn.Linear's init)")
    delta = 1.0 - INIT_ALPHA ** (1.0 / x.size)
    assert x.max() >= (1.0 - delta) * bound, where(
        f"{what}: max |x| = {x.max():.6g} over {x.size} draws, but U(-b, b) with "
        f"b = 1/sqrt(C*H) = {bound:.6g} reaches above {(1 - delta) * bound:.6g} except with "
        f"probability {INIT_ALPHA:g}: the bound is too small")


def check_init_values(name: str, ex: Example) -> None:
    """The initial values themselves, per SPEC, from sgconv.init, sgconv.torch.SGConv
    (reset_parameters) and sgconv.jax.init (a JAX key), for a layer of width INIT_WIDTH
    with the example's other settings (and decay_max > decay_min):

    * the decay multiplier is linspace(decay_min, decay_max, H) (learnable decay: ones,
      and decay ~ U(decay_min, decay_max));
    * sub-kernel weights and D ~ N(0, 1); the mixing weight and bias ~ U(-b, b),
      b = 1/sqrt(C*H) (nn.Linear(C*H, H));
    * the fresh kernel is the reference kernel of these weights, so scale i is weighted
      m^(N-1-i) (decaying away from lag 0 for m > 1), and its rows have unit norm.

    Distributions: a Kolmogorov-Smirnov test at INIT_ALPHA each; the uniform's bound
    exactly (never exceeded) and from below (see :func:`_uniform_bound`).  With 128-32768
    draws, a zero D, a bound off by sqrt(6) (kaiming_uniform without a = sqrt(5)) or a
    multiplier from the wrong end fail every time, and a correct one fails with
    probability below 1e-8 per example.
    """
    hi = ex.decay_max if ex.decay_max > ex.decay_min else round(ex.decay_min + 1.0, 3)
    cfg = ex.replace(d_model=INIT_WIDTH, decay_max=hi).config
    H, C, N = cfg.d_model, cfg.channels, cfg.num_scales
    lo, hi = cfg.decay_min, cfg.decay_max
    check = "check_init_values"
    with session(name, ex.dtype) as bk:
        sources = _initial_arrays(bk, name, ex, cfg)
    e = tolerance.eps(ex.dtype) + tolerance.EPS64
    for what, a in sources:
        where = lambda msg, what=what: _where(check, name, ex, f"{what}: {msg}")  # noqa: E731
        if cfg.learnable_decay:
            assert np.all(a["multiplier"] == 1.0), where(
                f"learnable decay: the multiplier must be 1, got {a['multiplier'][:4]}...")
            d = a["decay"]
            assert d.min() >= lo * (1 - e) and d.max() <= hi * (1 + e), where(
                f"decay in [{d.min():.6g}, {d.max():.6g}], expected U({lo}, {hi})")
            _ks(d, "uniform", (lo, hi - lo), "decay", where)
        else:
            # a linspace computed in the dtype rounds the step, its product with h and the
            # sum: at most 4 eps max(|lo|, |hi|) from the exact values
            expected = np.linspace(lo, hi, H)
            err = np.abs(a["multiplier"] - expected)
            allowed = 4 * e * max(abs(lo), abs(hi))
            assert err.max() <= allowed, where(
                f"multiplier must be linspace({lo}, {hi}, H={H}): max |m - linspace| = "
                f"{err.max():.3g} at h={int(err.argmax())} (m={a['multiplier'][err.argmax()]!r}, "
                f"expected {expected[err.argmax()]!r}); allowed {allowed:.3g}")
        _ks(np.concatenate([w.ravel() for w in a["kernels"]]), "norm", (), "sub-kernel weights",
            where)
        _ks(a["D"], "norm", (), "D", where)
        bound = 1.0 / math.sqrt(C * H)
        for field in ("out_weight", "out_bias"):
            _uniform_bound(a[field], bound, ex.dtype, field, where)
            _ks(a[field], "uniform", (-bound, 2 * bound), field, where)
        state = {f"kernel_list.{i}": w for i, w in enumerate(a["kernels"])}
        state.update({"multiplier": a["multiplier"].reshape(1, H, 1), "D": a["D"],
                      "kernel_norm": a["kernel_norm"][..., None],
                      "output_linear.weight": a["out_weight"],
                      "output_linear.bias": a["out_bias"]})
        if cfg.learnable_decay:
            state.update(multiplier=np.array(1.0), decay=a["decay"])
        K = cfg.kernel_length
        _close(check, name, ex, a["kernel"], reference.kernel(state, K, cfg.interpolation),
               tolerance.kernel_bound(state, cfg, K, ex.dtype),
               f"{what}: the fresh kernel == the reference kernel of its weights "
               f"(scale i weighted m^(N-1-i), N={N}), over the full K={K}")
        norms = tolerance.norm2(a["kernel"])
        slack = (tolerance.norm2(tolerance.kernel_bound(state, cfg, K, ex.dtype))
                 + e * (1.0 + norms))
        tolerance.assert_close(norms, np.ones_like(norms), slack,
                               where("the fresh kernel's rows must have unit norm over K"))


def check_dtypes_shapes(name: str, ex: Example) -> None:
    """Outputs keep the input's dtype and the backend's array type and device; shapes per
    SPEC: kernel (C', H, L), conv (B, C, H, L), apply (B, H, L) or (B, L, H)."""
    B, H, L, C, Cp = ex.batch, ex.d_model, ex.length, ex.channels, ex.kernel_rows
    u = _random(_rng(ex, 10), (B, H, L), ex.dtype)
    where = lambda what: _where("check_dtypes_shapes", name, ex, what)  # noqa: E731
    with session(name, ex.dtype) as bk:
        fw = frameworks.framework_of(bk)

        def expect(x, shape, what, device):
            assert bk.is_native(x), where(f"{what} is a {type(x).__module__}.{type(x).__name__}, "
                                          f"not a native {name} array")
            assert frameworks.array_framework(x) == fw, where(f"{what} belongs to "
                                                              f"{frameworks.array_framework(x)}")
            assert bk.dtype_name(x) == ex.dtype, where(f"{what} has dtype {bk.dtype_name(x)}, "
                                                       f"expected {ex.dtype}")
            assert tuple(x.shape) == shape, where(f"{what} has shape {tuple(x.shape)}, "
                                                  f"expected {shape}")
            if device is not None:
                assert frameworks.device_of(x) == device, where(
                    f"{what} is on {frameworks.device_of(x)}, its input on {device}")

        params = sgconv.init(ex.config, seed=ex.seed, dtype=ex.dtype, backend=name)
        for field, value in params.arrays().items():
            for i, arr in enumerate(value if field == "kernels" else (value,)):
                if arr is not None:
                    what = f"init(...).{field}" + (f"[{i}]" if field == "kernels" else "")
                    expect(arr, tuple(arr.shape), what, None)
        x = bk.asarray(np.ascontiguousarray(u if ex.transposed else u.swapaxes(1, 2)))
        device = frameworks.device_of(x)
        k = sgconv.kernel(params, L)
        expect(k, (Cp, H, L), "sgconv.kernel(params, L)", frameworks.device_of(params.D))
        u_bhl = bk.asarray(u)
        y = sgconv.conv(u_bhl, k, params.D, bidirectional=ex.bidirectional,
                        block_size=_valid_block(ex, L))
        expect(y, (B, C, H, L), "sgconv.conv(u, k, D)", frameworks.device_of(u_bhl))
        layout = (B, H, L) if ex.transposed else (B, L, H)
        y = sgconv.apply(params, x, transposed=ex.transposed, block_size=ex.block_size)
        expect(y, layout, f"sgconv.apply(params, u, transposed={ex.transposed})", device)
        y, k = sgconv.apply(params, x, transposed=ex.transposed, block_size=ex.block_size,
                            return_kernel=True)
        expect(y, layout, "sgconv.apply(..., return_kernel=True)[0]", device)
        expect(k, (Cp, H, L), "sgconv.apply(..., return_kernel=True)[1]", device)
        for key, value in sgconv.to_state_dict(params).items():
            assert bk.is_native(value), where(f"to_state_dict(params)[{key!r}] left the backend: "
                                              f"{type(value).__name__}")


def _same_arrays(bk, p, q, what, where):
    """Every parameter array of q equals p's bit for bit, with the same dtype."""
    for field, value in p.arrays().items():
        other = getattr(q, field)
        pairs = zip(value, other) if field == "kernels" else [(value, other)]
        for x, y in pairs:
            if x is None:
                assert y is None, where(f"{what}: {field} appeared")
                continue
            assert bk.is_native(y), where(f"{what}: {field} is a {type(y).__name__}, "
                                          f"not a {bk.name} array")
            assert bk.dtype_name(y) == bk.dtype_name(x), where(
                f"{what}: {field} has dtype {bk.dtype_name(y)}, expected {bk.dtype_name(x)}")
            xa, ya = bk.to_numpy(x), bk.to_numpy(y)
            if xa.shape != ya.shape:
                raise AssertionError(where(f"{what}: {field} has shape {ya.shape}, "
                                           f"expected {xa.shape}"))
            diff = np.max(np.abs(xa.astype(np.float64) - ya), initial=0.0)
            assert np.array_equal(xa, ya), where(f"{what}: {field} changed, max |diff| {diff}")


def check_transfer(name: str, ex: Example) -> None:
    """Parameters moved between backends (Params.to), through to_state_dict/from_state_dict
    and through a .npz file keep every bit and give the same outputs; the NumPy backend
    computes the same layer from the moved parameters."""
    cfg = ex.config
    u = _random(_rng(ex, 11), (ex.batch, ex.d_model, ex.length), ex.dtype)
    where = lambda what: _where("check_transfer", name, ex, what)  # noqa: E731
    keep = dict(l_max=cfg.l_max, decay_min=cfg.decay_min, decay_max=cfg.decay_max,
                interpolation=cfg.interpolation)
    with session(name, ex.dtype) as bk, tempfile.TemporaryDirectory() as tmp:
        params = make_params(bk, name, ex)
        state = oracle.params_state(params, bk)
        y = _apply(bk, ex, params, u)
        bound = _layer_bound(ex, state, u)
        path = os.path.join(tmp, "params.npz")
        sgconv.save(path, params)
        moved = {
            f"params.to('numpy').to({name!r})": params.to("numpy").to(name),
            f"from_state_dict(to_state_dict(params), backend={name!r})":
                sgconv.from_state_dict(sgconv.to_state_dict(params), backend=name, **keep),
            f"load(save(params), backend={name!r})": sgconv.load(path, backend=name),
        }
        for what, q in moved.items():
            for field in ("d_model", "channels", "kernel_dim", "num_scales", "kernel_length",
                          "bidirectional", "interpolation", "learnable_decay"):
                got, want = getattr(q.config, field), getattr(cfg, field)
                assert got == want, where(f"{what}: config.{field} {got!r} != {want!r}")
            _same_arrays(bk, params, q, what, where)
            _close("check_transfer", name, ex, _apply(bk, ex, q, u), y, 2 * bound,
                   f"apply({what}, u) == apply(params, u)")
        # The dtype conversion of Params.to is the correctly rounded one.
        other = "float64" if ex.dtype == "float32" else "float32"
        with frameworks.precision(bk, "float64"):
            q = params.to(name, dtype=other)
            for x, z in zip(params.kernels + (params.D,), q.kernels + (q.D,)):
                assert bk.dtype_name(z) == other, where(
                    f"Params.to(dtype={other!r}) gave {bk.dtype_name(z)}")
                assert np.array_equal(bk.to_numpy(z), bk.to_numpy(x).astype(other)), where(
                    f"Params.to(dtype={other!r}) is not the correctly rounded conversion")
    with session("numpy", ex.dtype) as nbk:
        y_np = _apply(nbk, ex, params.to("numpy"), u)
    _close("check_transfer", name, ex, y_np, y, 2 * bound,
           f"the NumPy backend on params.to('numpy') == {name} on params")


# --- gradients ----------------------------------------------------------------------------------

def check_gradients(name: str, ex: Example) -> None:
    """For autodiff backends: the gradients of <g, apply(params, u)> w.r.t. u, every sub-kernel
    w_i and D, and of <g, conv(u, k, D)> w.r.t. u, k and D, equal the reference's analytic
    adjoint (oracle.layer_vjp / conv_vjp, itself checked against float64 finite differences)."""
    rng = _rng(ex, 12)
    B, H, L = ex.batch, ex.d_model, ex.length
    u = _random(rng, (B, H, L), ex.dtype)
    g = _random(rng, (B, H, L), ex.dtype)
    uk, k, D = _conv_inputs(ex, rng)
    gy = _random(rng, (B, ex.channels, H, L), ex.dtype)
    blocks = ex.block_size != 0
    with session(name, ex.dtype) as bk:
        reason = frameworks.autodiff_unsupported(bk)
        if reason is not None:
            raise NotApplicable(reason)
        params = make_params(bk, name, ex)
        state = oracle.params_state(params, bk)
        x = u if ex.transposed else u.swapaxes(1, 2)
        gx = g if ex.transposed else g.swapaxes(1, 2)

        def layer(u_, D_, *ws):
            return sgconv.apply(params.replace(kernels=tuple(ws), D=D_), u_,
                                transposed=ex.transposed, block_size=ex.block_size)

        out, grads = frameworks.value_and_vjp(
            bk, layer, [bk.asarray(np.ascontiguousarray(x)), params.D, *params.kernels],
            bk.asarray(np.ascontiguousarray(gx)))
        dtypes = {bk.dtype_name(t) for t in grads} | {bk.dtype_name(out)}
        grads, out = [_np(bk, t) for t in grads], _np(bk, out)

        block = _valid_block(ex, ex.taps)

        def conv(u_, k_, *D_):
            return sgconv.conv(u_, k_, D_[0] if D_ else None, bidirectional=ex.bidirectional,
                               block_size=block)

        primals = [bk.asarray(uk), bk.asarray(k)] + ([bk.asarray(D)] if D is not None else [])
        cout, cgrads = frameworks.value_and_vjp(bk, conv, primals, bk.asarray(gy))
        dtypes |= {bk.dtype_name(t) for t in cgrads} | {bk.dtype_name(cout)}
        cgrads, cout = [_np(bk, t) for t in cgrads], _np(bk, cout)
    where = lambda what: _where("check_gradients", name, ex, what)  # noqa: E731
    assert dtypes == {ex.dtype}, where(f"outputs and gradients have dtypes {sorted(dtypes)}, "
                                       f"expected {ex.dtype}")

    # the forward pass as training computes it (torch: inputs that require grad; JAX:
    # traced by jax.vjp) is the reference's, not only its gradients
    how = frameworks.AUTODIFF_FORWARD.get(frameworks.framework_of_name(name), "autodiff on")
    bound = _layer_bound(ex, state, u)
    _close("check_gradients", name, ex, out,
           reference.layer(state, x, ex.bidirectional, ex.transposed, ex.interpolation),
           bound if ex.transposed else bound.swapaxes(1, 2),
           f"layer forward with {how} == reference.layer")
    _close("check_gradients", name, ex, cout, reference.conv(uk, k, D, ex.bidirectional),
           _conv_bound(ex, uk, k, D, block_size=block),
           f"conv forward with {how} == reference.conv")

    gu, gws, gD = oracle.layer_vjp(state, ex.config, x, gx, ex.transposed)
    bu, bws, bD = tolerance.layer_vjp_bound(state, ex.config, u, g, ex.dtype, blocks=blocks)
    bu = bu if ex.transposed else bu.swapaxes(1, 2)
    _close("check_gradients", name, ex, grads[0], gu, bu, "layer: d<g, y>/du == reference adjoint")
    _close("check_gradients", name, ex, grads[1], gD, bD, "layer: d<g, y>/dD == reference adjoint")
    for i, (got, want, bw) in enumerate(zip(grads[2:], gws, bws)):
        _close("check_gradients", name, ex, got, want, bw,
               f"layer: d<g, y>/dw_{i} (sub-kernel {i}) == reference adjoint")

    cu, ck, cD = oracle.conv_vjp(uk, k, D, ex.bidirectional, gy)
    bu, bk_, bD = tolerance.conv_vjp_bound(uk, k, D, ex.bidirectional, gy, ex.dtype,
                                           blocks=block != 0)
    _close("check_gradients", name, ex, cgrads[0], cu, bu, "conv: d<gy, y>/du == reference adjoint")
    _close("check_gradients", name, ex, cgrads[1], ck, bk_,
           "conv: d<gy, y>/dk == reference adjoint")
    if D is not None:
        _close("check_gradients", name, ex, cgrads[2], cD, bD,
               "conv: d<gy, y>/dD == reference adjoint")


# --- the framework layers ------------------------------------------------------------------------

def _torch_layers(bk, ex: Example, params, x):
    """[(what, output, params the output was computed with)] of sgconv.torch.SGConv."""
    import torch
    from sgconv.torch import SGConv
    module = SGConv.from_params(params, transposed=ex.transposed, block_size=ex.block_size,
                                dtype=getattr(torch, ex.dtype), device=x.device)
    out = []
    module.train()                                         # dropout 0, autograd on
    out.append(("sgconv.torch.SGConv.from_params(params).train() (dropout 0, autograd on)",
                module(x).detach(), params))
    module.eval()
    with torch.no_grad():
        out.append(("SGConv.eval() under torch.no_grad()", module(x), params))
        out.append(("SGConv.eval(), second call (the cached kernel spectrum)", module(x),
                    params))
        # an optimiser step changes parameters in place: the next call must see it
        module.D.add_(0.5)
        module.kernel_list[-1].mul_(-1.5)
        moved = params.replace(D=module.D.detach().clone(), kernels=tuple(
            w.detach().clone() for w in module.kernel_list))
        out.append(("SGConv.eval() after in-place updates of D and the last sub-kernel",
                    module(x), moved))
    return out


def _jax_layers(bk, ex: Example, params, x):
    """[(what, output, params)] of the sgconv.jax layer object and functions."""
    import sgconv.jax as sgj
    layer = sgj.SGConv(params, transposed=ex.transposed, block_size=ex.block_size)
    fast = sgj.prepare(params, ex.length, block_size=ex.block_size)
    return [("sgconv.jax.SGConv(params)(u)", layer(x), params),
            ("sgconv.jax.apply(params, u)", sgj.apply(params, x, transposed=ex.transposed,
                                                      block_size=ex.block_size), params),
            ("sgconv.jax.apply(sgconv.jax.prepare(params, L), u)",
             sgj.apply(fast, x, transposed=ex.transposed), params)]


def check_framework_layers(name: str, ex: Example) -> None:
    """The framework's own layer objects equal reference.layer, not only sgconv.apply:
    sgconv.torch.SGConv (from_params; train mode with dropout 0 and autograd on, eval
    mode under no_grad, its cached spectrum, and after in-place parameter updates) and
    sgconv.jax (the SGConv layer object, apply, and apply on a prepared spectrum), in the
    example's layout (transposed True/False) and FFT plan."""
    u = _random(_rng(ex, 15), (ex.batch, ex.d_model, ex.length), ex.dtype)
    with session(name, ex.dtype) as bk:
        reason = frameworks.framework_layer_unsupported(bk)
        if reason is not None:
            raise NotApplicable(reason)
        params = make_params(bk, name, ex)
        x = bk.asarray(_layout(ex, u))
        run = _torch_layers if frameworks.framework_of(bk) == "torch" else _jax_layers
        outputs = [(what, _bhl(bk, ex, y), oracle.params_state(p, bk))
                   for what, y, p in run(bk, ex, params, x)]
    for what, y, state in outputs:
        _close("check_framework_layers", name, ex, y,
               reference.layer(state, u, ex.bidirectional, True, ex.interpolation),
               _layer_bound(ex, state, u), f"{what} == reference.layer")


#: Every property by short name, in the order the suite runs them.
PROPERTIES = {
    "kernel": check_kernel,
    "kernel_blocks": check_kernel_blocks,
    "conv": check_conv,
    "layer": check_layer,
    "causality": check_causality,
    "reach": check_reach,
    "linearity": check_linearity,
    "shift": check_shift,
    "impulse": check_impulse,
    "batch": check_batch,
    "nonfinite": check_nonfinite,
    "dropout": check_dropout,
    "init": check_init,
    "init_values": check_init_values,
    "dtypes_shapes": check_dtypes_shapes,
    "transfer": check_transfer,
    "gradients": check_gradients,
    "framework_layers": check_framework_layers,
}
