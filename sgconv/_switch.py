"""The backend switch: which array framework ``sgconv.apply`` and friends compute with.

``use(name)`` sets the process-wide backend that every thread sees; ``using(name)``
overrides it for one block in the current context only (a :mod:`contextvars` variable,
so threads and asyncio tasks each keep their own override).  The first time a backend
is needed with none set, the ``SGCONV_BACKEND`` environment variable decides, else
``numpy``.  Frameworks are imported only when their backend is first used.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import threading
from typing import Callable, NamedTuple

from .backends._base import Backend, BackendUnavailableError, structures

__all__ = ["use", "using", "get_backend", "backend", "available_backends",
           "register_backend", "BackendInfo", "known_backends"]

# name -> "module:attribute" of a Backend subclass, or a zero-argument factory.
_REGISTRY: dict[str, str | Callable[[], Backend]] = {
    "numpy": "sgconv.backends.numpy:NumpyBackend",
    "torch": "sgconv.backends.torch:TorchBackend",
    "jax": "sgconv.backends.jax:JaxBackend",
    "cupy": "sgconv.backends.cupy:CupyBackend",
}
_INSTANCES: dict[str, Backend] = {}
_LOCK = threading.RLock()

_global_name: str | None = None  # set by use(), or from SGCONV_BACKEND on first use
_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("sgconv_backend",
                                                                       default=None)


class BackendInfo(NamedTuple):
    """One row of :func:`available_backends`."""

    name: str
    usable: bool
    reason: str | None  # why not usable; None when usable
    version: str | None
    device: str | None


def known_backends() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def _check_name(name) -> str:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown sgconv backend {name!r}; expected one of "
                         f"{', '.join(map(repr, _REGISTRY))} (or register_backend() a new one)")
    return name


def _instance(name: str) -> Backend:
    """The backend object for a registered name, created once (framework not yet imported)."""
    with _LOCK:
        inst = _INSTANCES.get(name)
        if inst is None:
            entry = _REGISTRY[name]
            if isinstance(entry, str):
                module_name, attr = entry.split(":")
                inst = getattr(importlib.import_module(module_name), attr)()
            else:
                inst = entry()
            if not isinstance(inst, Backend):
                raise TypeError(f"backend factory for {name!r} returned {type(inst).__name__}, "
                                f"expected an sgconv.backends.Backend")
            _INSTANCES[name] = inst
        return inst


def backend(name: str | None = None) -> Backend:
    """The loaded backend object for ``name`` (default: the active one).

    Raises ValueError for an unknown name and BackendUnavailableError (an ImportError)
    naming the pip extra when the framework is missing or cannot run here.
    """
    name = get_backend() if name is None else _check_name(name)
    inst = _instance(name)
    inst.load()
    for cls, data, static in structures():      # e.g. JAX learns Params as a pytree
        inst.register_structure(cls, data, static)
    return inst


def _default_name() -> str:
    global _global_name
    with _LOCK:
        if _global_name is None:
            env = os.environ.get("SGCONV_BACKEND", "").strip()
            if env:
                if env not in _REGISTRY:
                    raise ValueError(f"SGCONV_BACKEND={env!r} is not a known sgconv backend; "
                                     f"expected one of {', '.join(map(repr, _REGISTRY))}")
                _global_name = env
            else:
                _global_name = "numpy"
        return _global_name


def get_backend() -> str:
    """The name of the backend in force here: a ``using`` block's, else the process-wide one."""
    override = _override.get()
    return override if override is not None else _default_name()


def use(name: str) -> str:
    """Set the process-wide backend (seen by every thread) and return the previous name.

    The framework is loaded now, so a missing one fails here, not at the first call;
    on any error nothing changes.
    """
    global _global_name
    name = _check_name(name)
    backend(name)  # raises if unusable; the switch is left as it was
    with _LOCK:
        previous = _default_name()
        _global_name = name
    return previous


@contextlib.contextmanager
def using(name: str):
    """Use backend ``name`` inside the block only (restored on exit and on error; nestable)."""
    name = _check_name(name)
    backend(name)
    token = _override.set(name)
    try:
        yield backend(name)
    finally:
        _override.reset(token)


def register_backend(name: str, factory: Callable[[], Backend], *, replace: bool = False) -> None:
    """Make a third-party backend available under ``name``.

    factory: a zero-argument callable returning a :class:`sgconv.backends.Backend`; it is
    called once, the first time the backend is needed.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"backend name must be an identifier string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    with _LOCK:
        if name in _REGISTRY and not replace:
            raise ValueError(f"backend {name!r} is already registered; pass replace=True")
        _REGISTRY[name] = factory
        _INSTANCES.pop(name, None)


def available_backends() -> dict[str, BackendInfo]:
    """Every known backend: whether it can run here, and if not, why not.

    Checking a backend imports its framework (once); nothing else changes.
    """
    out = {}
    for name in _REGISTRY:
        try:
            inst = _instance(name)
            reason = inst.unavailable_reason()
        except BackendUnavailableError as exc:
            inst, reason = None, str(exc)
        except Exception as exc:  # a broken third-party backend is reported, not fatal
            inst, reason = None, f"{type(exc).__name__}: {exc}"
        if reason is None:
            out[name] = BackendInfo(name, True, None, inst.version(), inst.device_description())
        else:
            out[name] = BackendInfo(name, False, reason, None, None)
    return out
