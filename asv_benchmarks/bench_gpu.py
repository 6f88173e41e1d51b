"""GPU benchmarks: SGConv's convolution and layer forward on every GPU backend.

Grid: backend x L in {4096, 65536, 1048576}, float32, B=2, H=128, C=2, d=64, l_max = L
(one FFT of n = 2L points per convolution: no overlap-add).  Backends:

- ``cupy``: :class:`sgconv.backends.cupy.CupyBackend` (CuPy's ufuncs and cuFFT);
- ``torch-cuda``: the torch backend with tensors on ``cuda:0``, under ``torch.no_grad()``;
- ``jax-gpu``: the jax backend under ``jax.jit`` on JAX's first GPU (compiled in setup).

Each backend runs the generic operator, ``sgconv._ops.conv`` / ``sgconv._ops.layer``,
through a backend object passed explicitly (no global switch is touched), on float32 arrays
already on the device: the time is the operator's, not input checks' or host-to-device
copies'.  ``time_conv`` includes the kernel's spectrum (the public ``sgconv.conv`` takes a
kernel in the time domain); ``time_forward`` builds the kernel from the sub-kernels too.

Every timed call waits for the device before returning (``synchronize`` /
``block_until_ready``), and warm-up calls in ``setup`` create the cuFFT plans and
trace/compile the jitted JAX function outside the timed
region.  Without a GPU (or without the framework) ``setup`` raises NotImplementedError
with the reason, which asv reports as skipped.

``asv_benchmarks/gpu_check.py`` runs the same cases without asv and prints a table of
ratios (each backend / the fastest).
"""

from __future__ import annotations

import functools
import os

import numpy as np

try:
    from .common import sgconv
except ImportError:  # imported as a plain module (gpu_check.py adds this folder to sys.path)
    from common import sgconv

from sgconv import _ops

__all__ = ["LENGTHS", "BACKENDS", "SIZES", "prepare", "GPUConv", "GPULayer"]

#: Sequence lengths L of the GPU grid.
LENGTHS = (4096, 65536, 1048576)
#: The GPU backends and variants, as described in the module docstring.
BACKENDS = ("cupy", "torch-cuda", "jax-gpu")
#: Batch B, width H (d_model), heads C and sub-kernel length d of the benchmarked layer.
SIZES = dict(B=2, H=128, C=2, kernel_dim=64)
SEED = 0


class Case:
    """One prepared benchmark: ``run()`` launches the work and returns its output, ``wait(out)``
    blocks until the device has finished it; ``device`` describes where it runs."""

    def __init__(self, run, wait, device: str):
        self.run, self.wait, self.device = run, wait, device

    def __call__(self):
        out = self.run()
        self.wait(out)
        return out


#: A folder where the parameters of each L are kept between processes (gpu_check.py sets
#: it for its worker processes): sgconv.init at l_max = 2^20 takes tens of seconds on a CPU.
CACHE_ENV = "SGCONV_GPU_BENCH_CACHE"


