"""The CuPy backend.

Without a usable GPU (this CI, most laptops) the GPU tests are skipped with the reason
``available_backends()`` gives, and what can be checked here is: that reason, that a
missing or broken CuPy never breaks ``import sgconv`` (real subprocesses with stand-in
``cupy`` packages that fail the way real installs do).  The
GPU tests compare against the float64 reference and run only where CuPy does.
"""

import math
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import reference
import sgconv
from sgconv import _ops
from conformance.tolerance import assert_close, conv_bound, kernel_bound, layer_bound

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- without a GPU ----------------------------------------------------------------------------

def test_available_backends_says_why_cupy_cannot_run_or_where_it_runs():
    info = sgconv.available_backends()["cupy"]
    if info.usable:
        assert info.reason is None
        assert info.version.startswith("cupy ") and "CUDA runtime" in info.version
        assert info.device.startswith("cuda:")
        return
    assert isinstance(info.reason, str) and "cupy" in info.reason.lower()
    assert info.version is None and info.device is None
    try:
        import cupy  # noqa: F401
    except ImportError:
        assert "pip install 'sgconv[cupy-cuda12]'" in info.reason
        assert "'sgconv[cupy-cuda13]'" in info.reason


def test_use_cupy_without_gpu_raises_importerror_with_that_reason():
    info = sgconv.available_backends()["cupy"]
    if info.usable:
        pytest.skip("CuPy runs here: the GPU tests below exercise sgconv.use('cupy')")
    before = sgconv.get_backend()
    with pytest.raises(ImportError) as caught:
        sgconv.use("cupy")
    assert isinstance(caught.value, sgconv.BackendUnavailableError)
    assert str(caught.value) == info.reason
    assert sgconv.get_backend() == before


# Each stand-in is a `cupy` package put first on sys.path of a fresh interpreter.  torch and
# jax are blocked there only to keep the subprocess fast; their rows are not looked at.
_FAKES = {
    "import_error": (
        "raise ImportError('libcudart.so.12: cannot open shared object file')",
        r"CuPy is installed but failed to import \(ImportError: libcudart.so.12"),
    "runtime_error_at_import": (
        "raise RuntimeError('CUDA environment is not correctly set up')",
        r"CuPy is installed but failed to import \(RuntimeError: CUDA environment"),
    "no_device": (
        """
        import types
        __version__ = '13.9.9'
        class CUDARuntimeError(RuntimeError):
            pass
        def getDeviceCount():
            raise CUDARuntimeError('cudaErrorNoDevice: no CUDA-capable device is detected')
        cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=getDeviceCount))
        """,
        r"CuPy 13.9.9 is installed but no CUDA device is usable \(CUDARuntimeError: "
        r"cudaErrorNoDevice.*\); the cupy backend needs an NVIDIA GPU"),
    "zero_devices": (
        """
        import types
        __version__ = '13.9.9'
        cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 0))
        """,
        r"CuPy 13.9.9 is installed but found no CUDA device \(getDeviceCount\(\) = 0\)"),
    "driver_too_old": (
        """
        import types
        __version__ = '13.9.9'
        def getDeviceCount():
            raise RuntimeError('cudaErrorInsufficientDriver: CUDA driver version is insufficient')
        cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=getDeviceCount))
        """,
        r"no CUDA device is usable \(RuntimeError: cudaErrorInsufficientDriver"),
}

_PROBE = textwrap.dedent("""
    import sys
    sys.modules['torch'] = None
    sys.modules['jax'] = None
    if sys.argv[1] == 'absent':
        sys.modules['cupy'] = None   # `import cupy` fails as where CuPy is not installed
    import numpy as np
    import sgconv
    assert 'cupy' not in sys.modules or sys.modules['cupy'] is None, 'import sgconv imported cupy'
    info = sgconv.available_backends()['cupy']
    print('USABLE', info.usable)
    print('REASON', info.reason)
    try:
        sgconv.use('cupy')
    except sgconv.BackendUnavailableError as exc:
        print('USE', type(exc).__name__, isinstance(exc, ImportError), str(exc) == info.reason)
    print('BACKEND', sgconv.get_backend())
    params = sgconv.init(sgconv.SGConvConfig(d_model=2, l_max=8, kernel_dim=4), dtype='float64')
    print('NUMPY', sgconv.apply(params, np.ones((1, 2, 8))).shape)
""")


def _probe(tmp_path, init_source):
    """Run _PROBE in a fresh interpreter with a stand-in `cupy` package (None: no cupy at all)."""
    env = {**os.environ}
    env.pop("SGCONV_BACKEND", None)
    path = [ROOT]
    if init_source is not None:
        (tmp_path / "cupy").mkdir()
        (tmp_path / "cupy" / "__init__.py").write_text(textwrap.dedent(init_source))
        path.insert(0, str(tmp_path))
    env["PYTHONPATH"] = os.pathsep.join(path)
    mode = "absent" if init_source is None else "fake"
    res = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    return dict(line.split(" ", 1) for line in res.stdout.strip().splitlines())


