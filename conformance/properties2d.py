"""The 2D conformance properties, as plain functions ``check2d_*(backend_name, example)``.

Each runs sgconv's public 2D API on backend ``backend_name`` (``sgconv.init2d``,
``kernel2d``, ``conv2d``, ``apply2d``, ``Params2d.to``, the checkpoint functions), compares
with the float64 reference (``reference.layer2d``, ``reference.conv2d``: direct sums) or
with a law of the operator, and raises AssertionError with the backend, dtype, shapes,
seed and the call that reproduces it.  Bounds: conformance/tolerance2d.py.  Every random
array is drawn from the example's seed and rounded to its dtype before either side sees it.
"""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np

from . import reference
import sgconv

from . import frameworks, oracle, oracle2d, tolerance, tolerance2d
from .examples2d import Example2d
from .properties import NotApplicable, session

__all__ = ["PROPERTIES_2D", "make_params2d", "Example2d", "NotApplicable"] + [
    "check2d_kernel", "check2d_conv", "check2d_layer", "check2d_reach", "check2d_linearity",
    "check2d_shift", "check2d_impulse", "check2d_batch", "check2d_init",
    "check2d_dtypes_shapes", "check2d_transfer", "check2d_gradients"]


def _rng(ex: Example2d, salt: int) -> np.random.Generator:
    return np.random.default_rng([ex.seed, 2, salt])


def _random(rng, shape, dtype: str) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def _np(bk, x) -> np.ndarray:
    return oracle.to_float64(bk, x)


def _close(check, name, ex, actual, expected, bound, what):
    tolerance.assert_close(actual, expected, bound,
                           f"[{check}] {what}\n  {ex.describe(name, check)}")


def make_params2d(bk, name: str, ex: Example2d, trained: bool = True):
    """Parameters on backend ``name`` in ex.dtype from ``sgconv.init2d`` with ex.seed; with
    ``trained``, the sub-kernels and D moved away from their initial values with Z kept
    (as after training: Z is state fixed at init)."""
    params = sgconv.init2d(ex.config, seed=ex.seed, dtype=ex.dtype, backend=name)
    if not trained:
        return params
    rng = _rng(ex, 1)
    move = lambda x: bk.asarray(0.5 * _np(bk, x) + rng.standard_normal(tuple(x.shape)),  # noqa: E731
                                dtype=ex.dtype)
    return params.replace(kernels_x=tuple(move(w) for w in params.kernels_x),
                          kernels_y=tuple(move(w) for w in params.kernels_y), D=move(params.D))


def _conv_inputs(ex: Example2d, rng, taps=None):
    """u (B, H, X, Y), kx (2C, H, tx), ky (2C, H, ty), D (C, H) or None, in ex.dtype."""
    (X, Y), (tx, ty) = ex.image, (ex.taps if taps is None else taps)
    C, H = ex.channels, ex.d_model
    u = _random(rng, (ex.batch, H, X, Y), ex.dtype)
    kx = _random(rng, (2 * C, H, tx), ex.dtype)
    ky = _random(rng, (2 * C, H, ty), ex.dtype)
    D = _random(rng, (C, H), ex.dtype) if ex.skip else None
    return u, kx, ky, D


def _conv2d(bk, u, kx, ky, D):
    """sgconv.conv2d on native copies; the result as float64 (B, C, H, X, Y)."""
    return _np(bk, sgconv.conv2d(bk.asarray(u), bk.asarray(kx), bk.asarray(ky),
                                 None if D is None else bk.asarray(D)))


def _exact(u, kx, ky, D):
    X, Y = u.shape[-2:]
    return reference.conv2d(u, oracle2d.centred2d(kx, ky, None, (X, Y)), D)


