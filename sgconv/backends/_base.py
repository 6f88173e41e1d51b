"""What a backend is: the few array operations that differ between frameworks.

The SGConv math in :mod:`sgconv._ops` is written once against this interface.  A backend
file implements array creation and conversion, the real FFT pair, a fast FFT length,
device handling and, where a benchmark showed it pays, a fast path.  Everything else
(slicing, ``*``, ``+``, ``@``, ``.reshape``) is spelled the same way in NumPy, CuPy,
PyTorch and JAX and is used directly by the generic code.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Backend", "BackendUnavailableError", "array_framework"]

_FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")


class BackendUnavailableError(ImportError):
    """A known backend whose framework is not installed or cannot run here."""


def array_framework(x) -> str | None:
    """The framework an array belongs to ('numpy', 'torch', 'jax', 'cupy'), or None.

    Decided from the type's module so that no framework is imported to find out.
    """
    if isinstance(x, (np.ndarray, np.generic)):
        return "numpy"
    module = type(x).__module__ or ""
    root = module.split(".", 1)[0]
    if root in ("torch", "cupy"):
        return root
    if root in ("jax", "jaxlib"):
        return "jax"
    return None


class Backend:
    """Base class of the array backends.  Subclasses set ``name`` and ``extra``.

    Arrays handed to a backend follow one rule: its own arrays pass through, NumPy arrays,
    NumPy scalars and (nested) lists are converted, and an array of another framework
    raises TypeError naming both frameworks and the fix.
    """

    name: str = ""
    #: The pip extra that installs this backend's framework: ``pip install sgconv[extra]``.
    extra: str = ""
    #: Whether gradients flow through this backend's arrays (torch, jax).
    differentiable: bool = False

    # --- availability --------------------------------------------------------------

    def load(self) -> None:
        """Import the framework; raise BackendUnavailableError naming the extra if missing."""

    def unavailable_reason(self) -> str | None:
        """None when the backend can run here, else a one-line reason."""
        try:
            self.load()
        except BackendUnavailableError as exc:
            return str(exc)
        return None

    def version(self) -> str:
        raise NotImplementedError

    def device_description(self) -> str:
        """Where this backend computes by default, e.g. 'cpu (2 threads)' or 'cuda:0 (H100)'."""
        raise NotImplementedError

    # --- arrays --------------------------------------------------------------------

    def is_native(self, x) -> bool:
        raise NotImplementedError

    def _convert(self, x, dtype):
        """Make a native array from a NumPy array (dtype: a NumPy dtype or None)."""
        raise NotImplementedError

    def asarray(self, x, dtype: str | None = None, like=None):
        """A native array from a native array, a NumPy array or a list.

        dtype: a float name ('float32', ...) to cast to, or None to keep the dtype.
        like: a native array whose device the result should live on.
        """
        if self.is_native(x):
            out = x
        else:
            owner = array_framework(x)
            if owner is not None and owner != "numpy":
                raise TypeError(
                    f"sgconv's active backend is {self.name!r} but it was given a {owner} array "
                    f"({type(x).__name__}). Convert the array to {self.name} (or NumPy) first, or "
                    f"run with the {owner} backend: sgconv.use({owner!r}) / "
                    f"`with sgconv.using({owner!r}):`.")
            try:
                arr = np.asarray(x)
            except ValueError as exc:  # ragged nested lists
                raise TypeError(f"expected a numeric array or nested lists of equal lengths, "
                                f"got a {type(x).__name__} NumPy cannot read as one: {exc}") from None
            if arr.dtype == object:
                raise TypeError(f"expected a numeric array or nested list, got {type(x).__name__} "
                                f"that NumPy reads as dtype=object")
            out = self._convert(arr, None)
        if like is not None:
            out = self.to_device_of(out, like)
        if dtype is not None and self.dtype_name(out) != dtype:
            out = self.cast(out, dtype)
        return out

    def to_device_of(self, x, like):
        """x on the device of ``like`` (a no-op for single-device backends)."""
        return x

    def to_numpy(self, x) -> np.ndarray:
        raise NotImplementedError

    def dtype_name(self, x) -> str:
        """The dtype as a plain name: 'float32', 'int64', 'complex64', 'bfloat16', ..."""
        raise NotImplementedError

    def cast(self, x, dtype: str):
        raise NotImplementedError

    def zeros(self, shape, dtype: str, like=None):
        raise NotImplementedError

    # --- the operations the generic math needs -----------------------------------------

    def next_fast_len(self, n: int) -> int:
        """The smallest FFT length >= n that this backend's FFT computes fast."""
        raise NotImplementedError

    def rfft(self, x, n: int):
        """Real FFT of the last axis, zero-padded to n."""
        raise NotImplementedError

    def irfft(self, x, n: int):
        """Inverse of :meth:`rfft`: a real array whose last axis has length n."""
        raise NotImplementedError

    def take(self, x, index: np.ndarray):
        """x[..., index] for a NumPy integer index (the upsampling gather)."""
        raise NotImplementedError

    def concat(self, arrays, axis: int = -1):
        raise NotImplementedError

    def pad_last(self, x, before: int, after: int):
        """Zeros added before and after the last axis."""
        raise NotImplementedError

    def flip_last(self, x):
        raise NotImplementedError

    def sqrt(self, x):
        raise NotImplementedError

    def erf(self, x):
        raise NotImplementedError

    def exp(self, x):
        raise NotImplementedError

    def log(self, x):
        raise NotImplementedError

    def stop_gradient(self, x):
        """x with gradients blocked (for state such as Z); identity where there is no autodiff."""
        return x

    def dropout(self, x, rate: float, rng):
        """Inverted dropout: zero each element with probability ``rate``, scale the rest."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for queued device work (GPU backends), so that a timer reads the truth."""

    # --- optional fast paths -------------------------------------------------------

    def gelu(self, x):
        """Exact GELU, x/2 (1 + erf(x / sqrt 2)); frameworks with a fused one override this."""
        return 0.5 * x * (1.0 + self.erf(x * (1.0 / 2.0 ** 0.5)))

    def upsample(self, w, factor: int, interpolation: str):
        """Optional fused stretch (C', H, d) -> (C', H, d*factor) exactly as SPEC step 1
        defines it; None (the default) makes the generic code gather and blend."""
        return None

    def linear_channels(self, y, weight, bias):
        """out (B, H, L) = weight (H, C*H) @ y (B, C*H, L) + bias (H,)[:, None]."""
        return weight @ y + bias[:, None]

    def spectral_product(self, u_f, k_f):
        """y_f (B, C, H, F) = u_f (B, 1, H, F) * k_f (C, H, F): the frequency-domain product.

        A backend may override this with a fused kernel when a benchmark shows it pays.
        """
        return u_f * k_f

    def spectral_irfft(self, u_f, k_f, n: int):
        """y (B, C, H, n) = irfft(spectral_product(u_f, k_f), n): the product, then back.

        One hook for both steps, so that a backend can fuse them (fold irfft's 1/n into the
        product, transform the product's buffer in place); by default they run in turn.
        """
        return self.irfft(self.spectral_product(u_f, k_f), n)

    def fft_conv(self, u, k_f, n: int, keep: int):
        """y = irfft(rfft(u, n)[:, None] * k_f, n)[..., :keep]: the whole FFT convolution.

        u: (B, H, ..., P) real; k_f: (C, H, ..., n//2+1), the spectrum of a real kernel;
        returns (B, C, H, ..., keep).  One hook for transform, product and crop, so that a
        backend with autodiff can give it a custom gradient (keeping spectra, not the
        length-n intermediates); by default it is rfft, then :meth:`spectral_irfft`.
        """
        return self.spectral_irfft(self.rfft(u, n)[:, None], k_f, n)[..., :keep]


FLOAT_NAMES = _FLOAT_NAMES