@pytest.mark.parametrize("fake", sorted(_FAKES))
def test_broken_cupy_never_breaks_import_and_reports_why(tmp_path, fake):
    init_source, reason = _FAKES[fake]
    out = _probe(tmp_path, init_source)
    assert out["USABLE"] == "False"
    assert re.search(reason, out["REASON"]), out["REASON"]
    assert out["USE"] == "BackendUnavailableError True True"
    assert out["BACKEND"] == "numpy"
    assert out["NUMPY"] == "(1, 2, 8)"


def test_missing_cupy_names_both_pip_extras(tmp_path):
    out = _probe(tmp_path, None)
    assert out["USABLE"] == "False"
    assert "needs CuPy, which is not installed" in out["REASON"]
    assert ("pip install 'sgconv[cupy-cuda12]'" in out["REASON"]
            and "pip install 'sgconv[cupy-cuda13]'" in out["REASON"])
    assert out["USE"] == "BackendUnavailableError True True"
    assert out["NUMPY"] == "(1, 2, 8)"


# --- on a GPU ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cp():
    info = sgconv.available_backends()["cupy"]
    if not info.usable:
        pytest.skip(info.reason)
    return sgconv.backend("cupy").cupy


@pytest.fixture
def on_cupy(cp):
    """The cupy backend active for one test."""
    with sgconv.using("cupy"):
        yield


def _state64(params):
    to_numpy = sgconv.backend("cupy").to_numpy
    return {k: np.asarray(to_numpy(v), dtype=np.float64)
            for k, v in sgconv.to_state_dict(params).items()}


