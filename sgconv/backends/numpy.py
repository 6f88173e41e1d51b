"""NumPy/SciPy backend, the default: needs no GPU and no framework.

FFTs go through :mod:`scipy.fft` (real transforms, lengths from its ``next_fast_len``, and
``workers=`` so that the transforms run on every core).  float32 stays float32 and float64
stays float64: scipy.fft computes each in its own precision.
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
    xp = np

    def __init__(self, workers: int | None = None):
        #: Threads scipy.fft may use; None means every core this process may run on.
        self.workers = workers

    def version(self) -> str:
        return f"numpy {np.__version__}, scipy {scipy.__version__}"

    def device_description(self) -> str:
        return f"cpu ({self._workers()} FFT workers)"

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

    def empty(self, shape, dtype: str, like=None):
        return np.empty(shape, dtype=dtype)

    def next_fast_len(self, n: int) -> int:
        return scipy.fft.next_fast_len(n, real=True)

    def _workers(self) -> int:
        return self.workers if self.workers is not None else _default_workers()

    def rfft(self, x, n: int):
        return scipy.fft.rfft(x, n=n, axis=-1, workers=self._workers())

    def irfft(self, x, n: int):
        return scipy.fft.irfft(x, n=n, axis=-1, workers=self._workers())

    def fft_conv(self, u, k_f, n: int, keep: int):
        """irfft(rfft(u, n)[:, None] * k_f, n)[..., :keep], the product taken in place.

        When the product has u's spectrum's shape (C = 1, the common case) it is written
        into that spectrum, a temporary of ours, instead of a fresh B*H*F complex buffer:
        a fresh 268 MB buffer at B=8, H=256, L=16384 float32 doubled the time of
        sgconv.conv there (median of 9 interleaved runs, 0.79 s vs 0.37 s).
        """
        u_f = self.rfft(u, n)[:, None]                             # (B, 1, H, ..., F)
        k_f = k_f.reshape(k_f.shape[:2] + (1,) * (u.ndim - 3) + k_f.shape[-1:])
        if np.broadcast_shapes(u_f.shape, k_f.shape) == u_f.shape and \
                u_f.dtype == np.result_type(u_f, k_f):
            prod = np.multiply(u_f, k_f, out=u_f)
        else:
            prod = u_f * k_f
        return self.irfft(prod, n)[..., :keep]                     # (B, C, H, ..., keep)

    # --- two-dimensional SGConv ----------------------------------------------------------

    def fft(self, x, n: int):
        return scipy.fft.fft(x, n=n, axis=-1, workers=self._workers())

    def rfft2(self, x, nx: int, ny: int):
        return scipy.fft.rfft2(x, s=(nx, ny), workers=self._workers())

    def irfft2(self, x, nx: int, ny: int):
        return scipy.fft.irfft2(x, s=(nx, ny), workers=self._workers())

    def fft_conv2d(self, u, k_f, nx: int, ny: int):
        """irfft2(rfft2(u) * k_f)[..., :X, :Y], pruned: only X of the nx padded rows are
        non-zero in and wanted out, so the y transforms run on X rows, not nx
        (B=8, H=96, 56 x 56, float32, 2 workers: 0.09 s against 0.16 s for
        rfft2/irfft2 of the padded image); the product is taken in place when C = 1."""
        X, Y = u.shape[-2:]
        w = self._workers()
        u_f = scipy.fft.rfft(u, n=ny, axis=-1, workers=w)              # (B, H, X, F)
        u_f = scipy.fft.fft(u_f, n=nx, axis=-2, workers=w)[:, None]    # (B, 1, H, nx, F)
        if np.broadcast_shapes(u_f.shape, k_f.shape) == u_f.shape and \
                u_f.dtype == np.result_type(u_f, k_f):
            prod = np.multiply(u_f, k_f, out=u_f)
        else:
            prod = u_f * k_f
        y = scipy.fft.ifft(prod, axis=-2, workers=w, overwrite_x=True)[..., :X, :]
        return scipy.fft.irfft(y, n=ny, axis=-1, workers=w)[..., :Y]  # (B, C, H, X, Y)

    def take(self, x, index):
        return np.take(x, index, axis=-1)

    def update_runs(self, sums, rows, lengths):
        """In place, five passes and no temporary: new (P, B, H) arrays every step cost 7x
        the in-place update (H=256, P=713, B=1, float64: 3.4-5.7 ms vs 0.5 ms per step on
        the project's CPU), and a float64 temporary for l * leave 1.5 ms of page faults at
        B=8.  The float32 inputs are added to the float64 sums exactly, and ``rows`` (the
        gather's own copy) is scaled in place by l, exactly (l is a power of two)."""
        S, M = sums[0], sums[1]
        np.add(M, S, out=M)                                         # uses S before the step
        np.add(S, rows[:-1], out=S, dtype=S.dtype)
        np.subtract(S, rows[1:], out=S, dtype=S.dtype)
        leave = rows[1:]
        leave *= lengths                                            # l * leave, exact
        np.subtract(M, leave, out=M, dtype=M.dtype)
        return sums

    def erf(self, x):
        return scipy.special.erf(x)

    def dropout_rng(self, rng, like=None):
        """A numpy.random.Generator from None, an int seed, a SeedSequence or a Generator."""
        return np.random.default_rng(rng)

    def dropout(self, x, rate: float, rng):
        keep = self.dropout_rng(rng).random(x.shape) >= rate
        return np.where(keep, x / np.asarray(1.0 - rate, dtype=x.dtype), np.zeros((), x.dtype))

    def linear_channels(self, y, weight, bias, out=None):
        if out is not None:
            out += np.matmul(weight, y)                            # our own buffer: in place
            return out
        return np.matmul(weight, y) + bias[:, None]