def _apply(bk, ex: Example2d, params, u):
    """sgconv.apply2d on u (B, H, X, Y) given in ex's layout; the result as (B, H, X, Y)."""
    x = u if ex.transposed else np.moveaxis(u, 1, 3)
    y = _np(bk, sgconv.apply2d(params, bk.asarray(np.ascontiguousarray(x)),
                               transposed=ex.transposed))
    return y if ex.transposed else np.moveaxis(y, 3, 1)


# --- the kernel, the convolution, the layer ---------------------------------------------------

def check2d_kernel(name: str, ex: Example2d) -> None:
    """sgconv.kernel2d(params, (X, Y)) returns each axis's reference kernel
    (reference.kernel on that axis's 1D state, cut to the side or zero-padded past K)."""
    with session(name, ex.dtype) as bk:
        params = make_params2d(bk, name, ex)
        state = oracle2d.params_state2d(params, bk)
        kx, ky = (_np(bk, k) for k in sgconv.kernel2d(params, ex.image))
    for a, k, L, bound in zip("xy", (kx, ky), ex.image,
                              tolerance2d.axis_kernel_bounds(state, ex.config, ex.image, ex.dtype)):
        expected = reference.kernel(oracle2d.axis_state(state, a), L, ex.interpolation)
        _close("check2d_kernel", name, ex, k, expected, bound,
               f"sgconv.kernel2d(params, {ex.image})[{a}] == reference.kernel(axis {a}, {L})")


def check2d_conv(name: str, ex: Example2d) -> None:
    """sgconv.conv2d(u, kx, ky, D) equals the reference's direct 2D sums (linear)."""
    u, kx, ky, D = _conv_inputs(ex, _rng(ex, 2))
    with session(name, ex.dtype) as bk:
        y = _conv2d(bk, u, kx, ky, D)
    _close("check2d_conv", name, ex, y, _exact(u, kx, ky, D),
           tolerance2d.conv2d_bound(u, kx, ky, D, ex.dtype),
           f"sgconv.conv2d(u, kx, ky, D={'given' if D is not None else None}) == reference.conv2d")


def check2d_layer(name: str, ex: Example2d) -> None:
    """sgconv.apply2d equals reference.layer2d, in both layouts."""
    u = _random(_rng(ex, 3), (ex.batch, ex.d_model) + ex.image, ex.dtype)
    with session(name, ex.dtype) as bk:
        params = make_params2d(bk, name, ex)
        state = oracle2d.params_state2d(params, bk)
        y = _apply(bk, ex, params, u)
    _close("check2d_layer", name, ex, y, reference.layer2d(state, u, True, ex.interpolation),
           tolerance2d.layer2d_bound(state, ex.config, u, ex.dtype),
           f"sgconv.apply2d(params, u, transposed={ex.transposed}) == reference.layer2d")


# --- laws of the operator ------------------------------------------------------------------------

def check2d_reach(name: str, ex: Example2d) -> None:
    """A unit tap moves a unit impulse exactly, along each axis: causal tap j from p to
    p + j, anti-causal tap j to p - j - 1; a target outside the image gives no output at
    all (nothing wraps around an edge, on either axis)."""
    rng = _rng(ex, 5)
    (X, Y), (tx, ty) = ex.image, ex.taps
    C, H = ex.channels, ex.d_model
    cases = []
    for axis, (L, taps) in enumerate(((X, tx), (Y, ty))):
        j, p = int(rng.integers(0, taps)), int(rng.integers(0, L))
        cases.append((axis, "causal", j, p))
        cases.append((axis, "causal", taps - 1, int(rng.integers(max(L - taps, 0), L))))
        if L >= 2:
            a = min(taps, L - 1)
            j = int(rng.integers(0, a))
            cases.append((axis, "anti-causal", j, int(rng.integers(j + 1, L))))
            j = int(rng.integers(0, taps))
            cases.append((axis, "anti-causal", j, int(rng.integers(0, min(j, L - 1) + 1))))
    with session(name, ex.dtype) as bk:
        for axis, half, j, p in cases:
            ks = [np.zeros((2 * C, H, t), dtype=ex.dtype) for t in (tx, ty)]
            ks[1 - axis][:C, :, 0] = 1                              # the other axis: identity
            ks[axis][slice(0, C) if half == "causal" else slice(C, 2 * C), :, j] = 1
            q = int(rng.integers(0, (Y, X)[axis]))                  # the other coordinate
            at = (p, q) if axis == 0 else (q, p)
            u = np.zeros((1, H, X, Y), dtype=ex.dtype)
            u[..., at[0], at[1]] = 1
            target = p + j if half == "causal" else p - j - 1
            expected = np.zeros((1, C, H, X, Y))
            if 0 <= target < (X, Y)[axis]:
                where = (target, q) if axis == 0 else (q, target)
                expected[..., where[0], where[1]] = 1.0
            y = _conv2d(bk, u, ks[0], ks[1], None)
            _close("check2d_reach", name, ex, y, expected,
                   tolerance2d.conv2d_bound(u, ks[0], ks[1], None, ex.dtype),
                   f"axis {'xy'[axis]}: {half} tap {j} must carry an impulse at {at} to "
                   f"{'xy'[axis]}={target}" + ("" if 0 <= target < (X, Y)[axis] else
                                               " (outside the image: no output at all)"))


