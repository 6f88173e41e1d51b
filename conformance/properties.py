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

import sgconv

from . import frameworks, oracle, reference, tolerance
from .examples import Example

__all__ = ["PROPERTIES", "NotApplicable", "session", "make_params"] + [
    "check_kernel", "check_kernel_blocks", "check_conv", "check_layer", "check_causality",
    "check_reach", "check_linearity", "check_shift", "check_impulse", "check_batch",
    "check_init", "check_dtypes_shapes", "check_transfer", "check_gradients", "Example"]


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

        grads = frameworks.vjp(bk, layer, [bk.asarray(np.ascontiguousarray(x)), params.D,
                                           *params.kernels], bk.asarray(np.ascontiguousarray(gx)))
        dtypes = {bk.dtype_name(t) for t in grads}
        grads = [_np(bk, t) for t in grads]

        block = _valid_block(ex, ex.taps)

        def conv(u_, k_, *D_):
            return sgconv.conv(u_, k_, D_[0] if D_ else None, bidirectional=ex.bidirectional,
                               block_size=block)

        primals = [bk.asarray(uk), bk.asarray(k)] + ([bk.asarray(D)] if D is not None else [])
        cgrads = frameworks.vjp(bk, conv, primals, bk.asarray(gy))
        dtypes |= {bk.dtype_name(t) for t in cgrads}
        cgrads = [_np(bk, t) for t in cgrads]
    where = lambda what: _where("check_gradients", name, ex, what)  # noqa: E731
    assert dtypes == {ex.dtype}, where(f"gradients have dtypes {sorted(dtypes)}, "
                                       f"expected {ex.dtype}")

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
    "init": check_init,
    "dtypes_shapes": check_dtypes_shapes,
    "transfer": check_transfer,
    "gradients": check_gradients,
}
