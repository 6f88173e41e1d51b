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
"""

from __future__ import annotations

import threading

import numpy as np

from ._base import Backend, BackendUnavailableError

__all__ = ["CupyBackend"]

_INSTALL = ("pip install 'sgconv[cupy-cuda12]' (CUDA 12.x driver) or "
            "pip install 'sgconv[cupy-cuda13]' (CUDA 13.x driver); `nvidia-smi` shows which")
_NO_GPU_HINT = ("the cupy backend needs an NVIDIA GPU with a working driver; on this machine "
                "use the numpy, torch or jax backend")


def _cuda_version(code: int) -> str:
    """CUDA's integer version (12040) as text ('12.4')."""
    return f"{code // 1000}.{(code % 1000) // 10}"


class CupyBackend(Backend):
    """The SGConv operator on CuPy arrays (NVIDIA GPUs through cuFFT)."""

    name = "cupy"
    extra = "cupy-cuda12"
    fft_multiple = 2          # cuFFT: an even real transform is a half-length complex one

    def __init__(self):
        self._cp = None           # the cupy module, once loaded
        self._fft = None          # cupyx.scipy.fft
        self._special = None      # cupyx.scipy.special
        self._error: str | None = None  # why loading failed, remembered
        self._lock = threading.Lock()

    # --- availability ------------------------------------------------------------------

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
                    self.xp = cp
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
        try:
            props = cp.cuda.runtime.getDeviceProperties(dev.id)
        except Exception as exc:  # informational only: never let a report fail on it
            return f"cuda:{dev.id} (properties unavailable: {exc})"
        name = props.get("name", b"?")
        name = name.decode() if isinstance(name, bytes) else str(name)
        gib = props.get("totalGlobalMem", 0) / 2 ** 30
        return f"cuda:{dev.id} ({name}, {gib:.0f} GiB)"

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

    def rfft(self, x, n: int):
        return self._fft.rfft(x, n=n, axis=-1)                     # plan from CuPy's cache

    def irfft(self, x, n: int):
        return self._fft.irfft(x, n=n, axis=-1)

    def fft(self, x, n: int):
        return self._fft.fft(x, n=n, axis=-1)

    def rfft2(self, x, nx: int, ny: int):
        return self._fft.rfft2(x, s=(nx, ny), axes=(-2, -1))

    def irfft2(self, x, nx: int, ny: int):
        return self._fft.irfft2(x, s=(nx, ny), axes=(-2, -1))

    def take(self, x, index):
        cp = self.cupy
        with x.device:
            return cp.take(x, cp.asarray(index), axis=-1)

    def erf(self, x):
        return self._special.erf(x)

    def dropout_rng(self, rng, like=None):
        """A cupy.random.Generator from None, an int seed, a numpy.random.SeedSequence or a
        cupy.random.Generator (used as is), on ``like``'s device."""
        cp = self.cupy
        if isinstance(rng, cp.random.Generator):
            return rng
        if rng is None or isinstance(rng, (int, np.integer, np.random.SeedSequence)):
            device = cp.cuda.Device() if like is None else like.device
            with device:
                return cp.random.default_rng(rng)
        raise TypeError(f"the cupy backend's dropout rng must be None, an int seed, a "
                        f"numpy.random.SeedSequence or a cupy.random.Generator; got "
                        f"{type(rng).__name__}")

    def dropout(self, x, rate: float, rng):
        """Inverted dropout with cupy.random: keep with probability 1-rate, scale by 1/(1-rate)."""
        cp = self.cupy
        rng = self.dropout_rng(rng, like=x)
        with x.device:
            keep = rng.random(x.shape, dtype=x.dtype) >= rate
            return cp.where(keep, x / x.dtype.type(1.0 - rate), x.dtype.type(0))

    def synchronize(self) -> None:
        """Wait for all work queued on the current device (every stream), so a timer reads
        the truth."""
        self.cupy.cuda.Device().synchronize()
