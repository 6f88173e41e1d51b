"""What the suite needs to know per array framework, beyond sgconv's public Backend API.

* :func:`framework_of`: the framework of a backend's arrays ('numpy', 'torch', 'jax',
  'cupy', or None for one sgconv does not know);
* :func:`device_of`: the device an array lives on, as a comparable string;
* :func:`precision`: the context a dtype needs (JAX computes float64 only with x64 on:
  the suite switches it on inside the check and restores it afterwards, so the
  process-wide setting never changes);
* :func:`value_and_vjp`: a function of backend arrays evaluated with autodiff on, and its
  reverse-mode gradients (torch: inputs that require grad, ``torch.autograd.grad``; JAX:
  ``jax.vjp`` inside ``jax.jit``).  A third-party differentiable backend on another
  framework needs an entry in ``_VJP`` (see conformance/README.md);
* :func:`framework_layer_unsupported`: whether the framework has its own layer object
  (``sgconv.torch.SGConv``, ``sgconv.jax.SGConv``) for the suite to hold to the reference.

Frameworks are imported only when a backend of theirs is checked.
"""

from __future__ import annotations

import contextlib

import numpy as np

from sgconv.backends._base import array_framework

__all__ = ["framework_of", "device_of", "precision", "vjp", "value_and_vjp",
           "autodiff_unsupported", "framework_layer_unsupported", "FRAMEWORK_LAYERS"]


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
    with torch.enable_grad():
        out = fn(*leaves)                   # the forward as training computes it
    grads = torch.autograd.grad(out, leaves, grad_outputs=cotangent, allow_unused=True)
    return out.detach(), [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads)]


def _vjp_jax(fn, primals, cotangent):
    import jax

    # as a training step runs it: jax.vjp inside jax.jit, which also compiles once per
    # shape (about 1 s) instead of once per operation (5-10 s per configuration)
    @jax.jit
    def step(primals, cotangent):
        out, pullback = jax.vjp(fn, *primals)   # the forward traced for differentiation
        return out, pullback(cotangent)

    out, grads = step(list(primals), cotangent)
    return out, list(grads)


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


def value_and_vjp(bk, fn, primals, cotangent):
    """(fn(*primals) computed with autodiff on, the gradients of <cotangent, fn(*primals)>
    w.r.t. each primal), as native arrays.

    fn maps backend arrays to one backend array of cotangent's shape.
    """
    reason = autodiff_unsupported(bk)
    if reason is not None:
        raise TypeError(reason)
    return _VJP[framework_of(bk)](fn, list(primals), cotangent)


def vjp(bk, fn, primals, cotangent) -> list:
    """The gradients of <cotangent, fn(*primals)> w.r.t. each primal, as native arrays."""
    return value_and_vjp(bk, fn, primals, cotangent)[1]


#: How each framework computes a forward pass for differentiation (check_gradients' messages).
AUTODIFF_FORWARD = {"torch": "autograd on (inputs that require grad)",
                    "jax": "JAX tracing it for jax.vjp under jax.jit"}


def framework_of_name(name: str) -> str | None:
    """The array framework of the registered backend ``name``."""
    import sgconv
    return framework_of(sgconv.backend(name))


#: Frameworks with a layer object of their own, checked by check_framework_layers.
FRAMEWORK_LAYERS = {"torch": "sgconv.torch.SGConv", "jax": "sgconv.jax.SGConv / sgconv.jax.apply"}


def framework_layer_unsupported(bk) -> str | None:
    """None when ``bk``'s framework has its own layer object, else why not (a skip reason)."""
    fw = framework_of(bk)
    if fw in FRAMEWORK_LAYERS:
        return None
    return (f"backend {bk.name!r} ({fw} arrays) has no framework layer object: sgconv.apply is "
            f"its layer, held to the reference by test_layer_matches_reference")