def check2d_linearity(name: str, ex: Example2d) -> None:
    """conv2d is linear in u, and in (kx, D) jointly for a fixed ky.  The combined inputs
    are rounded to the dtype; the exact effect of that rounding is added to the expectation."""
    rng = _rng(ex, 6)
    u1, kx1, ky, D1 = _conv_inputs(ex, rng)
    u2, kx2, _, D2 = _conv_inputs(ex, rng)
    a, b = rng.uniform(-2.0, 2.0, size=2)
    comb = lambda p, q: (a * p.astype(np.float64) + b * q).astype(ex.dtype)  # noqa: E731
    u3, kx3 = comb(u1, u2), comb(kx1, kx2)
    du = u3 - (a * u1.astype(np.float64) + b * u2)
    dkx = kx3 - (a * kx1.astype(np.float64) + b * kx2)
    D3 = dD = None
    if D1 is not None:
        D3 = comb(D1, D2)
        dD = D3 - (a * D1.astype(np.float64) + b * D2)
    bound = tolerance2d.conv2d_bound
    with session(name, ex.dtype) as bk:
        y1, y2, y3 = (_conv2d(bk, x, kx1, ky, D1) for x in (u1, u2, u3))
        tol = (bound(u3, kx1, ky, D1, ex.dtype) + abs(a) * bound(u1, kx1, ky, D1, ex.dtype)
               + abs(b) * bound(u2, kx1, ky, D1, ex.dtype))
        _close("check2d_linearity", name, ex, y3, a * y1 + b * y2 + _exact(du, kx1, ky, None),
               tol, f"conv2d(a u1 + b u2) == a conv2d(u1) + b conv2d(u2), a={a:.4g}, b={b:.4g}")
        z1, z2, z3 = (_conv2d(bk, u1, k, ky, D) for k, D in ((kx1, D1), (kx2, D2), (kx3, D3)))
        tol = (bound(u1, kx3, ky, D3, ex.dtype) + abs(a) * bound(u1, kx1, ky, D1, ex.dtype)
               + abs(b) * bound(u1, kx2, ky, D2, ex.dtype))
        _close("check2d_linearity", name, ex, z3, a * z1 + b * z2 + _exact(u1, dkx, ky, dD), tol,
               f"conv2d(u, a kx1 + b kx2, ky, a D1 + b D2) == a conv2d(u, kx1, ky, D1) + "
               f"b conv2d(u, kx2, ky, D2), a={a:.4g}, b={b:.4g}")


