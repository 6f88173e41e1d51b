"""CuPy backend: the generic SGConv math on NVIDIA GPUs, with cuFFT for the transforms.

Arrays are ``cupy.ndarray`` and results stay on the device of the input.  New arrays are
made on CuPy's current device, where CuPy also launches its kernels: with several GPUs,
call sgconv inside ``with cupy.cuda.Device(k):`` for inputs on device k (parameters on
another device are copied there).

FFTs go through :mod:`cupyx.scipy.fft` (real transforms R2C/C2R), at even 2,3,5,7-smooth
lengths (:meth:`CupyBackend.next_fast_len`).  float32 runs in cuFFT's single precision,
float64 in its double precision; float16 input is computed in float32 by the core.

**cuFFT plans are cached by CuPy, not here.**  Every ``cupyx.scipy.fft`` call looks up
CuPy's per-thread, per-device LRU plan cache (``cupy.fft.config.get_plan_cache()``, 16
plans by default), keyed by everything the plan depends on: length, transform type,
batch count and device.  One forward pass needs three plans (R2C of u, R2C of the
kernel, C2R of the product), which are created on the first call and reused by every
later call of the same shape.  A private dict of ``get_fft_plan`` plans keyed by shape
would duplicate that cache without its device and thread keying or its memory bound.
A program that cycles through more than about five sequence shapes can enlarge the
cache itself (``cupy.fft.config.get_plan_cache().set_size(64)``); sgconv never changes
CuPy's global settings.

**Fused fast paths, off by default.**  ``CupyBackend.fused`` (or the environment variable
``SGCONV_CUPY_FUSED``) selects elementwise kernels that replace chains of CuPy ufunc
passes:

- ``"product"``: the frequency-domain product and the inverse FFT's 1/n in one kernel,
  whose output cuFFT then transforms in place.  (D needs no pass of its own: the core has
  already folded it into the kernel's lag-0 tap.)  Unfused, CuPy makes the product, copies
  it (C2R may overwrite its input), transforms, and divides the result by n: two more full
  passes over the largest arrays of the layer.
- ``"gelu"``: the exact GELU x/2 (1 + erf(x/sqrt 2)) in one pass instead of five.

Both are kept off until a GPU benchmark shows they pay: ``asv_benchmarks/bench_gpu.py``
and ``asv_benchmarks/gpu_check.py`` time fused against unfused in the same run, and that
measurement decides the default.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from ._base import Backend, BackendUnavailableError

__all__ = ["CupyBackend", "FUSED_PATHS", "parse_fused"]

_INSTALL = ("pip install 'sgconv[cupy-cuda12]' (CUDA 12.x driver) or "
            "pip install 'sgconv[cupy-cuda13]' (CUDA 13.x driver); `nvidia-smi` shows which")
_NO_GPU_HINT = ("the cupy backend needs an NVIDIA GPU with a working driver; on this machine "
                "use the numpy, torch or jax backend")

#: The fast paths that ``CupyBackend.fused`` can switch on.
FUSED_PATHS = ("product", "gelu")
_ENV_FUSED = "SGCONV_CUPY_FUSED"


def parse_fused(value) -> frozenset:
    """The set of fused paths named by ``value``.

    value: None, "" , "0", "none", False -> nothing; "1", "all", True -> every path in
    FUSED_PATHS; a comma-separated string or an iterable of names -> those paths.
    Unknown names raise ValueError listing the valid ones.
    """
    if value is None or value is False:
        return frozenset()
    if value is True:
        return frozenset(FUSED_PATHS)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "0", "none", "off", "false"):
            return frozenset()
        if text in ("1", "all", "on", "true"):
            return frozenset(FUSED_PATHS)
        names = [part.strip() for part in text.split(",") if part.strip()]
    else:
        try:
            names = [str(part).strip().lower() for part in value]
        except TypeError:
            raise TypeError(f"fused must be a bool, a string or an iterable of names from "
                            f"{FUSED_PATHS}, got {type(value).__name__}") from None
    unknown = sorted(set(names) - set(FUSED_PATHS))
    if unknown:
        raise ValueError(f"unknown fused path(s) {unknown}; expected names from {FUSED_PATHS}, "
                         f"'all' or 'none' (e.g. {_ENV_FUSED}=product,gelu)")
    return frozenset(names)


def _cuda_version(code: int) -> str:
    """CUDA's integer version (12040) as text ('12.4')."""
    return f"{code // 1000}.{(code % 1000) // 10}"


