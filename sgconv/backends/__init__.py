"""Array backends.  Each file holds only what differs for its framework.

- :mod:`sgconv.backends.numpy`: NumPy + scipy.fft, the default.
- :mod:`sgconv.backends.torch`: PyTorch, CPU and CUDA, with autograd.
- :mod:`sgconv.backends.jax`: JAX, on whatever device JAX runs.
- :mod:`sgconv.backends.cupy`: CuPy on NVIDIA GPUs.

Importing this package imports none of the frameworks.
"""

from ._base import Backend, BackendUnavailableError, array_framework

__all__ = ["Backend", "BackendUnavailableError", "array_framework"]