def check2d_shift(name: str, ex: Example2d) -> None:
    """Shifting u by tau along x (or y) shifts y the same way (u ends in tau zeros along
    that axis, so nothing is lost), for conv2d and the layer, along each axis."""
    rng = _rng(ex, 7)
    axes = [i for i, L in enumerate(ex.image) if L >= 2]
    if not axes:
        raise NotApplicable("a 1 x 1 image cannot be shifted")
    u, kx, ky, D = _conv_inputs(ex, rng)
    with session(name, ex.dtype) as bk:
        params = make_params2d(bk, name, ex)
        state = oracle2d.params_state2d(params, bk)
        for axis in axes:
            L = ex.image[axis]
            tau = int(rng.integers(1, L))
            ax = 2 + axis
            cut = [slice(None)] * 4
            cut[ax] = slice(L - tau, None)
            v = u.copy()
            v[tuple(cut)] = 0
            vs = np.roll(v, tau, axis=ax)                        # the zeros come round first
            lo, hi = [slice(None)] * 5, [slice(None)] * 5
            lo[ax + 1], hi[ax + 1] = slice(tau, None), slice(None, L - tau)
            lo4, hi4 = lo[:1] + lo[2:], hi[:1] + hi[2:]
            y, ys = _conv2d(bk, v, kx, ky, D), _conv2d(bk, vs, kx, ky, D)
            tol = (tolerance2d.conv2d_bound(v, kx, ky, D, ex.dtype)
                   + tolerance2d.conv2d_bound(vs, kx, ky, D, ex.dtype))
            _close("check2d_shift", name, ex, ys[tuple(lo)], y[tuple(hi)], tol,
                   f"conv2d(u shifted by {tau} along {'xy'[axis]}) == conv2d(u) shifted")
            y, ys = _apply(bk, ex, params, v), _apply(bk, ex, params, vs)
            tol = (tolerance2d.layer2d_bound(state, ex.config, v, ex.dtype)[tuple(hi4)]
                   + tolerance2d.layer2d_bound(state, ex.config, vs, ex.dtype)[tuple(lo4)])
            _close("check2d_shift", name, ex, ys[tuple(lo4)], y[tuple(hi4)], tol,
                   f"layer(u shifted by {tau} along {'xy'[axis]}) == layer(u) shifted")


def check2d_impulse(name: str, ex: Example2d) -> None:
    """A unit impulse at (px, py) returns the 2D kernel placed there (the outer product of
    the centred axis kernels of sgconv.kernel2d) plus D at the impulse, and zeros where the
    kernel would leave the image."""
    rng = _rng(ex, 8)
    X, Y = ex.image
    H = ex.d_model
    px, py = int(rng.integers(0, X)), int(rng.integers(0, Y))
    with session(name, ex.dtype) as bk:
        params = make_params2d(bk, name, ex)
        kx_n, ky_n = sgconv.kernel2d(params, (X, Y))
        u = np.zeros((1, H, X, Y), dtype=ex.dtype)
        u[..., px, py] = 1
        y = _np(bk, sgconv.conv2d(bk.asarray(u), kx_n, ky_n, params.D))
        kx, ky, D = _np(bk, kx_n), _np(bk, ky_n), _np(bk, params.D)
    k2 = oracle2d.centred2d(kx, ky, D, (X, Y))                          # (C, H, 2X-1, 2Y-1)
    expected = k2[None, :, :, X - 1 - px:2 * X - 1 - px, Y - 1 - py:2 * Y - 1 - py]
    _close("check2d_impulse", name, ex, y, expected,
           tolerance2d.conv2d_bound(u, kx, ky, D, ex.dtype),
           f"conv2d(unit impulse at ({px}, {py}), kernel2d(params)) == kx~ (x) ky~ around it + D")


