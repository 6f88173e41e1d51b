"""Deliberately broken backends for the 2D operator: each plants one 2D bug.

As in meta/broken.py: the NumPy backend with one thing changed, registered as
``broken2d_<bug>``.  Bugs in a backend primitive are subclass overrides; bugs in the
generic math (sgconv/_ops2d.py, and the kernel layout of sgconv/_ops.py) are wrappers of
its functions that misbehave only
when handed a broken backend with that bug, installed only while the meta-tests run.

    with installed():
        check2d_conv("broken2d_circular", ex)      # raises AssertionError

``pytest conformance --backend-plugin conformance.meta.plugin2d --backend broken2d_circular``
shows the suite failing on one of them.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

import sgconv
from sgconv import _ops, _ops2d, _switch

from . import broken
from .broken import BrokenBackend

__all__ = ["BUGS_2D", "backend_name", "install", "uninstall", "installed"]

#: bug -> what it plants.
BUGS_2D = {
    "circular": "circular instead of linear 2D convolution: FFT sizes X and Y (no padding)",
    "axes_swapped": "the axes of the outer product swapped: the y kernel applied along x "
                    "and the x kernel along y",
    "d_missing": "the skip term D u left out of the 2D spectrum",
    "anti_shift": "each axis's anti-causal half shifted by one tap (k1[j] reaches j+2 ahead)",
}


def backend_name(bug: str) -> str:
    return f"broken2d_{bug}"


class Broken2dBackend(BrokenBackend):
    """The NumPy backend, named ``broken2d_<bug>``; subclasses override primitives."""

    prefix, bugs, suite = "broken2d", BUGS_2D, "the 2D meta-tests"


class _DMissing(Broken2dBackend):
    def spectrum2d(self, kx, ky, D, nx, ny, ax, ay):
        return super().spectrum2d(kx, ky, None, nx, ny, ax, ay)


class _AntiShift(Broken2dBackend):
    # 1D's planted flip (meta/broken.py), here in each axis's layout: k1[j] moves from lag
    # -(j+1) to -(j+2).
    flip_last = broken._AntiShift.flip_last


_CLASSES = {"d_missing": _DMissing, "anti_shift": _AntiShift}


def _has(bk, bug: str) -> bool:
    return isinstance(bk, Broken2dBackend) and bk.bug == bug


def _patched(original):
    """The misbehaving versions of the _ops2d functions, each wrapping ``original[name]``."""

    def _axis_plan(bk, size, taps):
        plan = original["_axis_plan"](bk, size, taps)
        if _has(bk, "circular"):
            return plan._replace(n=size)         # FFTs of the image's own size: wraps around
        return plan

    def kernel_layout(bk, k, D, plan, bidirectional):
        if not _has(bk, "circular"):
            return original["kernel_layout"](bk, k, D, plan, bidirectional)
        # The kernel itself wrapped modulo n (lag -s at n - s): lay it out in a buffer of a
        # multiple of n that holds every tap, then fold that buffer onto n.
        wide = plan._replace(n=plan.n * -(-(k.shape[-1] + plan.anti_taps) // plan.n))
        buf = original["kernel_layout"](bk, k, D, wide, bidirectional)
        buf = np.pad(buf, [(0, 0)] * (buf.ndim - 1) + [(0, wide.n - buf.shape[-1])])
        return buf.reshape(*buf.shape[:-1], -1, plan.n).sum(-2)

    def axis_kernels(bk, config, arrays, sizes, channels=slice(None)):
        if not _has(bk, "axes_swapped"):
            return original["axis_kernels"](bk, config, arrays, sizes, channels)
        kx, ky = [], []
        for axis, a, L, out in zip(config.axes[::-1], "yx", sizes, (kx, ky)):
            kernels = tuple(w[:, channels] for w in arrays["kernels_" + a])
            pick = lambda x: None if x is None else x[..., channels]  # noqa: E731
            out.append(_ops.kernel(bk, axis, kernels, pick(arrays["multiplier_" + a]),
                                   pick(arrays["kernel_norm_" + a]), pick(arrays["decay_" + a]),
                                   length=L, pad=False))
        return kx[0], ky[0]

    return {"_axis_plan": _axis_plan, "axis_kernels": axis_kernels,
            "kernel_layout": kernel_layout}


_LOCK = threading.Lock()
_ORIGINAL: dict = {}
_DEPTH = [0]


def install() -> list[str]:
    """Register every broken 2D backend and patch sgconv._ops2d; returns the names.
    Nestable: undone by the matching number of :func:`uninstall` calls."""
    with _LOCK:
        if _DEPTH[0] == 0:
            for attr in ("_axis_plan", "axis_kernels"):
                _ORIGINAL[attr] = getattr(_ops2d, attr)
            _ORIGINAL["kernel_layout"] = _ops.kernel_layout
            for attr, fn in _patched(dict(_ORIGINAL)).items():
                setattr(_ops if attr == "kernel_layout" else _ops2d, attr, fn)
            for bug in BUGS_2D:
                cls = _CLASSES.get(bug, Broken2dBackend)
                sgconv.register_backend(backend_name(bug), lambda cls=cls, bug=bug: cls(bug),
                                        replace=True)
        _DEPTH[0] += 1
    return [backend_name(bug) for bug in BUGS_2D]


def uninstall() -> None:
    """Undo :func:`install` (the registry entries are removed from sgconv._switch
    directly: sgconv has no public way to unregister a backend, a test-only need)."""
    with _LOCK:
        if _DEPTH[0] == 0:
            return
        _DEPTH[0] -= 1
        if _DEPTH[0] == 0:
            for attr, fn in _ORIGINAL.items():
                setattr(_ops if attr == "kernel_layout" else _ops2d, attr, fn)
            _ORIGINAL.clear()
            for bug in BUGS_2D:
                _switch._REGISTRY.pop(backend_name(bug), None)
                _switch._INSTANCES.pop(backend_name(bug), None)


@contextlib.contextmanager
def installed():
    """The broken 2D backends registered and the _ops2d patches active inside the block."""
    names = install()
    try:
        yield names
    finally:
        uninstall()