class CupyBackend(Backend):
    """The SGConv operator on CuPy arrays (NVIDIA GPUs through cuFFT).

    fused: which fused elementwise kernels to use (see :func:`parse_fused`); None reads
    the ``SGCONV_CUPY_FUSED`` environment variable, and its absence means none.
    """

    name = "cupy"
    extra = "cupy-cuda12"

    def __init__(self, fused=None):
        self._fused = parse_fused(os.environ.get(_ENV_FUSED) if fused is None else fused)
        self._cp = None           # the cupy module, once loaded
        self._fft = None          # cupyx.scipy.fft
        self._special = None      # cupyx.scipy.special
        self._error: str | None = None  # why loading failed, remembered
        self._lock = threading.Lock()
        self._kernels: dict = {}

    # --- availability ------------------------------------------------------------------

    @property
    def fused(self) -> frozenset:
        """The fused paths in use: a subset of FUSED_PATHS (settable, validated)."""
        return self._fused

    @fused.setter
    def fused(self, value) -> None:
        self._fused = parse_fused(value)

    def load(self) -> None:
        if self._cp is not None:
            return
        with self._lock:
            if self._cp is None and self._error is None:
                try:
                    cp, fft, special = self._import_and_probe()
                except BackendUnavailableError as exc:
                    self._error = str(exc)
                else:
                    self._fft, self._special = fft, special
                    self._cp = cp
        if self._cp is None:
            raise BackendUnavailableError(self._error)

    @staticmethod
    def _import_and_probe():
        """(cupy, cupyx.scipy.fft, cupyx.scipy.special) once a CUDA device answers, else
        BackendUnavailableError saying why."""
        try:
            import cupy
        except ModuleNotFoundError as exc:
            if exc.name != "cupy":
                raise BackendUnavailableError(
                    f"CuPy is installed but failed to import (ModuleNotFoundError: {exc}); "
                    f"reinstall the wheel that matches your CUDA driver: {_INSTALL}") from None
            raise BackendUnavailableError(f"the cupy backend needs CuPy, which is not installed: "
                                          f"{_INSTALL}") from None
        except Exception as exc:  # a broken install fails at import with anything at all
            raise BackendUnavailableError(
                f"CuPy is installed but failed to import ({type(exc).__name__}: {exc}); "
                f"reinstall the wheel that matches your CUDA driver: {_INSTALL}") from None
        version = getattr(cupy, "__version__", "?")
        try:
            # Asks the driver, creates no context.  Raises CUDARuntimeError without a
            # driver or with one too old for CuPy's runtime, RuntimeError when libcuda is
            # missing: any failure here means no GPU this process can use.
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            raise BackendUnavailableError(
                f"CuPy {version} is installed but no CUDA device is usable "
                f"({type(exc).__name__}: {exc}); {_NO_GPU_HINT}") from None
        if count < 1:
            raise BackendUnavailableError(f"CuPy {version} is installed but found no CUDA "
                                          f"device (getDeviceCount() = {count}); {_NO_GPU_HINT}")
        try:
            import cupyx.scipy.fft
            import cupyx.scipy.special
        except Exception as exc:
            raise BackendUnavailableError(
                f"CuPy {version} is installed but cupyx.scipy failed to import "
                f"({type(exc).__name__}: {exc}); reinstall CuPy: {_INSTALL}") from None
        return cupy, cupyx.scipy.fft, cupyx.scipy.special

    @property
    def cupy(self):
        """The cupy module (loads the backend)."""
        self.load()
        return self._cp

    def version(self) -> str:
        cp = self.cupy
        runtime = cp.cuda.runtime
        try:
            rt = _cuda_version(runtime.runtimeGetVersion())
            drv = _cuda_version(runtime.driverGetVersion())
        except Exception:  # version queries are informational only
            rt = drv = "?"
        return f"cupy {cp.__version__} (CUDA runtime {rt}, driver {drv})"

    def device_description(self) -> str:
        cp = self.cupy
        dev = cp.cuda.Device()
        fused = ",".join(sorted(self._fused)) or "none"
        try:
            props = cp.cuda.runtime.getDeviceProperties(dev.id)
        except Exception as exc:  # informational only: never let a report fail on it
            return f"cuda:{dev.id} (properties unavailable: {exc}; fused: {fused})"
        name = props.get("name", b"?")
        name = name.decode() if isinstance(name, bytes) else str(name)
        gib = props.get("totalGlobalMem", 0) / 2 ** 30
        return f"cuda:{dev.id} ({name}, {gib:.0f} GiB; fused: {fused})"

    # --- arrays --------------------------------------------------------------------------

    def is_native(self, x) -> bool:
        return isinstance(x, self.cupy.ndarray)

    def _convert(self, x, dtype):
        return self.cupy.asarray(x, dtype=dtype)                   # onto the current device

    def to_device_of(self, x, like):
        if x.device.id == like.device.id:
            return x
        with like.device:
            return x.copy()                                        # copies onto like's device

    def to_numpy(self, x) -> np.ndarray:
        return self.cupy.asnumpy(x)

    def dtype_name(self, x) -> str:
        return x.dtype.name

    def cast(self, x, dtype: str):
        if dtype == "bfloat16":
            raise TypeError("CuPy has no bfloat16 dtype; use float16, float32 or float64 with the "
                            "cupy backend, or the torch or jax backend for bfloat16")
        return x.astype(dtype, copy=False)

    def zeros(self, shape, dtype: str, like=None):
        cp = self.cupy
        if like is None:
            return cp.zeros(shape, dtype=dtype)
        with like.device:
            return cp.zeros(shape, dtype=dtype)

    # --- the operations the generic math needs -----------------------------------------

    def next_fast_len(self, n: int) -> int:
        # Even 2,3,5,7-smooth: cuFFT's radices are 2, 3, 5 and 7, and it computes an even-
        # length real transform as a half-length complex one (an odd one at full length).
        self.load()
        return 2 * self._fft.next_fast_len(max(1, (n + 1) // 2))

    def rfft(self, x, n: int):
        return self._fft.rfft(x, n=n, axis=-1)                     # plan from CuPy's cache

    def irfft(self, x, n: int):
        return self._fft.irfft(x, n=n, axis=-1)

    def take(self, x, index):
        cp = self.cupy
        with x.device:
            return cp.take(x, cp.asarray(index), axis=-1)

    def concat(self, arrays, axis: int = -1):
        return self.cupy.concatenate(arrays, axis=axis)

    def pad_last(self, x, before: int, after: int):
        widths = [(0, 0)] * (x.ndim - 1) + [(before, after)]
        return self.cupy.pad(x, widths)

    def flip_last(self, x):
        return x[..., ::-1]

    def sqrt(self, x):
        return self.cupy.sqrt(x)

    def erf(self, x):
        return self._special.erf(x)

    def exp(self, x):
        return self.cupy.exp(x)

    def log(self, x):
        return self.cupy.log(x)

    def dropout(self, x, rate: float, rng):
        """Inverted dropout with cupy.random: rng is None, an int seed, a
        numpy.random.SeedSequence or a cupy.random.Generator (used as is)."""
        cp = self.cupy
        if isinstance(rng, cp.random.Generator):
            generator = rng
        elif rng is None or isinstance(rng, (int, np.integer, np.random.SeedSequence)):
            with x.device:
                generator = cp.random.default_rng(rng)
        else:
            raise TypeError(f"the cupy backend's dropout rng must be None, an int seed, a "
                            f"numpy.random.SeedSequence or a cupy.random.Generator; got "
                            f"{type(rng).__name__}")
        with x.device:
            keep = generator.random(x.shape, dtype=x.dtype) >= rate
            return cp.where(keep, x / x.dtype.type(1.0 - rate), x.dtype.type(0))

    def synchronize(self) -> None:
        """Wait for all work queued on the current device (every stream), so a timer reads
        the truth."""
        self.cupy.cuda.Device().synchronize()

    # --- fused fast paths (see the module docstring; off unless self.fused says so) -----

    def _kernel(self, name: str):
        """The ElementwiseKernel ``name``, built once (CuPy compiles it per dtype on first use)."""
        kernel = self._kernels.get(name)
        if kernel is None:
            cp = self.cupy
            if name == "product":
                # y_f = u_f * k_f with broadcasting: (B, 1, H, F) x (C, H, F) -> (B, C, H, F)
                kernel = cp.ElementwiseKernel("T u, T k", "T y", "y = u * k",
                                              "sgconv_spectral_product")
            elif name == "scaled_product":
                # y_f = u_f * k_f * s, s = 1/n: the C2R transform's normalisation folded in
                kernel = cp.ElementwiseKernel("T u, T k, S s", "T y", "y = u * k * s",
                                              "sgconv_scaled_spectral_product")
            elif name == "gelu":
                kernel = cp.ElementwiseKernel(
                    "T x", "T y", "y = T(0.5) * x * (T(1) + erf(x * T(0.70710678118654752440)))",
                    "sgconv_gelu_erf")
            else:
                raise KeyError(name)
            self._kernels[name] = kernel
        return kernel

    def _fusable(self, *arrays) -> bool:
        """Same complex dtype on the same device: what the fused product kernels accept."""
        first = arrays[0]
        return (first.dtype in (np.complex64, np.complex128)
                and all(a.dtype == first.dtype and a.device.id == first.device.id
                        for a in arrays[1:]))

    def spectral_product(self, u_f, k_f):
        """y_f (B, C, H, F) = u_f (B, 1, H, F) * k_f (C, H, F): one elementwise kernel when
        ``"product"`` is fused, CuPy's broadcasting multiply otherwise."""
        if "product" in self._fused and self._fusable(u_f, k_f):
            with u_f.device:
                return self._kernel("product")(u_f, k_f)
        return u_f * k_f

    def spectral_irfft(self, u_f, k_f, n: int):
        """y (B, C, H, n) = irfft(u_f * k_f, n), the product and the inverse transform.

        Fused: one kernel writes u_f * k_f / n into a fresh buffer and cuFFT transforms that
        buffer in place with no normalisation (norm='forward' leaves the inverse unscaled),
        which saves the copy CuPy makes to protect a C2R input and the division by n after
        it.  Unfused: irfft(spectral_product(u_f, k_f), n).
        """
        if "product" not in self._fused or not self._fusable(u_f, k_f):
            return self.irfft(self.spectral_product(u_f, k_f), n)
        real = np.float32 if u_f.dtype == np.complex64 else np.float64
        with u_f.device:
            y_f = self._kernel("scaled_product")(u_f, k_f, real(1.0 / n))  # (B, C, H, F)
            return self._fft.irfft(y_f, n=n, axis=-1, norm="forward", overwrite_x=True)

    def gelu(self, x):
        """Exact GELU x/2 (1 + erf(x / sqrt 2)); one elementwise kernel when ``"gelu"`` is fused."""
        if "gelu" in self._fused and x.dtype in (np.float32, np.float64):
            with x.device:
                return self._kernel("gelu")(x)
        return super().gelu(x)
