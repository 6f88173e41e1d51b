"""Deliberately broken backends: each plants one bug that a correct SGConv must not have.

They are the NumPy backend with one thing changed, registered as ``broken_<bug>``.  A bug
that lives in a backend's primitives is an override in a subclass (the anti-causal
flip, the dtype handling, float32 FFTs).  A bug that lives in the generic math
(sgconv/_ops.py) is planted by wrapping that ``_ops`` function with a version that
misbehaves only when it is handed a broken backend with that bug, so every other backend
keeps computing correctly while the patches are installed.

    with installed():                        # register the backends, patch sgconv._ops
        check_conv("broken_circular", ex)    # raises AssertionError

``conformance/meta/plugin.py`` installs them for a whole pytest session, to watch the
suite fail: ``pytest conformance --backend-plugin conformance.meta.plugin
--backend broken_circular``.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

import sgconv
from sgconv import _ops, _switch
from sgconv.backends._base import Backend
from sgconv.backends.numpy import NumpyBackend

__all__ = ["BUGS", "BrokenBackend", "backend_name", "install", "uninstall", "installed"]

#: bug -> what it plants.
BUGS = {
    "circular": "circular instead of linear convolution: FFT length L (no padding), no blocks",
    "anti_shift": "the anti-causal half shifted by one tap: k1[j] reaches j+2 steps ahead",
    "z_recomputed": "Z recomputed from the current weights on every call (stored Z ignored)",
    "align_corners": "upsampling with align_corners=True instead of half-pixel centres",
    "decay_reversed": "decay in the wrong direction: scale i weighted m^i, not m^(N-1-i)",
    "d_missing": "the skip term D u left out",
    "downcast64": "float64 silently downcast: computed and returned as float32",
    "upcast32": "float32 silently upcast: computed and returned as float64",
    "f32_compute": "float64 computed with float32 FFTs and returned as float64",
}


def backend_name(bug: str) -> str:
    return f"broken_{bug}"


class BrokenBackend(NumpyBackend):
    """The NumPy backend, named ``broken_<bug>``; subclasses override primitives."""

    def __init__(self, bug: str):
        super().__init__()
        self.bug = bug
        self.name = backend_name(bug)

    def version(self) -> str:
        return f"NumPy backend with a planted bug: {BUGS[self.bug]}"

    def device_description(self) -> str:
        return "cpu (deliberately broken, for the meta-tests)"


class _AntiShift(BrokenBackend):
    # flip_last only reverses the anti-causal half before it is placed at lags -a..-1;
    # dropping its first element and padding a zero moves k1[j] from lag -(j+1) to -(j+2).
    def flip_last(self, x):
        flipped = x[..., ::-1]
        return np.concatenate([flipped[..., 1:], np.zeros_like(flipped[..., :1])], axis=-1)


class _Downcast64(BrokenBackend):
    def _convert(self, x, dtype):
        x = np.asarray(x, dtype=dtype)
        return x.astype(np.float32) if x.dtype == np.float64 else x

    def cast(self, x, dtype: str):
        return super().cast(x, "float32" if dtype == "float64" else dtype)


class _Upcast32(BrokenBackend):
    def cast(self, x, dtype: str):
        return super().cast(x, "float64" if dtype == "float32" else dtype)


class _Float32Compute(BrokenBackend):
    # Use the base class's FFT convolution so that these two primitives carry every transform.
    fft_conv = Backend.fft_conv

    def rfft(self, x, n: int):
        out = super().rfft(x.astype(np.float32), n)
        return out.astype(np.complex128) if x.dtype == np.float64 else out

    def irfft(self, x, n: int):
        out = super().irfft(x.astype(np.complex64), n)
        return out.astype(np.float64) if x.dtype == np.complex128 else out


_CLASSES = {"anti_shift": _AntiShift, "downcast64": _Downcast64, "upcast32": _Upcast32,
            "f32_compute": _Float32Compute}


def _has(bk, bug: str) -> bool:
    return isinstance(bk, BrokenBackend) and bk.bug == bug


# --- bugs in the generic math: wrappers of sgconv._ops functions ------------------------------

def _patched(original):
    """The misbehaving versions of the _ops functions, each wrapping ``original[name]``."""

    def plan_fft(bk, length, taps, bidirectional, block_size=None):
        plan = original["plan_fft"](bk, length, taps, bidirectional, block_size)
        if _has(bk, "circular"):
            # One FFT of length L (or just enough to hold the kernel): the tail wraps around.
            return plan._replace(n=max(length, taps + plan.anti_taps), block=None)
        return plan

    def kernel(bk, config, kernels, multiplier, kernel_norm, decay=None, length=None, pad=True):
        if _has(bk, "z_recomputed"):
            kernel_norm = _ops.normaliser(bk, config, kernels, multiplier, decay)
        return original["kernel"](bk, config, kernels, multiplier, kernel_norm, decay, length, pad)

    def _upsample(bk, w, factor, interpolation):
        if not (_has(bk, "align_corners") and interpolation == "linear" and factor > 1):
            return original["_upsample"](bk, w, factor, interpolation)
        d = w.shape[-1]
        x = np.arange(d * factor) * ((d - 1) / (d * factor - 1))          # corners aligned
        lo = np.floor(x).astype(np.int64)
        hi = np.minimum(lo + 1, d - 1)
        frac = bk.asarray(x - lo, dtype=bk.dtype_name(w), like=w)
        w_lo = bk.take(w, lo)
        return w_lo + (bk.take(w, hi) - w_lo) * frac

    def raw_kernel(bk, config, kernels, multiplier, decay=None, length=None):
        if _has(bk, "decay_reversed") and not config.learnable_decay:
            # m^i = m^(N-1) (1/m)^(N-1-i): the correct code with 1/m, times m^(N-1).
            N = config.num_scales
            k = original["raw_kernel"](bk, config, kernels, 1.0 / multiplier, decay, length)
            return k * (multiplier ** (N - 1))[:, None]
        return original["raw_kernel"](bk, config, kernels, multiplier, decay, length)

    def kernel_spectrum(bk, k, D, plan, bidirectional):
        if _has(bk, "d_missing"):
            D = None
        return original["kernel_spectrum"](bk, k, D, plan, bidirectional)

    return {"plan_fft": plan_fft, "kernel": kernel, "_upsample": _upsample,
            "raw_kernel": raw_kernel, "kernel_spectrum": kernel_spectrum}


_LOCK = threading.Lock()
_ORIGINAL: dict = {}
_DEPTH = [0]


def install() -> list[str]:
    """Register every broken backend and patch sgconv._ops; returns the backend names.

    Nestable: the patches are removed by the matching number of :func:`uninstall` calls.
    """
    with _LOCK:
        if _DEPTH[0] == 0:
            for attr in ("plan_fft", "kernel", "_upsample", "raw_kernel", "kernel_spectrum"):
                _ORIGINAL[attr] = getattr(_ops, attr)
            for attr, fn in _patched(dict(_ORIGINAL)).items():
                setattr(_ops, attr, fn)
            for bug in BUGS:
                cls = _CLASSES.get(bug, BrokenBackend)
                sgconv.register_backend(backend_name(bug), lambda cls=cls, bug=bug: cls(bug),
                                        replace=True)
        _DEPTH[0] += 1
    return [backend_name(bug) for bug in BUGS]


def uninstall() -> None:
    """Undo :func:`install`: restore sgconv._ops and unregister the broken backends.

    sgconv has no public way to unregister a backend, so the registry entries are removed
    from sgconv._switch directly (a test-only need).
    """
    with _LOCK:
        if _DEPTH[0] == 0:
            return
        _DEPTH[0] -= 1
        if _DEPTH[0] == 0:
            for attr, fn in _ORIGINAL.items():
                setattr(_ops, attr, fn)
            _ORIGINAL.clear()
            for bug in BUGS:
                _switch._REGISTRY.pop(backend_name(bug), None)
                _switch._INSTANCES.pop(backend_name(bug), None)


@contextlib.contextmanager
def installed():
    """The broken backends registered and the _ops patches active inside the block."""
    names = install()
    try:
        yield names
    finally:
        uninstall()
