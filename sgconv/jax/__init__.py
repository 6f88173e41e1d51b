"""SGConv for JAX: pure functions over a parameter pytree, and a layer that is a pytree.

::

    import jax, jax.numpy as jnp, sgconv, sgconv.jax as sgj
    config = sgconv.SGConvConfig(d_model=64, l_max=4096)
    params = sgj.init(jax.random.key(0), config)             # sgconv.Params, a pytree
    u = jnp.ones((2, 64, 4096))                               # (B, H, L)
    y = sgj.apply(params, u)                                  # (B, H, L)
    grads = jax.grad(lambda p: sgj.apply(p, u).sum())(params)

- :func:`init` (key or int seed, config) -> :class:`sgconv.Params` of JAX arrays;
  :func:`kernel` (params, L) -> (C', H, L); :func:`apply` (params, u, ...) -> the layer.
- :func:`prepare` (params, L) -> :class:`Prepared`: the kernel's spectrum computed once,
  for inference; ``apply(prepared, u)`` then skips rebuilding the kernel.
- :class:`SGConv`: a callable layer object that is itself a pytree.
- :func:`decoder`, :func:`prefill`, :func:`step`, :func:`decode_state`: step-by-step
  decoding of a causal layer, pure functions over pytrees (``step`` jits and scans).
- :func:`trainable`: the mask of trained leaves (False for the state m and Z).
- :func:`as_jax_params`: parameters of any backend (``from_state_dict``, ``load``) as JAX.
- 2D SGConv (images, (B, H, X, Y)): :func:`init2d`, :func:`kernel2d`, :func:`apply2d`,
  :func:`prepare2d`, :func:`trainable2d`, :func:`as_jax_params2d` over
  :class:`sgconv.Params2d` (docs/jax.md, "Two-dimensional SGConv").

The configuration is static (pytree metadata), everything works under ``jit``, ``grad``,
``vmap`` and ``value_and_grad``, and calls at the same shapes reuse one compiled program.
Precision follows JAX's setting, which sgconv never changes: float32, or float64 when the
user enabled 64-bit mode; float16/bfloat16 inputs are computed in float32.
Importing this module imports JAX (``import sgconv`` alone does not).
"""

from __future__ import annotations

from ..backends._base import BackendUnavailableError

try:
    import jax as _jax  # noqa: F401
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess test
    raise BackendUnavailableError(
        f"sgconv.jax needs JAX, which could not be imported ({_exc}); install it with: "
        f"pip install 'sgconv[jax]'") from _exc

from ._functional import (Prepared, apply, as_jax_params, init, kernel, prepare,  # noqa: E402
                          trainable)
from ._layer import SGConv  # noqa: E402
from ._decode import DecodeState, Decoder, decode_state, decoder, prefill, step  # noqa: E402
from ._functional2d import (Prepared2d, apply2d, as_jax_params2d, init2d,  # noqa: E402
                            kernel2d, prepare2d, trainable2d)

__all__ = ["init", "kernel", "apply", "prepare", "Prepared", "trainable", "as_jax_params",
           "SGConv", "Decoder", "DecodeState", "decoder", "decode_state", "prefill", "step",
           "init2d", "kernel2d", "apply2d", "prepare2d", "Prepared2d", "trainable2d",
           "as_jax_params2d"]