def check2d_batch(name: str, ex: Example2d) -> None:
    """Each batch row is computed alone: apply2d(u)[b] == apply2d(u[b:b+1]); permuting the
    batch permutes the output; the same for conv2d."""
    rng = _rng(ex, 9)
    u, kx, ky, D = _conv_inputs(ex, rng)
    perm = rng.permutation(ex.batch)
    with session(name, ex.dtype) as bk:
        params = make_params2d(bk, name, ex)
        state = oracle2d.params_state2d(params, bk)
        y = _apply(bk, ex, params, u)
        bound = tolerance2d.layer2d_bound(state, ex.config, u, ex.dtype)
        for b in range(ex.batch):
            _close("check2d_batch", name, ex, _apply(bk, ex, params, u[b:b + 1]), y[b:b + 1],
                   2 * bound[b:b + 1], f"layer: row {b} of the batch == the image alone")
        _close("check2d_batch", name, ex, _apply(bk, ex, params, u[perm]), y[perm],
               2 * bound[perm], f"layer: permuting the batch by {perm.tolist()}")
        yc = _conv2d(bk, u, kx, ky, D)
        bound = tolerance2d.conv2d_bound(u, kx, ky, D, ex.dtype)
        for b in range(ex.batch):
            _close("check2d_batch", name, ex, _conv2d(bk, u[b:b + 1], kx, ky, D), yc[b:b + 1],
                   2 * bound[b:b + 1], f"conv2d: row {b} of the batch == the image alone")


# --- parameters ---------------------------------------------------------------------------------

def check2d_init(name: str, ex: Example2d) -> None:
    """Fresh parameters: the same numbers as reference.init_state2d for the seed (draw
    order), every axis kernel row of unit norm over its full K, (N_x + N_y) 2C H d
    sub-kernel weights (reference.num_parameters2d), and the trained arrays adding up to
    config.num_parameters."""
    cfg = ex.config
    where = lambda what: f"[check2d_init] {what}\n  {ex.describe(name, 'check2d_init')}"  # noqa: E731
    with session(name, ex.dtype) as bk:
        params = sgconv.init2d(cfg, seed=ex.seed, dtype=ex.dtype, backend=name)
        state = oracle2d.params_state2d(params, bk)
        full = [_np(bk, k) for k in sgconv.kernel2d(params, cfg.kernel_lengths)]
        trained = sum(math.prod(tuple(w.shape)) for a in "xy"
                      for w in getattr(params, "kernels_" + a))
        kernel_weights = trained
        trained += sum(math.prod(tuple(x.shape)) for x in (params.D, params.out_weight,
                                                           params.out_bias))
        if cfg.learnable_decay:
            trained += 2 * ex.d_model
    ref = reference.init_state2d(ex.d_model, ex.sizes, ex.channels, ex.kernel_dim, ex.n_scales,
                                 ex.decay_min, ex.decay_max, ex.learnable_decay,
                                 ex.interpolation, rng=ex.seed)
    for key, value in ref.items():
        if key.startswith("kernel_norm"):
            continue                          # Z: computed (differently) on each side, below
        got = state[key]
        assert got.shape == np.shape(value), where(f"{key} has shape {got.shape}, "
                                                   f"reference {np.shape(value)}")
        assert np.array_equal(got, np.asarray(value, dtype=ex.dtype)), where(
            f"{key} differs from reference.init_state2d(seed={ex.seed}) rounded to {ex.dtype}")
    for a, k, axis in zip("xy", full, cfg.axes):
        st = oracle2d.axis_state(state, a)
        env, _ = tolerance.kernel_envelope(st, axis, axis.kernel_length)
        e = tolerance.eps(ex.dtype)
        slack = (tolerance.norm2(tolerance.kernel_bound(st, axis, axis.kernel_length, ex.dtype))
                 + e * (1.0 + tolerance.norm2(env)))
        norms = tolerance.norm2(k)
        tolerance.assert_close(norms, np.ones_like(norms), slack,
                               where(f"initial {a} kernel rows must have unit norm over K"))
    count = reference.num_parameters2d(ex.d_model, ex.sizes, ex.channels, ex.kernel_dim,
                                       ex.n_scales)
    assert kernel_weights == count == cfg.num_kernel_parameters, where(
        f"{kernel_weights} sub-kernel weights, config says {cfg.num_kernel_parameters}, "
        f"reference.num_parameters2d {count}")
    assert trained == cfg.num_parameters, where(
        f"the trained arrays hold {trained} numbers but config.num_parameters="
        f"{cfg.num_parameters}")


