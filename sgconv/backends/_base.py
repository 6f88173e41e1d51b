"""What a backend is: the few array operations that differ between frameworks.

The SGConv math in :mod:`sgconv._ops` is written once against this interface.  A backend
file implements array creation and conversion, the real FFT pair, device handling, dropout's
randomness and, where a benchmark showed it pays, a fast path.  Everything else (slicing,
``*``, ``+``, ``@``, ``.reshape``) is spelled the same way in NumPy, CuPy, PyTorch and JAX
and is used directly by the generic code; elementwise functions default to the backend's
array namespace ``xp``.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["Backend", "BackendUnavailableError", "array_framework", "next_smooth",
           "register_structure"]


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


@functools.lru_cache(maxsize=4096)
def next_smooth(n: int, primes: tuple = (2, 3, 5, 7), multiple: int = 1) -> int:
    """The smallest m >= n that is ``multiple`` times a product of ``primes``: a fast FFT length.

    The FFTs of PyTorch (MKL on CPU, cuFFT), XLA (DUCC on CPU) and CuPy (cuFFT) have
    kernels for the radices 2, 3, 5 and 7.  Measured on the project's 2-core CPU: 7-smooth
    lengths took 0.65x (torch, rfft + irfft of 2**21 floats over 24 target lengths) and
    0.75x (JAX, 14 lengths) the time of the next power of two, and 5- or 11-smooth lengths
    were no faster.  cuFFT computes an even real transform as a half-length complex one,
    hence ``multiple=2`` on GPUs.  (The NumPy backend uses scipy.fft.next_fast_len, which
    knows its own transform.)
    """
    if n <= multiple:
        return multiple
    target = -(-n // multiple)                                      # multiple * s >= n
    best = 1 << (target - 1).bit_length() if 2 in primes else None
    stack = [(1, 0)]
    while stack:                                                    # every smooth s < best
        value, i = stack.pop()
        if value >= target:
            best = value if best is None or value < best else best
            continue
        for j in range(i, len(primes)):
            nxt = value * primes[j]
            if best is None or nxt < best:
                stack.append((nxt, j))
    return multiple * best


# Dataclasses of array leaves that a framework may want to know as structured containers
# (JAX registers each as a pytree).  The core registers its types here; a backend's
# ``register_structure`` hook is given every one of them when the backend is loaded.
_STRUCTURES: list = []


def register_structure(cls, *, data: tuple, static: tuple) -> None:
    """Declare ``cls`` (a dataclass) as arrays ``data`` plus static metadata ``static``."""
    _STRUCTURES.append((cls, tuple(data), tuple(static)))


def structures() -> tuple:
    return tuple(_STRUCTURES)


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
    #: The array namespace of the elementwise defaults (numpy, cupy, jax.numpy, torch).
    xp = None
    #: FFT lengths: ``multiple`` times a product of these primes (see :func:`next_smooth`).
    fft_primes: tuple = (2, 3, 5, 7)
    fft_multiple: int = 1

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

    def register_structure(self, cls, data: tuple, static: tuple) -> None:
        """Teach the framework a dataclass of arrays (see :func:`register_structure`)."""

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

    def cast_hint(self, name: str) -> str:
        """How a user of this framework converts ``name`` to float32 (for error messages)."""
        return f"{name}.astype('float32')"

    def zeros(self, shape, dtype: str, like=None):
        raise NotImplementedError

    def empty(self, shape, dtype: str, like=None):
        """An array to be filled (uninitialised where the framework allows it)."""
        return self.zeros(shape, dtype, like)

    # --- the operations the generic math needs -----------------------------------------

    def next_fast_len(self, n: int) -> int:
        """The smallest FFT length >= n that this backend's FFT computes fast."""
        return next_smooth(int(n), self.fft_primes, self.fft_multiple)

    def rfft(self, x, n: int):
        """Real FFT of the last axis, zero-padded to n."""
        raise NotImplementedError

    def irfft(self, x, n: int):
        """Inverse of :meth:`rfft`: a real array whose last axis has length n."""
        raise NotImplementedError

    def fft_conv(self, u, k_f, n: int, keep: int):
        """y = irfft(rfft(u, n)[:, None] * k_f, n)[..., :keep]: the whole FFT convolution.

        u: (B, H, ..., P) real; k_f: (C, H, n//2+1), the spectrum of a real kernel, shared
        by every position of u's middle axes (the overlap-add blocks); returns
        (B, C, H, ..., keep).  The one hook for transform, product, inverse and crop, so
        that a backend can fuse them or give them a custom gradient.
        """
        k_f = k_f.reshape(k_f.shape[:2] + (1,) * (u.ndim - 3) + k_f.shape[-1:])
        return self.irfft(self.rfft(u, n)[:, None] * k_f, n)[..., :keep]

    def set_slice(self, x, index, value):
        """x with x[index] = value: in place where arrays are mutable (JAX: ``.at[].set``)."""
        x[index] = value
        return x

    # --- two-dimensional SGConv (sgconv/_ops2d.py) ----------------------------------------
    #
    # Defaults in the spelling that NumPy, CuPy and jax.numpy share (``xp.fft``, ``axes=``);
    # the torch backend overrides all of them.

    def fft(self, x, n: int):
        """Complex FFT of the last axis (real or complex input), zero-padded to n."""
        return self.xp.fft.fft(x, n=n, axis=-1)

    def rfft2(self, x, nx: int, ny: int):
        """Real 2D FFT of the last two axes, zero-padded to (nx, ny): (..., nx, ny//2 + 1)."""
        return self.xp.fft.rfft2(x, s=(nx, ny), axes=(-2, -1))

    def irfft2(self, x, nx: int, ny: int):
        """Inverse of :meth:`rfft2`: a real array whose last two axes are (nx, ny)."""
        return self.xp.fft.irfft2(x, s=(nx, ny), axes=(-2, -1))

    def spectrum2d(self, kx, ky, D, nx: int, ny: int, ax: int, ay: int):
        """The 2D kernel's spectrum from the two axis kernels, D folded into lag (0, 0):

            K[c, h, fx, fy] = FFT_nx(lay(kx))[c, h, fx] * RFFT_ny(lay(ky))[c, h, fy] + D[c, h]

        kx (2C, H, tx), ky (2C, H, ty): bidirectional axis kernels; lay() is the 1D layout
        (sgconv._ops.kernel_layout): k0 from lag 0 on, the first ``ax`` (``ay``) taps of k1
        reversed at the end of the length-nx (ny) buffer.  D (C, H) or None.  Returns
        (C, H, nx, ny//2 + 1) complex: the outer product of the 1D spectra, so the (X, Y)
        kernel is never formed in space.  (The layout is part of the hook so that a backend
        can keep it inside one custom op: see sgconv/backends/_torch_ops2d.py.)
        """
        from .._ops import FFTPlan, kernel_layout      # late: sgconv._ops imports this module
        lx = kernel_layout(self, kx, None, FFTPlan(nx, nx, None, ax), True)   # (C, H, <= nx)
        ly = kernel_layout(self, ky, None, FFTPlan(ny, ny, None, ay), True)   # (C, H, <= ny)
        k_f = self.fft(lx, nx)[..., :, None] * self.rfft(ly, ny)[..., None, :]
        return k_f if D is None else k_f + D[..., None, None]

    def fft_conv2d(self, u, k_f, nx: int, ny: int):
        """y = irfft2(rfft2(u, (nx, ny))[:, None] * k_f)[..., :X, :Y], the 2D FFT convolution.

        u: (B, H, X, Y) real; k_f: (C, H, nx, ny//2 + 1) from :meth:`spectrum2d`.  Returns
        (B, C, H, X, Y).  One hook for transform, product, inverse and crop, so that a
        backend can fuse or prune them or give them a custom gradient.
        """
        X, Y = u.shape[-2:]
        return self.irfft2(self.rfft2(u, nx, ny)[:, None] * k_f, nx, ny)[..., :X, :Y]

    def take(self, x, index: np.ndarray):
        """x[..., index] for a NumPy integer index (the upsampling gather)."""
        return self.xp.take(x, self.asarray(index, like=x), axis=-1)

    def concat(self, arrays, axis: int = -1):
        return self.xp.concatenate(list(arrays), axis=axis)

    def pad_last(self, x, before: int, after: int):
        """Zeros added before and after the last axis."""
        return self.xp.pad(x, [(0, 0)] * (x.ndim - 1) + [(before, after)])

    def flip_last(self, x):
        return x[..., ::-1]

    def take_rows(self, x, index):
        """x[index] along the first axis for an int array ``index`` (the decoder's gather
        of the history rows it needs)."""
        return x[index]

    def contract_rows(self, coef, x):
        """sum_p coef[p, c, h] x[p, b, h] -> (B, C, H): the decoder's output from its run
        sums (coef (P, C, H), x (P, B, H), one dtype)."""
        return self.xp.einsum("pch,pbh->bch", coef, x)

    def update_runs(self, sums, rows, lengths):
        """One decoding step of the run sums (sgconv._decode): with enter = rows[:-1] and
        leave = rows[1:] (the inputs entering and leaving each of the P runs),

            M <- M + S - l * leave,      S <- S + enter - leave

        sums: [S; M] (2, P, B, H) in the accumulator dtype; rows (P + 1, B, H) in the
        compute dtype (cast exactly: float32 -> float64), a fresh array the update may
        overwrite; lengths (P, 1, 1), powers of two in the compute dtype (so l * leave is
        exact in it).  Returns the new [S; M].  The default builds a new array; NumPy and
        PyTorch update ``sums`` in place.
        """
        rows = self.cast(rows, self.dtype_name(sums))
        S, M = sums[0], sums[1]
        enter, leave = rows[:-1], rows[1:]
        return self.concat([(S + (enter - leave))[None], (M + S - lengths * leave)[None]],
                           axis=0)

    def float64_supported(self) -> bool:
        """Whether this backend can compute in float64 here (the decoder keeps float32
        layers' running sums in float64 when it can)."""
        return True

    def sqrt(self, x):
        return self.xp.sqrt(x)

    def exp(self, x):
        return self.xp.exp(x)

    def erf(self, x):
        raise NotImplementedError

    def stop_gradient(self, x):
        """x with gradients blocked (for state such as Z); identity where there is no autodiff."""
        return x

    # --- randomness (dropout) ------------------------------------------------------------

    def dropout_rng(self, rng, like=None):
        """The caller's ``rng`` (None, an int seed, or the framework's generator/key) made
        into what :meth:`dropout` draws from, once per layer call."""
        return rng

    def fold_rng(self, rng, index: int):
        """The stream for chunk ``index`` of one call: stateful generators just continue;
        a functional key is folded with the index (chunk 0 keeps the key)."""
        return rng

    def dropout(self, x, rate: float, rng):
        """Inverted dropout: zero each element with probability ``rate``, scale the rest.

        rng: what :meth:`dropout_rng` returns, or anything it accepts."""
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

    def linear_channels(self, y, weight, bias, out=None):
        """weight (H, C*H) @ y (B, C*H, L) + bias (H,)[:, None] -> (B, H, L).

        With ``out`` (B, H, L) (which already holds the bias), the product is added to it:
        the channel chunks of the layer accumulate into one buffer.
        """
        if out is not None:
            return out + weight @ y
        return weight @ y + bias[:, None]
