"""sgconv: Structured Global Convolution (SGConv) on NumPy, PyTorch, JAX and CuPy.

SGConv (Li, Cai, Zhang, Chen, Dey, "What Makes Convolutional Models Great on Long
Sequence Modeling?", arXiv 2210.09298) is a long convolution whose kernel is as long as
the sequence but has only O(log L) parameters: short sub-kernels, linearly upsampled to
doubling lengths, weighted by a decay, concatenated and normalised by a constant Z.

Quick start::

    import numpy as np, sgconv
    config = sgconv.SGConvConfig(d_model=64, l_max=4096)
    params = sgconv.init(config, seed=0)
    y = sgconv.apply(params, np.random.randn(2, 64, 4096).astype("float32"))

Backends: ``sgconv.use('torch')``, ``with sgconv.using('jax'): ...``.

Step-by-step decoding of causal layers (O(d log L) per token)::

    dec = sgconv.decoder(params)
    y, state = sgconv.prefill(dec, prompt)           # (B, H, T)
    y_t, state = sgconv.step(dec, state, u_t)        # (B, H) -> (B, H)
"""

from . import interop
from ._api import Prepared, apply, conv, kernel, prepare
from ._config import SGConvConfig
from ._checkpoint import CheckpointError, load, save
from ._decode_api import DecodeState, Decoder, decode_state, decoder, prefill, step
from ._model_config import ModelConfig
from ._ops import get_memory_budget, memory_budget, set_memory_budget
from ._params import Params, from_state_dict, init, to_state_dict
from ._switch import (BackendInfo, available_backends, backend, get_backend, known_backends,
                      register_backend, use, using)
from .backends._base import Backend, BackendUnavailableError
# Two-dimensional SGConv (save/load store and read 1D and 2D parameters alike).
from ._api2d import Prepared2d, apply2d, conv2d, kernel2d, prepare2d
from ._config2d import SGConv2dConfig
from ._params2d import Params2d, from_state_dict2d, init2d, to_state_dict2d

__version__ = "0.1.0"

__all__ = [
    "SGConvConfig", "Params", "init", "kernel", "conv", "apply", "prepare", "Prepared",
    "get_memory_budget", "set_memory_budget", "memory_budget",
    "from_state_dict", "to_state_dict", "save", "load", "CheckpointError",
    "use", "using", "get_backend", "backend", "available_backends", "known_backends",
    "register_backend", "BackendInfo", "Backend", "BackendUnavailableError", "interop",
    "__version__",
    "Decoder", "DecodeState", "decoder", "decode_state", "prefill", "step",
    "SGConv2dConfig", "Params2d", "init2d", "kernel2d", "conv2d", "apply2d", "prepare2d",
    "Prepared2d", "to_state_dict2d", "from_state_dict2d",
]
__all__ += ["ModelConfig"]