def check2d_dtypes_shapes(name: str, ex: Example2d) -> None:
    """Outputs keep the input's dtype and the backend's array type and device; shapes:
    kernel2d (2C, H, X) and (2C, H, Y), conv2d (B, C, H, X, Y), apply2d u's layout."""
    B, H, C = ex.batch, ex.d_model, ex.channels
    X, Y = ex.image
    u = _random(_rng(ex, 10), (B, H, X, Y), ex.dtype)
    where = lambda what: f"[check2d_dtypes_shapes] {what}\n  {ex.describe(name, 'check2d_dtypes_shapes')}"  # noqa: E501,E731
    with session(name, ex.dtype) as bk:
        fw = frameworks.framework_of(bk)

        def expect(x, shape, what, device):
            assert bk.is_native(x) and frameworks.array_framework(x) == fw, where(
                f"{what} is a {type(x).__module__}.{type(x).__name__}, not a {name} array")
            assert bk.dtype_name(x) == ex.dtype, where(f"{what} has dtype {bk.dtype_name(x)}, "
                                                       f"expected {ex.dtype}")
            assert tuple(x.shape) == shape, where(f"{what} has shape {tuple(x.shape)}, "
                                                  f"expected {shape}")
            if device is not None:
                assert frameworks.device_of(x) == device, where(
                    f"{what} is on {frameworks.device_of(x)}, its input on {device}")

        params = sgconv.init2d(ex.config, seed=ex.seed, dtype=ex.dtype, backend=name)
        for field, value in params.arrays().items():
            for i, arr in enumerate(value if field.startswith("kernels_") else (value,)):
                if arr is not None:
                    expect(arr, tuple(arr.shape), f"init2d(...).{field}", None)
        kx, ky = sgconv.kernel2d(params, (X, Y))
        dev = frameworks.device_of(params.D)
        expect(kx, (2 * C, H, X), "sgconv.kernel2d(params, (X, Y))[0]", dev)
        expect(ky, (2 * C, H, Y), "sgconv.kernel2d(params, (X, Y))[1]", dev)
        x = bk.asarray(u)
        expect(sgconv.conv2d(x, kx, ky, params.D), (B, C, H, X, Y), "sgconv.conv2d(u, kx, ky, D)",
               frameworks.device_of(x))
        xl = bk.asarray(np.ascontiguousarray(u if ex.transposed else np.moveaxis(u, 1, 3)))
        layout = (B, H, X, Y) if ex.transposed else (B, X, Y, H)
        expect(sgconv.apply2d(params, xl, transposed=ex.transposed), layout,
               f"sgconv.apply2d(params, u, transposed={ex.transposed})", frameworks.device_of(xl))
        fast = sgconv.prepare2d(params, (X, Y))
        expect(sgconv.apply2d(fast, xl, transposed=ex.transposed), layout,
               "sgconv.apply2d(prepare2d(params, (X, Y)), u)", frameworks.device_of(xl))
        for key, value in sgconv.to_state_dict2d(params).items():
            assert bk.is_native(value), where(f"to_state_dict2d(params)[{key!r}] left the "
                                              f"backend: {type(value).__name__}")


