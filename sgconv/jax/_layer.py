"""``SGConv``: a callable layer object that is itself a pytree.

Its leaves are the parameter arrays (through :class:`sgconv.Params`, whose configuration is
static pytree metadata); the options (layout, dropout rate, FFT block size) are static
too.  So ``jax.grad(loss)(layer)`` returns an ``SGConv`` holding the gradients, and an
optimiser update is ``jax.tree_util.tree_map(lambda p, g: p - lr * g, layer, grads)``.
No neural-network library is needed; Flax and Equinox models can hold one (docs/jax.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import _checks
from .._config import SGConvConfig
from .._params import Params
from ._functional import apply, as_jax_params, init, kernel, trainable

__all__ = ["SGConv"]


@jax.tree_util.register_pytree_with_keys_class
class SGConv:
    """An SGConv layer: ``layer(u, key=None, deterministic=False)`` -> (B, H, L).

    Build it from parameters of any backend (``SGConv(sgconv.load(path))``) or fresh with
    :meth:`init`.  It is immutable: training replaces it with an updated copy.

    Attributes:
        params: the :class:`sgconv.Params` pytree of JAX arrays.
        transposed: True for (B, H, L) input and output, False for (B, L, H).
        dropout: the dropout rate after the GELU (active unless ``deterministic=True``).
        block_size: the FFT plan's overlap-add block (None: automatic; 0: one FFT).
        channel_chunk: channels convolved at a time (None: from the memory budget).
    """

    __slots__ = ("params", "transposed", "dropout", "block_size", "channel_chunk")
    _OPTIONS = ("transposed", "dropout", "block_size", "channel_chunk")

    def __init__(self, params: Params, *, transposed: bool = True, dropout: float = 0.0,
                 block_size: int | None = None, channel_chunk: int | None = None):
        set_ = object.__setattr__
        set_(self, "params", as_jax_params(params))
        set_(self, "transposed", _checks.check_bool("transposed", transposed))
        set_(self, "dropout", _checks.check_rate(dropout))
        set_(self, "block_size", _checks.check_block_size(block_size))
        set_(self, "channel_chunk", _checks.check_channel_chunk(channel_chunk))

    @classmethod
    def init(cls, key, config: SGConvConfig, *, dtype=jnp.float32, **options) -> "SGConv":
        """A fresh layer: ``SGConv(sgconv.jax.init(key, config, dtype), **options)``."""
        return cls(init(key, config, dtype), **options)

    def __setattr__(self, name, value):
        raise AttributeError(f"SGConv is immutable (a pytree); build a new one instead of "
                             f"setting {name!r}")

    @property
    def config(self) -> SGConvConfig:
        return self.params.config

    def __call__(self, u, *, key=None, deterministic: bool = False):
        """out = Linear(dropout(GELU(k * u + D u))): (B, H, L) -> (B, H, L), see sgconv.jax.apply."""
        return apply(self.params, u, transposed=self.transposed, dropout=self.dropout, key=key,
                     deterministic=deterministic, block_size=self.block_size,
                     channel_chunk=self.channel_chunk)

    def kernel(self, length: int):
        """The kernel k for sequences of ``length`` L: (C', H, L)."""
        return kernel(self.params, length)

    def trainable(self) -> "SGConv":
        """A mask with this layer's pytree structure: True for trained leaves (not m, Z)."""
        return self._replace_params(trainable(self.params))

    def _replace_params(self, params) -> "SGConv":
        return self.tree_unflatten(self._options(), (params,))

    def _options(self):
        return tuple(getattr(self, name) for name in self._OPTIONS)

    # --- pytree protocol ----------------------------------------------------------------

    def tree_flatten_with_keys(self):
        return ((jax.tree_util.GetAttrKey("params"), self.params),), self._options()

    @classmethod
    def tree_unflatten(cls, options, children):
        # No checks here: JAX rebuilds the layer with tracers, gradients or masks as leaves.
        obj = object.__new__(cls)
        set_ = object.__setattr__
        set_(obj, "params", children[0])
        for name, value in zip(cls._OPTIONS, options):
            set_(obj, name, value)
        return obj

    def __repr__(self) -> str:
        options = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._OPTIONS)
        return f"SGConv({self.config!r}, {options})"