CASES = [
    # d_model, channels, kernel_dim, l_max, L, bidirectional
    (3, 1, 4, 32, 32, False),      # L = l_max
    (2, 2, 4, 32, 17, True),       # L < l_max, prime, bidirectional
    (4, 3, 3, 20, 1, False),       # L = 1
    (2, 2, 5, 30, 101, True),      # prime, L > K (kernel zero-padded)
    (8, 2, 16, 4096, 4096, False),  # a long sequence: one FFT of 8192 points
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("H,C,d,l_max,L,bidirectional", CASES)
def test_layer_kernel_and_conv_match_reference(cp, on_cupy, H, C, d, l_max, L, bidirectional, dtype):
    seed = (H * 1000 + C * 100 + d * 10 + L) % 2**32
    cfg = sgconv.SGConvConfig(d_model=H, l_max=l_max, channels=C, kernel_dim=d,
                              bidirectional=bidirectional, decay_min=1.5, decay_max=3.0)
    params = sgconv.init(cfg, seed=seed, dtype=dtype, backend="cupy")
    state = _state64(params)
    u_host = np.random.default_rng(seed).standard_normal((2, H, L)).astype(dtype)
    u = cp.asarray(u_host)
    where = f"cupy H={H} C={C} d={d} l_max={l_max} L={L} bi={bidirectional} " \
            f"{dtype} seed={seed}"

    k = sgconv.kernel(params, L)
    assert isinstance(k, cp.ndarray) and k.shape == (cfg.kernel_rows, H, L) and k.dtype == dtype
    k_ref = reference.kernel(state, L)
    assert_close(cp.asnumpy(k), k_ref, kernel_bound(state, cfg, L, dtype), "kernel " + where)

    y = sgconv.conv(u, k, params.D, bidirectional=bidirectional)
    u64, k64 = u_host.astype(np.float64), cp.asnumpy(k).astype(np.float64)
    y_ref = reference.conv(u64, k64, state["D"], bidirectional)
    assert isinstance(y, cp.ndarray) and y.shape == (2, C, H, L) and y.dtype == dtype
    assert_close(cp.asnumpy(y), y_ref, conv_bound(u64, k64, state["D"], bidirectional, dtype),
                 "conv " + where)

    out = sgconv.apply(params, u)
    out_ref = reference.layer(state, u64, bidirectional=bidirectional)
    assert isinstance(out, cp.ndarray) and out.shape == (2, H, L) and out.dtype == dtype
    assert_close(cp.asnumpy(out), out_ref, layer_bound(state, cfg, u64, dtype), "layer " + where)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_overlap_add_blocks_match_reference(cp, on_cupy, bidirectional):
    L, taps = 3000, 4
    rng = np.random.default_rng(L + taps)
    Cp = 4 if bidirectional else 2
    u, k, D = (rng.standard_normal(s) for s in ((2, 3, L), (Cp, 3, taps), (2, 3)))
    y_ref = reference.conv(u, np.pad(k, ((0, 0), (0, 0), (0, L - taps))), D, bidirectional)
    plan = _ops.plan_fft(sgconv.backend("cupy"), L, taps, bidirectional)
    assert plan.block is not None                                 # the planner chose blocks
    for block_size in (None, 0, taps + 5):
        y = sgconv.conv(cp.asarray(u), cp.asarray(k), cp.asarray(D), bidirectional=bidirectional,
                        block_size=block_size)
        assert_close(cp.asnumpy(y), y_ref, conv_bound(u, k, D, bidirectional, "float64"),
                     f"cupy L={L} taps={taps} block_size={block_size}")


def test_results_stay_on_the_device_in_the_input_dtype(cp, on_cupy):
    cfg = sgconv.SGConvConfig(d_model=4, l_max=64, kernel_dim=8)
    params = sgconv.init(cfg, seed=0, backend="cupy")
    u = np.random.default_rng(0).standard_normal((1, 4, 64))
    for dtype in ("float16", "float32", "float64"):
        y = sgconv.apply(params, cp.asarray(u, dtype=dtype))
        assert isinstance(y, cp.ndarray) and y.dtype == dtype
        assert y.device.id == cp.cuda.Device().id
    y16 = sgconv.apply(params, cp.asarray(u, dtype="float16"))
    y32 = sgconv.apply(params, cp.asarray(u, dtype="float16").astype("float32"))
    # float16 is computed in float32: only the final rounding separates the two.
    np.testing.assert_array_equal(cp.asnumpy(y16), cp.asnumpy(y32.astype("float16")))


def test_each_gpu_keeps_its_own_arrays(cp):
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two CUDA devices")
    cfg = sgconv.SGConvConfig(d_model=4, l_max=64, kernel_dim=8)
    with cp.cuda.Device(0):
        params = sgconv.init(cfg, seed=0, backend="cupy")        # on device 0
    u_host = np.random.default_rng(0).standard_normal((1, 4, 64)).astype("float32")
    with cp.cuda.Device(1), sgconv.using("cupy"):                 # the documented way
        y = sgconv.apply(params, cp.asarray(u_host))              # parameters copied over
    assert y.device.id == 1
    state = _state64(params)
    u64 = u_host.astype(np.float64)
    out_ref = reference.layer(state, u64)
    assert_close(cp.asnumpy(y), out_ref, layer_bound(state, cfg, u64, "float32"), "device 1")


def test_fft_plans_are_made_once_and_reused(cp, on_cupy):
    """The three cuFFT plans of a forward pass come from CuPy's plan cache on later calls."""
    cache = cp.fft.config.get_plan_cache()
    if cache.get_size() == 0 or cache.get_memsize() == 0:
        pytest.skip("CuPy's cuFFT plan cache is disabled in this process")
    B, H, C, L = 2, 8, 3, 1000                                    # B*H, C*H, B*C*H all differ
    cfg = sgconv.SGConvConfig(d_model=H, l_max=L, channels=C, kernel_dim=16)
    params = sgconv.init(cfg, seed=1, backend="cupy")
    u = cp.asarray(np.random.default_rng(1).standard_normal((B, H, L)).astype("float32"))
    n = _ops.plan_fft(sgconv.backend("cupy"), L, L, False).n
    sgconv.apply(params, u)
    plans = {key: cache.get(key) for key, _ in cache}             # documented: (key, node) pairs
    ours = [key for key in plans if n in key]
    assert len(ours) >= 3, f"expected R2C(u), R2C(k), C2R plans of length {n}, got {ours}"
    size = cache.get_curr_size()
    sgconv.apply(params, u)
    sgconv.backend("cupy").synchronize()
    for key in ours:
        assert cache.get(key) is plans[key], f"plan {key} was made again"
    assert cache.get_curr_size() == size                          # and no new ones


def test_next_fast_len_is_the_smallest_even_7_smooth(cp):
    bk = sgconv.backend("cupy")

    def smooth(m):
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        return m == 1

    candidates = [m for m in range(2, 6001, 2) if smooth(m)]
    for n in range(1, 5000):
        expected = next(m for m in candidates if m >= n)
        assert bk.next_fast_len(n) == expected, n


def test_dropout_is_seeded_scaled_and_at_the_rate(cp):
    bk = sgconv.backend("cupy")
    x = cp.full((64, 1024), 3.0, dtype=cp.float32)
    rate = 0.3
    a, b, c = (cp.asnumpy(bk.dropout(x, rate, bk.dropout_rng(seed, like=x))) for seed in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    kept = a != 0
    np.testing.assert_array_equal(a[kept], np.float32(3.0) / np.float32(1 - rate))
    N = a.size
    # The number dropped is Binomial(N, rate): 6 standard deviations is a 1e-9 false alarm.
    assert abs((~kept).sum() - rate * N) <= 6 * math.sqrt(N * rate * (1 - rate))
    generator = cp.random.default_rng(5)
    assert bk.dropout_rng(generator) is generator
    assert bk.dropout(x, rate, generator).shape == x.shape
    with pytest.raises(TypeError, match=r"dropout rng must be None, an int seed"):
        bk.dropout_rng("seed")


def test_bfloat16_and_foreign_arrays_are_refused_clearly(cp):
    bk = sgconv.backend("cupy")
    with pytest.raises(TypeError, match=r"CuPy has no bfloat16"):
        bk.cast(cp.zeros(2, cp.float32), "bfloat16")
    params = sgconv.init(sgconv.SGConvConfig(d_model=2, l_max=8, kernel_dim=4), backend="cupy")
    torch = pytest.importorskip("torch")
    with sgconv.using("cupy"):
        with pytest.raises(TypeError, match=r"active backend is 'cupy' but it was given a torch"):
            sgconv.apply(params, torch.zeros(1, 2, 8))