def check2d_transfer(name: str, ex: Example2d) -> None:
    """Parameters moved between backends (Params2d.to), through to/from_state_dict2d and a
    .npz file (sgconv.save / load) keep every bit and give the same outputs; the prepared
    layer (prepare2d) and the NumPy backend give the same layer."""
    cfg = ex.config
    u = _random(_rng(ex, 11), (ex.batch, ex.d_model) + ex.image, ex.dtype)
    where = lambda what: f"[check2d_transfer] {what}\n  {ex.describe(name, 'check2d_transfer')}"  # noqa: E731
    with session(name, ex.dtype) as bk, tempfile.TemporaryDirectory() as tmp:
        params = make_params2d(bk, name, ex)
        state = oracle2d.params_state2d(params, bk)
        y = _apply(bk, ex, params, u)
        bound = 2 * tolerance2d.layer2d_bound(state, cfg, u, ex.dtype)
        path = os.path.join(tmp, "params2d.npz")
        sgconv.save(path, params)
        moved = {
            f"params.to('numpy').to({name!r})": params.to("numpy").to(name),
            f"from_state_dict2d(to_state_dict2d(params), backend={name!r})":
                sgconv.from_state_dict2d(sgconv.to_state_dict2d(params), backend=name,
                                         sizes=cfg.sizes, decay_min=cfg.decay_min,
                                         decay_max=cfg.decay_max, interpolation=cfg.interpolation),
            f"load(save(params), backend={name!r})": sgconv.load(path, backend=name),
        }
        for what, q in moved.items():
            assert isinstance(q, sgconv.Params2d), where(f"{what} is a {type(q).__name__}")
            for field in ("d_model", "channels", "kernel_dim", "num_scales", "kernel_lengths",
                          "sizes", "interpolation", "learnable_decay"):
                got, want = getattr(q.config, field), getattr(cfg, field)
                assert got == want, where(f"{what}: config.{field} {got!r} != {want!r}")
            for field, value in params.arrays().items():
                other = getattr(q, field)
                pairs = zip(value, other) if field.startswith("kernels_") else [(value, other)]
                for p_, q_ in pairs:
                    if p_ is None:
                        assert q_ is None, where(f"{what}: {field} appeared")
                        continue
                    assert bk.is_native(q_) and bk.dtype_name(q_) == bk.dtype_name(p_), where(
                        f"{what}: {field} is {type(q_).__name__} {bk.dtype_name(q_)}")
                    assert np.array_equal(bk.to_numpy(p_), bk.to_numpy(q_)), where(
                        f"{what}: {field} changed")
            _close("check2d_transfer", name, ex, _apply(bk, ex, q, u), y, bound,
                   f"apply2d({what}, u) == apply2d(params, u)")
        fast = sgconv.prepare2d(params, ex.image)
        _close("check2d_transfer", name, ex, _apply(bk, ex, fast, u), y, bound,
               "apply2d(prepare2d(params, (X, Y)), u) == apply2d(params, u)")
    with session("numpy", ex.dtype) as nbk:
        y_np = _apply(nbk, ex, params.to("numpy"), u)
    _close("check2d_transfer", name, ex, y_np, y, bound,
           f"the NumPy backend on params.to('numpy') == {name} on params")


# --- gradients ----------------------------------------------------------------------------------

