"""GPU benchmarks: SGConv's convolution and layer forward on every GPU backend.

Grid: backend x L in {4096, 65536, 1048576}, float32, B=2, H=128, C=2, d=64, l_max = L
(one FFT of n = 2L points per convolution: no overlap-add).  Backends:

- ``cupy``: :class:`sgconv.backends.cupy.CupyBackend` with no fused kernels (its default);
- ``cupy-fused-product``: the same with the product and irfft's 1/n fused into one kernel
  and the inverse FFT in place (``fused="product"``);
- ``cupy-fused``: every fused kernel (``fused="all"``: the product and GELU);
- ``torch-cuda``: the torch backend with tensors on ``cuda:0``, under ``torch.no_grad()``;
- ``jax-gpu``: the jax backend under ``jax.jit`` on JAX's first GPU (compiled in setup).

Each backend runs the generic operator, ``sgconv._ops.conv`` / ``sgconv._ops.layer``,
through a backend object passed explicitly (no global switch is touched), on float32 arrays
already on the device: the time is the operator's, not input checks' or host-to-device
copies'.  ``time_conv`` includes the kernel's spectrum (the public ``sgconv.conv`` takes a
kernel in the time domain); ``time_forward`` builds the kernel from the sub-kernels too.

Every timed call waits for the device before returning (``synchronize`` /
``block_until_ready``), and warm-up calls in ``setup`` create the cuFFT plans, compile
the elementwise kernels and trace/compile the jitted JAX function outside the timed
region.  Without a GPU (or without the framework) ``setup`` raises NotImplementedError
with the reason, which asv reports as skipped.

``asv_benchmarks/gpu_check.py`` runs the same cases without asv and prints a table of
ratios (fused / unfused, each backend / the fastest).  That comparison decides whether a
fused path becomes the CuPy backend's default.
"""

from __future__ import annotations

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
BACKENDS = ("cupy", "cupy-fused-product", "cupy-fused", "torch-cuda", "jax-gpu")
#: Batch B, width H (d_model), heads C and sub-kernel length d of the benchmarked layer.
SIZES = dict(B=2, H=128, C=2, kernel_dim=64)
SEED = 0
_CUPY_FUSED = {"cupy": "none", "cupy-fused-product": "product", "cupy-fused": "all"}


class Case:
    """One prepared benchmark: ``run()`` launches the work and returns its output, ``wait(out)``
    blocks until the device has finished it; ``device`` describes where it runs."""

    def __init__(self, run, wait, device: str):
        self.run, self.wait, self.device = run, wait, device

    def __call__(self):
        out = self.run()
        self.wait(out)
        return out


def _host_arrays(L: int):
    """(config, parameter arrays by name, u (B, H, L)) as float32 NumPy arrays, from SEED."""
    cfg = sgconv.SGConvConfig(d_model=SIZES["H"], l_max=L, channels=SIZES["C"],
                              kernel_dim=SIZES["kernel_dim"])
    params = sgconv.init(cfg, seed=SEED, dtype="float32", backend="numpy")
    u = np.random.default_rng(SEED + 1).standard_normal((SIZES["B"], SIZES["H"], L),
                                                        dtype=np.float32)
    return cfg, params.arrays(), u


def _move(arrays: dict, put):
    """The parameter dict with every array passed through ``put`` (kernels is a tuple)."""
    return {name: (tuple(put(w) for w in value) if name == "kernels"
                   else None if value is None else put(value))
            for name, value in arrays.items()}


def _functions(bk, cfg, L: int, what: str):
    """The operator as a function of arrays: (fn, which argument tuple to pass)."""
    if what == "conv":
        def conv(u, k, D):
            return _ops.conv(bk, u, k, D, False)                  # (B, C, H, L)
        return conv
    if what == "layer":
        def layer(arrays, u):
            return _ops.layer(bk, cfg, arrays, u)                 # (B, H, L)
        return layer
    raise ValueError(f"what must be 'conv' or 'layer', got {what!r}")


def _args(bk, cfg, arrays, u, L: int, what: str):
    if what == "conv":
        k = _ops.kernel(bk, cfg, arrays["kernels"], arrays["multiplier"], arrays["kernel_norm"],
                        arrays["decay"], length=L, pad=False)     # (C, H, L)
        return (u, k, arrays["D"])
    return (arrays, u)


def prepare(backend: str, L: int, what: str) -> Case:
    """A warmed-up :class:`Case` for ``backend`` (one of BACKENDS) at length L.

    what: 'conv' (the convolution with D, from the time-domain kernel) or 'layer' (the
    whole forward pass).  Raises NotImplementedError saying why when it cannot run here.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown GPU benchmark backend {backend!r}; expected one of {BACKENDS}")
    cfg, host, u_host = _host_arrays(L)
    if backend.startswith("cupy"):
        case = _prepare_cupy(backend, cfg, host, u_host, L, what)
    elif backend == "torch-cuda":
        case = _prepare_torch(cfg, host, u_host, L, what)
    else:
        case = _prepare_jax(cfg, host, u_host, L, what)
    case()                                                         # warm up: plans, kernels, jit
    case()
    return case


def _prepare_cupy(backend, cfg, host, u_host, L, what) -> Case:
    from sgconv.backends.cupy import CupyBackend
    bk = CupyBackend(fused=_CUPY_FUSED[backend])                   # its own object, not the switch
    reason = bk.unavailable_reason()
    if reason is not None:
        raise NotImplementedError(reason)
    cp = bk.cupy
    arrays = _move(host, cp.asarray)
    args = _args(bk, cfg, arrays, cp.asarray(u_host), L, what)
    fn = _functions(bk, cfg, L, what)
    return Case(lambda: fn(*args), lambda out: bk.synchronize(), bk.device_description())


def _prepare_torch(cfg, host, u_host, L, what) -> Case:
    try:
        bk = sgconv.backend("torch")
    except (ImportError, ValueError) as exc:
        raise NotImplementedError(f"torch backend unavailable: {exc}") from None
    import torch
    if not torch.cuda.is_available():
        raise NotImplementedError(f"PyTorch {torch.__version__} sees no CUDA device")
    device = torch.device("cuda", 0)
    arrays = _move(host, lambda x: torch.as_tensor(x, device=device))
    u = torch.as_tensor(u_host, device=device)
    with torch.no_grad():
        args = _args(bk, cfg, arrays, u, L, what)
    fn = _functions(bk, cfg, L, what)

    def run():
        with torch.no_grad():
            return fn(*args)

    name = torch.cuda.get_device_name(device)
    return Case(run, lambda out: torch.cuda.synchronize(device), f"{device} ({name})")


def _prepare_jax(cfg, host, u_host, L, what) -> Case:
    try:
        bk = sgconv.backend("jax")
    except (ImportError, ValueError) as exc:
        raise NotImplementedError(f"jax backend unavailable: {exc}") from None
    import jax
    try:
        gpu = jax.devices("gpu")[0]
    except RuntimeError as exc:
        raise NotImplementedError(f"JAX {jax.__version__} has no GPU backend ({exc})") from None
    arrays = _move(host, lambda x: jax.device_put(x, gpu))
    u = jax.device_put(u_host, gpu)
    args = _args(bk, cfg, arrays, u, L, what)
    jitted = jax.jit(_functions(bk, cfg, L, what))
    return Case(lambda: jitted(*args), lambda out: out.block_until_ready(), str(gpu))


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