@functools.lru_cache(maxsize=1)                                     # about 1 GB at L = 2^20
def _host_arrays(L: int):
    """(config, parameter arrays by name, u (B, H, L)) as float32 NumPy arrays, from SEED.

    u repeats one random block of 4096 samples along L: an FFT convolution's time does not
    depend on the values, and drawing 2^28 normals would take longer than the benchmark.
    Cached for the last L (read only): the conv and layer cases of one L share them.
    """
    cfg = sgconv.SGConvConfig(d_model=SIZES["H"], l_max=L, channels=SIZES["C"],
                              kernel_dim=SIZES["kernel_dim"])
    folder = os.environ.get(CACHE_ENV)
    path = os.path.join(folder, f"params_L{L}.npz") if folder else None
    if path and os.path.exists(path):
        params = sgconv.load(path, backend="numpy")               # the same arrays, with Z
    else:
        params = sgconv.init(cfg, seed=SEED, dtype="float32", backend="numpy")
        if path:
            partial = f"{path}.{os.getpid()}.npz"
            sgconv.save(partial, params)
            os.replace(partial, path)
    if params.config != cfg:
        raise RuntimeError(f"cached parameters at {path} are for {params.config}, not {cfg}")
    B, H = SIZES["B"], SIZES["H"]
    block = np.random.default_rng(SEED + 1).standard_normal((B, H, min(L, 4096)),
                                                            dtype=np.float32)
    u = np.tile(block, (1, 1, -(-L // block.shape[-1])))[..., :L]  # (B, H, L)
    return cfg, params.arrays(), np.ascontiguousarray(u)


def _move(arrays: dict, put):
    """The parameter dict with every array passed through ``put`` (kernels is a tuple)."""
    return {name: (tuple(put(w) for w in value) if name == "kernels"
                   else None if value is None else put(value))
            for name, value in arrays.items()}


def _functions(bk, cfg, what: str):
    """The operator as a function of device arrays: conv(u, k, D) or layer(arrays, u)."""
    if what == "conv":
        def conv(u, k, D):
            return _ops.conv(bk, u, k, D, False)                  # (B, C, H, L)
        return conv

    def layer(arrays, u):
        return _ops.layer(bk, cfg, arrays, u)                     # (B, H, L)
    return layer


def _args(bk, cfg, arrays, u, L: int, what: str):
    """The arguments of :func:`_functions`'s function; conv's kernel (C, H, L) is built here."""
    if what == "conv":
        k = _ops.kernel(bk, cfg, arrays["kernels"], arrays["multiplier"], arrays["kernel_norm"],
                        arrays["decay"], length=L, pad=False)     # (C, H, L)
        return (u, k, arrays["D"])
    return (arrays, u)


def prepare(backend: str, L: int, what: str) -> Case:
    """A warmed-up :class:`Case` for ``backend`` (one of BACKENDS) at length L.

    what: 'conv' (the convolution with D, from the time-domain kernel) or 'layer' (the
    whole forward pass).  Raises NotImplementedError saying why when it cannot run here,
    before any array is made (so that a machine without a GPU skips at once).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown GPU benchmark backend {backend!r}; expected one of {BACKENDS}")
    if what not in ("conv", "layer"):
        raise ValueError(f"what must be 'conv' or 'layer', got {what!r}")
    if backend == "cupy":
        build = _cupy()
    elif backend == "torch-cuda":
        build = _torch()
    else:
        build = _jax()
    case = build(*_host_arrays(L), L, what)
    case()                                                         # warm up: plans, kernels, jit
    case()
    return case


def _cupy():
    """A builder of CuPy cases, or NotImplementedError without a usable GPU."""
    from sgconv.backends.cupy import CupyBackend
    bk = CupyBackend()                                             # its own object, not the switch
    reason = bk.unavailable_reason()
    if reason is not None:
        raise NotImplementedError(reason)
    cp = bk.cupy

    def build(cfg, host, u_host, L, what) -> Case:
        arrays = _move(host, cp.asarray)
        args = _args(bk, cfg, arrays, cp.asarray(u_host), L, what)
        fn = _functions(bk, cfg, what)
        return Case(lambda: fn(*args), lambda out: bk.synchronize(), bk.device_description())

    return build


def _torch():
    """A builder of torch CUDA cases, or NotImplementedError without CUDA."""
    try:
        bk = sgconv.backend("torch")
    except (ImportError, ValueError) as exc:
        raise NotImplementedError(f"torch backend unavailable: {exc}") from None
    import torch
    if not torch.cuda.is_available():
        raise NotImplementedError(f"PyTorch {torch.__version__} sees no CUDA device")
    device = torch.device("cuda", 0)

    def build(cfg, host, u_host, L, what) -> Case:
        arrays = _move(host, lambda x: torch.as_tensor(x, device=device))
        u = torch.as_tensor(u_host, device=device)
        with torch.no_grad():
            args = _args(bk, cfg, arrays, u, L, what)
        fn = _functions(bk, cfg, what)

        def run():
            with torch.no_grad():
                return fn(*args)

        name = torch.cuda.get_device_name(device)
        return Case(run, lambda out: torch.cuda.synchronize(device), f"{device} ({name})")

    return build


def _jax():
    """A builder of jitted JAX GPU cases, or NotImplementedError without a JAX GPU."""
    try:
        bk = sgconv.backend("jax")
    except (ImportError, ValueError) as exc:
        raise NotImplementedError(f"jax backend unavailable: {exc}") from None
    import jax
    try:
        gpu = jax.devices("gpu")[0]
    except RuntimeError as exc:
        raise NotImplementedError(f"JAX {jax.__version__} has no GPU backend ({exc})") from None

    def build(cfg, host, u_host, L, what) -> Case:
        arrays = _move(host, lambda x: jax.device_put(x, gpu))
        u = jax.device_put(u_host, gpu)
        args = _args(bk, cfg, arrays, u, L, what)
        jitted = jax.jit(_functions(bk, cfg, what))
        return Case(lambda: jitted(*args), lambda out: out.block_until_ready(), str(gpu))

    return build


class _GPUBench:
    params = (list(BACKENDS), list(LENGTHS))
    param_names = ["backend", "L"]
    timeout = 600                                                  # L = 2^20 plans and jit
    what = ""

    def setup(self, backend, L):
        self.case = prepare(backend, L, self.what)

    def teardown(self, backend, L):
        self.__dict__.pop("case", None)                            # also after a skipped setup


class GPUConv(_GPUBench):
    """The convolution y (B, C, H, L) = k * u + D u by FFT, kernel spectrum included."""

    what = "conv"

    def time_conv(self, backend, L):
        self.case()


class GPULayer(_GPUBench):
    """The layer forward (B, H, L) -> (B, H, L): kernel, convolution, GELU, mixing linear."""

    what = "layer"

    def time_forward(self, backend, L):
        self.case()