def check2d_gradients(name: str, ex: Example2d) -> None:
    """Autodiff backends: the gradients of <g, apply2d(params, u)> w.r.t. u, D and every
    sub-kernel of both axes, and of <gy, conv2d(u, kx, ky, D)> w.r.t. u, kx, ky and D,
    equal the reference's analytic adjoint (oracle2d, itself checked against float64
    central differences of reference.layer2d)."""
    rng = _rng(ex, 12)
    B, H, C = ex.batch, ex.d_model, ex.channels
    u = _random(rng, (B, H) + ex.image, ex.dtype)
    g = _random(rng, (B, H) + ex.image, ex.dtype)
    uc, kx, ky, D = _conv_inputs(ex, rng)
    gy = _random(rng, (B, C, H) + ex.image, ex.dtype)
    with session(name, ex.dtype) as bk:
        reason = frameworks.autodiff_unsupported(bk)
        if reason is not None:
            raise NotApplicable(reason)
        params = make_params2d(bk, name, ex)
        state = oracle2d.params_state2d(params, bk)
        Nx = len(params.kernels_x)
        layout = (lambda a: a) if ex.transposed else (lambda a: np.moveaxis(a, 1, 3))  # noqa: E731

        def layer(u_, D_, *ws):
            p = params.replace(kernels_x=tuple(ws[:Nx]), kernels_y=tuple(ws[Nx:]), D=D_)
            return sgconv.apply2d(p, u_, transposed=ex.transposed)

        if frameworks.framework_of(bk) == "jax":
            import jax                   # one compiled program per example, not one per op
            layer = jax.jit(layer)
        primals = [bk.asarray(np.ascontiguousarray(layout(u))), params.D, *params.kernels_x,
                   *params.kernels_y]
        grads = frameworks.vjp(bk, layer, primals, bk.asarray(np.ascontiguousarray(layout(g))))
        dtypes = {bk.dtype_name(t) for t in grads}
        grads = [_np(bk, t) for t in grads]

        def conv(u_, kx_, ky_, *D_):
            return sgconv.conv2d(u_, kx_, ky_, D_[0] if D_ else None)

        if frameworks.framework_of(bk) == "jax":
            import jax
            conv = jax.jit(conv)
        cprimals = [bk.asarray(uc), bk.asarray(kx), bk.asarray(ky)] + \
            ([bk.asarray(D)] if D is not None else [])
        cgrads = frameworks.vjp(bk, conv, cprimals, bk.asarray(gy))
        dtypes |= {bk.dtype_name(t) for t in cgrads}
        cgrads = [_np(bk, t) for t in cgrads]
    assert dtypes == {ex.dtype}, (f"[check2d_gradients] gradients have dtypes {sorted(dtypes)}, "
                                  f"expected {ex.dtype}\n  {ex.describe(name, 'check2d_gradients')}")
    gu, gwx, gwy, gD = oracle2d.layer2d_vjp(state, ex.config, u, g)
    bu, bwx, bwy, bD = tolerance2d.layer2d_vjp_bound(state, ex.config, u, g, ex.dtype)
    got_u = grads[0] if ex.transposed else np.moveaxis(grads[0], 3, 1)
    _close("check2d_gradients", name, ex, got_u, gu, bu, "layer: d<g, y>/du == reference adjoint")
    _close("check2d_gradients", name, ex, grads[1], gD, bD, "layer: d<g, y>/dD == reference adjoint")
    for i, (got, want, bw) in enumerate(zip(grads[2:], gwx + gwy, bwx + bwy)):
        a, j = ("x", i) if i < Nx else ("y", i - Nx)
        _close("check2d_gradients", name, ex, got, want, bw,
               f"layer: d<g, y>/dw_{a}{j} (axis {a}, sub-kernel {j}) == reference adjoint")
    cu, ckx, cky, cD = oracle2d.conv2d_vjp(uc, kx, ky, D, gy)
    bu, bkx, bky, bD = tolerance2d.conv2d_vjp_bound(uc, kx, ky, D, gy, ex.dtype)
    for got, want, bound, what in ((cgrads[0], cu, bu, "u"), (cgrads[1], ckx, bkx, "kx"),
                                   (cgrads[2], cky, bky, "ky")):
        _close("check2d_gradients", name, ex, got, want, bound,
               f"conv2d: d<gy, y>/d{what} == reference adjoint")
    if D is not None:
        _close("check2d_gradients", name, ex, cgrads[3], cD, bD,
               "conv2d: d<gy, y>/dD == reference adjoint")


#: Every 2D property by short name, in the order the suite runs them.
PROPERTIES_2D = {
    "kernel": check2d_kernel,
    "conv": check2d_conv,
    "layer": check2d_layer,
    "reach": check2d_reach,
    "linearity": check2d_linearity,
    "shift": check2d_shift,
    "impulse": check2d_impulse,
    "batch": check2d_batch,
    "init": check2d_init,
    "dtypes_shapes": check2d_dtypes_shapes,
    "transfer": check2d_transfer,
    "gradients": check2d_gradients,
}
