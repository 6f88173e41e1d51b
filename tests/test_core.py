"""The consolidated core: one layer pipeline and one set of argument checks for every front end.

* The same bad value raises the same error type and message through ``sgconv.apply``
  (NumPy), ``sgconv.torch`` (module and functional) and ``sgconv.jax``.
* ``sgconv.prepare`` (the kernel's spectrum once) equals ``apply`` on every backend.
* Channel chunks: the threshold of the automatic choice is a parameter (the memory
  budget); both sides of it are exercised and give the same numbers.
* The one fast-length helper, B = 0, the dtype hint in each framework's words, and the
  torch module's warning for the released default ``l_max=1``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import sgconv
from sgconv import _ops
from sgconv.backends._base import next_smooth

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")

import sgconv.jax as sgj  # noqa: E402
import sgconv.torch.functional as SF  # noqa: E402
from sgconv.torch import SGConv, ShortKernelWarning  # noqa: E402

CFG = sgconv.SGConvConfig(d_model=3, l_max=16, kernel_dim=4)


def _fronts():
    """Each front end as a callable f(**options) on a valid (2, 3, 16) float32 input."""
    params = sgconv.init(CFG, seed=0)
    u = np.random.default_rng(0).standard_normal((2, 3, 16)).astype(np.float32)
    tp = params.to("torch")
    jp = sgj.as_jax_params(params)
    module = SGConv.from_params(params)

    def torch_functional(**kw):
        chunk = kw.pop("channel_chunk", None)
        return SF.layer(torch.as_tensor(u), tp.kernels, tp.multiplier, tp.kernel_norm, tp.D,
                        tp.out_weight, tp.out_bias, channel_chunk=chunk, **kw)

    def torch_module(**kw):
        return SGConv.from_params(params, **kw)(torch.as_tensor(u))

    return {
        "numpy": lambda **kw: sgconv.apply(params, u, **kw),
        "torch functional": torch_functional,
        "torch module": torch_module,
        "jax": lambda **kw: sgj.apply(jp, u, **kw),
        "_module": module,
    }


# (option, bad value, the error): wrong type -> TypeError, right type out of range -> ValueError
BAD = [
    ("dropout", 1.0, ValueError), ("dropout", -0.5, ValueError), ("dropout", "0.1", TypeError),
    ("dropout", None, TypeError), ("block_size", "a", TypeError), ("block_size", -3, ValueError),
    ("block_size", 2.5, TypeError), ("block_size", True, TypeError),
    ("channel_chunk", 0, ValueError), ("channel_chunk", "x", TypeError),
    ("channel_chunk", 1.5, TypeError), ("transposed", "yes", TypeError),
    ("transposed", 1, TypeError),
]


@pytest.mark.parametrize("key,value,kind", BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_same_bad_value_same_error_everywhere(key, value, kind):
    fronts = _fronts()
    fronts.pop("_module")
    errors = {}
    for name, call in fronts.items():
        with pytest.raises((TypeError, ValueError)) as caught:
            call(**{key: value})
        errors[name] = (type(caught.value), str(caught.value))
    assert len(set(errors.values())) == 1, errors
    got, message = errors["numpy"]
    assert got is kind, (key, value, got)
    assert key in message and repr(value) in message, message


def test_length_checks_agree():
    params = sgconv.init(CFG, seed=0)
    for bad, kind in ((0, ValueError), (-1, ValueError), (2.5, TypeError), ("8", TypeError)):
        got = set()
        for call in (lambda: sgconv.kernel(params, bad), lambda: sgj.kernel(params, bad),
                     lambda: SF.kernel(params.to("torch").kernels, params.multiplier,
                                       params.kernel_norm, bad),
                     lambda: sgconv.prepare(params, bad), lambda: sgj.prepare(params, bad)):
            with pytest.raises(kind) as caught:
                call()
            got.add(str(caught.value))
        assert len(got) == 1, got


def test_dtype_hint_is_written_for_the_callers_framework():
    params = sgconv.init(CFG, seed=0)
    u = np.zeros((1, 3, 8), dtype=np.int32)
    with pytest.raises(TypeError, match=r"u\.astype\('float32'\)"):
        sgconv.apply(params, u)
    with pytest.raises(TypeError, match=r"u\.float\(\)"):
        SGConv.from_params(params)(torch.zeros(1, 3, 8, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"u\.astype"):
        sgj.apply(params, jax.numpy.zeros((1, 3, 8), dtype=jax.numpy.int32))


def test_transposed_layout_is_named_in_the_error():
    module = SGConv(3, 16, kernel_dim=4)
    with pytest.raises(ValueError, match=r"looks like \(B, L, H\): pass transposed=False"):
        module(torch.zeros(2, 16, 3))
    module = SGConv(3, 16, kernel_dim=4, transposed=False)
    with pytest.raises(ValueError, match=r"looks like \(B, H, L\): pass transposed=True"):
        module(torch.zeros(2, 3, 16))


def test_empty_batch_gives_an_empty_output_everywhere():
    params = sgconv.init(CFG, seed=0)
    y = sgconv.apply(params, np.zeros((0, 3, 16), np.float32))
    assert y.shape == (0, 3, 16)
    m = SGConv.from_params(params)
    u = torch.zeros(0, 3, 16, requires_grad=True)
    out = m(u)
    assert out.shape == (0, 3, 16)
    out.sum().backward()                                         # and it differentiates
    assert u.grad.shape == (0, 3, 16) and m.kernel_list[0].grad.abs().sum() == 0
    assert sgj.apply(params, np.zeros((0, 3, 16), np.float32)).shape == (0, 3, 16)


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_prepare_equals_apply(backend):
    params = sgconv.init(sgconv.SGConvConfig(d_model=3, l_max=40, kernel_dim=4, channels=2,
                                             bidirectional=True), seed=1)
    u = np.random.default_rng(1).standard_normal((2, 3, 40)).astype(np.float32)
    with sgconv.using(backend) as bk:
        p = params.to(backend)
        fast = sgconv.prepare(p, 40)
        assert isinstance(fast, sgconv.Prepared) and fast.length == 40
        want = bk.to_numpy(sgconv.apply(p, u))
        for chunk in (None, 1, 2):
            got = bk.to_numpy(sgconv.apply(fast, u, channel_chunk=chunk))
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        with pytest.raises(ValueError, match=r"made for sequences of length 40, got u of length 39"):
            sgconv.apply(fast, u[..., :39])
        with pytest.raises(ValueError, match="block_size is fixed"):
            sgconv.apply(fast, u, block_size=0)
        with pytest.raises(ValueError, match="return_kernel needs the parameters"):
            sgconv.apply(fast, u, return_kernel=True)
    other = "numpy" if backend != "numpy" else "torch"
    with sgconv.using(other):
        with pytest.raises(TypeError, match=r"holds arrays of another framework"):
            sgconv.apply(fast, u)


def test_memory_budget_sets_the_automatic_chunk_and_both_sides_agree():
    cfg = sgconv.SGConvConfig(d_model=6, l_max=64, kernel_dim=4)
    params = sgconv.init(cfg, seed=2)
    u = np.random.default_rng(2).standard_normal((2, 6, 64)).astype(np.float32)
    bk = sgconv.backend("numpy")
    plan = _ops.layer_plan(bk, cfg, 64)
    one_channel = 2 * plan.n * 4                                # B * C * n * itemsize
    assert _ops.choose_channel_chunk(cfg, 2, plan, 4) is None   # 64 MiB: all at once
    calls = []
    real = _ops.conv_with_spectrum

    def counted(*a, **k):
        calls.append(a[1].shape[1])                             # channels in this chunk
        return real(*a, **k)

    results = {}
    for budget, chunks in ((one_channel, [1] * 6), (2 * one_channel + 1, [2, 2, 2]),
                           (5 * one_channel, [5, 1]), (6 * one_channel, [6])):
        with sgconv.memory_budget(budget):
            calls.clear()
            _ops.conv_with_spectrum = counted
            try:
                results[budget] = sgconv.apply(params, u)
            finally:
                _ops.conv_with_spectrum = real
            assert calls == chunks, (budget, calls)
    base = results[6 * one_channel]
    for y in results.values():
        np.testing.assert_allclose(y, base, rtol=0, atol=2e-6)
    assert sgconv.get_memory_budget() == 64 << 20
    previous = sgconv.set_memory_budget(1 << 20)
    assert previous == 64 << 20 and sgconv.get_memory_budget() == 1 << 20
    sgconv.set_memory_budget(previous)
    for bad in (0, -1, 2.5, "1"):
        with pytest.raises(TypeError, match="positive int of bytes"):
            sgconv.set_memory_budget(bad)


def test_dropout_draws_a_fresh_mask_for_every_chunk():
    """One seed, several chunks: each chunk continues the stream (masks differ per chunk),
    and the rate holds over the whole output."""
    cfg = sgconv.SGConvConfig(d_model=4, l_max=256, kernel_dim=4)
    params = sgconv.init(cfg, seed=3).replace(out_weight=np.eye(4, dtype=np.float32))
    u = np.abs(np.random.default_rng(3).standard_normal((8, 4, 256))).astype(np.float32) + 1
    for backend in ("numpy", "torch"):
        with sgconv.using(backend) as bk:
            p = params.to(backend)
            y = bk.to_numpy(sgconv.apply(p, u, dropout=0.5, rng=7, channel_chunk=1))
            y0 = bk.to_numpy(sgconv.apply(p, u))
            dropped = (y - bk.to_numpy(p.out_bias)[None, :, None]) == 0
            assert not np.array_equal(dropped[:, 0], dropped[:, 1]), backend
            n = dropped.size
            # Binomial(n, 1/2): 6 standard deviations is a 1e-9 false alarm
            assert abs(dropped.sum() - n / 2) <= 6 * np.sqrt(n / 4), backend
            kept = ~dropped
            b = bk.to_numpy(p.out_bias)[None, :, None]
            # kept: y = b + 2 g exactly up to the float32 roundings of the two sums
            err = np.abs((y - b) - 2 * (y0 - b))[kept]
            assert np.all(err <= 4 * 2.0 ** -23 * (np.abs(y) + 2 * np.abs(y0))[kept]), backend


def test_next_smooth_is_the_smallest_smooth_multiple():
    def smooth(m, primes):
        for p in primes:
            while m % p == 0:
                m //= p
        return m == 1

    for primes, multiple in (((2, 3, 5, 7), 1), ((2, 3, 5, 7), 2), ((2, 3, 5), 1), ((3, 5), 1)):
        for n in list(range(1, 600)) + [32767, 65537, 100003]:
            got = next_smooth(n, primes, multiple)
            want = next(m for m in range(max(n, multiple), 4 * n + 4 * multiple)
                        if m % multiple == 0 and smooth(m // multiple, primes))
            assert got == want, (n, primes, multiple)


def test_released_default_l_max_warns_once_at_construction():
    with pytest.warns(ShortKernelWarning, match=r"l_max=1: its kernel has only K=64 taps"):
        m = SGConv(8)
    assert m.config.l_max == 1 and m.config.kernel_length == 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m(torch.randn(1, 8, 100))                               # forward never warns
        SGConv(8, 1)                                            # explicit l_max=1: no warning
        SGConv(8, 1024)
    from sgconv.torch import GConv
    with pytest.warns(ShortKernelWarning):
        GConv(8)
