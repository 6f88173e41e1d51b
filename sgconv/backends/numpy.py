"""NumPy/SciPy backend, the default: needs no GPU and no framework.

FFTs go through :mod:`scipy.fft` (real transforms, lengths from ``next_fast_len``, and
``workers=`` so that both halves of the spectrum product run on every core).
float32 stays float32 and float64 stays float64: scipy.fft computes each in its own
precision.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.fft
import scipy.special

from ._base import Backend

__all__ = ["NumpyBackend"]


def _default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class NumpyBackend(Backend):
    name = "numpy"
    extra = ""

    def __init__(self, workers: int | None = None):
        #: Threads scipy.fft may use; None means every core this process may run on.
        self.workers = workers

    def version(self) -> str:
        return f"numpy {np.__version__}, scipy {scipy.__version__}"

    def device_description(self) -> str:
        return f"cpu ({self.workers or _default_workers()} FFT workers)"

    def is_native(self, x) -> bool:
        return isinstance(x, np.ndarray)

    def _convert(self, x, dtype):
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x)

    def dtype_name(self, x) -> str:
        return np.asarray(x).dtype.name

    def cast(self, x, dtype: str):
        if dtype == "bfloat16":
            raise TypeError("the numpy backend has no bfloat16; use float32 or float64")
        return x.astype(dtype, copy=False)

    def zeros(self, shape, dtype: str, like=None):
        return np.zeros(shape, dtype=dtype)

    def next_fast_len(self, n: int) -> int:
        return scipy.fft.next_fast_len(n, real=True)

    def _workers(self) -> int:
        return self.workers if self.workers is not None else _default_workers()

    def rfft(self, x, n: int):
        return scipy.fft.rfft(x, n=n, axis=-1, workers=self._workers())

    def irfft(self, x, n: int):
        return scipy.fft.irfft(x, n=n, axis=-1, workers=self._workers())

    def take(self, x, index):
        return np.take(x, index, axis=-1)

    def concat(self, arrays, axis: int = -1):
        return np.concatenate(arrays, axis=axis)

    def pad_last(self, x, before: int, after: int):
        widths = [(0, 0)] * (x.ndim - 1) + [(before, after)]
        return np.pad(x, widths)

    def flip_last(self, x):
        return x[..., ::-1]

    def sqrt(self, x):
        return np.sqrt(x)

    def erf(self, x):
        return scipy.special.erf(x)

    def exp(self, x):
        return np.exp(x)

    def log(self, x):
        return np.log(x)

    def dropout(self, x, rate: float, rng):
        generator = np.random.default_rng(rng)
        keep = generator.random(x.shape) >= rate
        return np.where(keep, x / np.asarray(1.0 - rate, dtype=x.dtype), np.zeros((), x.dtype))

    def spectral_product(self, u_f, k_f):
        # Measured fast path: when the product has u_f's shape (C = 1, the common case),
        # multiply into u_f, a temporary of ours, instead of allocating another B*H*F
        # complex buffer: a fresh 268 MB buffer at B=8, H=256, L=16384 float32 doubled the
        # time of sgconv.conv there (median of 9 interleaved runs, 0.79 s vs 0.37 s).
        if np.broadcast_shapes(u_f.shape, k_f.shape) == u_f.shape and u_f.dtype == \
                np.result_type(u_f, k_f):
            return np.multiply(u_f, k_f, out=u_f)
        return u_f * k_f
