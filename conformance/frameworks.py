"""What the suite needs to know per array framework, beyond sgconv's public Backend API.

* :func:`framework_of`: the framework of a backend's arrays ('numpy', 'torch', 'jax',
  'cupy', or None for one sgconv does not know);
* :func:`device_of`: the device an array lives on, as a comparable string;
* :func:`precision`: the context a dtype needs (JAX computes float64 only with x64 on:
  the suite switches it on inside the check and restores it afterwards, so the
  process-wide setting never changes);
* :func:`vjp`: reverse-mode gradients through a function of backend arrays (torch:
  ``torch.autograd.grad``; JAX: ``jax.vjp``).  A third-party differentiable backend on
  another framework needs an entry in ``_VJP`` (see conformance/README.md).

Frameworks are imported only when a backend of theirs is checked.
"""

from __future__ import annotations

import contextlib

import numpy as np

from sgconv.backends._base import array_framework

__all__ = ["framework_of", "device_of", "precision", "vjp", "autodiff_unsupported"]


def framework_of(bk) -> str | None:
    """The framework of the arrays backend ``bk`` makes ('numpy', 'torch', 'jax', 'cupy', ...)."""
    return array_framework(bk.asarray(np.zeros(1, dtype=np.float32)))


def device_of(x) -> str:
    """Where array ``x`` lives: 'cpu' for NumPy, 'cuda:0' for torch/cupy on GPU 0, ...

    For a framework the suite does not know, the array's ``device`` attribute (the
    array-API standard's), else its type name, so that a comparison still means something.
    """
    fw = array_framework(x)
    if fw == "numpy":
        return "cpu"
    if fw == "torch":
        return str(x.device)
    if fw == "jax":
        return ",".join(sorted(str(d) for d in x.devices()))
    if fw == "cupy":
        return f"cuda:{x.device.id}"
    device = getattr(x, "device", None)
    return str(device) if device is not None else type(x).__name__


@contextlib.contextmanager
def precision(bk, dtype: str):
    """Make ``dtype`` computable on ``bk`` for the duration of the block.

    JAX: float64 needs ``jax_enable_x64``; it is switched on with JAX's own context
    manager (``jax.enable_x64``, restored on exit, also on error).  Other frameworks:
    nothing to do.
    """
    if dtype == "float64" and framework_of(bk) == "jax":
        import jax
        with jax.enable_x64(True):
            yield
    else:
        yield


def _vjp_torch(fn, primals, cotangent):
    import torch
    leaves = [p.detach().clone().requires_grad_(True) for p in primals]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, grad_outputs=cotangent, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads)]


def _vjp_jax(fn, primals, cotangent):
    import jax
    _, pullback = jax.vjp(fn, *primals)
    return list(pullback(cotangent))


_VJP = {"torch": _vjp_torch, "jax": _vjp_jax}


def autodiff_unsupported(bk) -> str | None:
    """None when the suite can differentiate through ``bk``, else why not (a skip reason)."""
    if not getattr(bk, "differentiable", False):
        return f"backend {bk.name!r} is not differentiable (Backend.differentiable is False)"
    fw = framework_of(bk)
    if fw not in _VJP:
        return (f"backend {bk.name!r} says it is differentiable but its arrays are {fw!r}, for "
                f"which the suite has no autodiff adapter; add one to conformance/frameworks.py")
    return None


def vjp(bk, fn, primals, cotangent) -> list:
    """The gradients of <cotangent, fn(*primals)> w.r.t. each primal, as native arrays.

    fn maps backend arrays to one backend array of cotangent's shape.
    """
    reason = autodiff_unsupported(bk)
    if reason is not None:
        raise TypeError(reason)
    return _VJP[framework_of(bk)](fn, list(primals), cotangent)
