"""SGConv for PyTorch: a drop-in ``nn.Module`` for the authors' released layer, and functions.

::

    import torch
    from sgconv.torch import SGConv
    layer = SGConv(d_model=256, l_max=16384)              # kernel_dim=64, channels=1, ...
    y = layer(torch.randn(8, 256, 16384))                 # (B, H, L) -> (B, H, L)
    layer.load_state_dict(released_state_dict)            # the released module's keys

- :class:`SGConv`: the layer (same parameter names and shapes as the released module,
  Z computed at construction, side-effect-free forward, ``torch.compile(fullgraph=True)``,
  float16/bfloat16 inputs computed in float32, cached kernel spectrum in evaluation).
- ``SGConv.prefill(u) -> (y, state)`` and ``SGConv.step(u_t, state) -> (y_t, state)``:
  step-by-step decoding of a causal layer, O(d log L) per token (inference only).
- :class:`GConv`: the released module's name, positional arguments and return value
  (``y, _ = layer(u)``; ``y, k = layer(u, return_kernel=True)``), built on :class:`SGConv`.
- :class:`SGConv2d`: 2D SGConv for images, (B, H, X, Y) -> (B, H, X, Y), a global
  drop-in where a depthwise ``nn.Conv2d(H, H, 7, padding=3, groups=H)`` is.
- :mod:`sgconv.torch.functional`: ``kernel``, ``conv`` and ``layer`` as functions of tensors.
- :class:`SGConvBlock`, :class:`SequenceModel` (:mod:`sgconv.torch.models`): the authors' LRA
  backbone (norm, SGConv, dropout, residual; encoder, blocks, pooled decoder, padding
  masks), and :func:`parameter_groups` / :func:`make_optimizer` (kernels at their own
  learning rate); baseline layers in :mod:`sgconv.torch.baselines`.

Importing this module imports PyTorch (``import sgconv`` alone does not).
"""

from __future__ import annotations

from ..backends._base import BackendUnavailableError

try:
    import torch as _torch  # noqa: F401
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess test
    raise BackendUnavailableError(
        f"sgconv.torch needs PyTorch, which could not be imported ({_exc}); install it with: "
        f"pip install 'sgconv[torch]'") from _exc

from . import functional  # noqa: E402
from ._module import GConv, SGConv, ShortKernelWarning  # noqa: E402
from ._module2d import SGConv2d  # noqa: E402
from . import baselines  # noqa: E402
from .models import (ModelConfig, Norm, ResidualBlock, SequenceModel, SGConvBlock,  # noqa: E402
                     build_blocks, make_optimizer, parameter_groups)

__all__ = ["SGConv", "GConv", "ShortKernelWarning", "functional", "SGConv2d",
           "SGConvBlock", "ResidualBlock", "Norm", "SequenceModel", "ModelConfig",
           "build_blocks", "parameter_groups", "make_optimizer", "baselines"]
