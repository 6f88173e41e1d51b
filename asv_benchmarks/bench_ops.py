"""sgconv's operations per backend: speed, memory, size and accuracy.

Grid: backend (numpy, torch, jax, cupy; unavailable ones are skipped in setup) x
L in {1024, 4096, 16384, 65536} x dtype (float32, float64) for a layer with B=2, H=32,
C=1, d=64, l_max = L (so the kernel has N = 1 + log2(L/64) scales).

- ``KernelConstruction.time_kernel``: the kernel k (C', H, L) from the sub-kernels.
- ``Convolution.time_conv``: ``sgconv.conv(u, k, D)``, u (B, H, L), k (1, H, L).
- ``Layer.time_forward``, ``LayerMemory.peakmem_forward`` (float32):
  ``sgconv.apply(params, u)``.
- ``LayerBackward.time_forward_backward`` / ``peakmem_forward_backward``: the gradient of
  sum(layer(u)) w.r.t. the trained parameters and u (torch autograd, jax.grad).
- ``ParameterCount.track_*``: the learned kernel weights N*C'*H*d (O(log L)) against a dense
  kernel's C'*H*L.
- ``Accuracy.track_max_relative_error``: max|y - y_ref| / max|y_ref| of the layer against a
  float64 oracle: the reference's direct sums for L <= 4096, a float64 FFT of the
  reference's kernel above (the direct sums are O(L^2); see ``common.oracle_layer``).

JAX rows are jitted and compiled in ``setup``; every timed call runs inside
``sgconv.using(backend)`` and synchronises the device before returning.
"""

from __future__ import annotations

from .common import (AUTODIFF_BACKENDS, BACKENDS, BATCH, D_MODEL, DTYPES, LENGTHS, compiled,
                     forward_backward_fn, forward_fn, layer_config, make_params,
                     max_relative_error, native, oracle_layer, random_input, reference_state,
                     require_backend, sgconv, SMALLEST, to_numpy)

_GRID = dict(params=(list(BACKENDS), list(LENGTHS), list(DTYPES)),
             param_names=["backend", "L", "dtype"])


class _Base:
    params = _GRID["params"]
    param_names = _GRID["param_names"]
    timeout = 300

    def _setup(self, backend, L, dtype):
        self.bk = require_backend(backend)
        self.config = layer_config(L)
        self.p = make_params(backend, self.config, dtype)
        self.u = native(self.bk, random_input(BATCH, D_MODEL, L).astype(dtype), dtype)  # (B, H, L)


class KernelConstruction(_Base):
    """The kernel k = Cat(S)[..., :L] / Z of shape (C', H, L) (float32: the time hardly
    depends on the dtype)."""

    params = (list(BACKENDS), list(LENGTHS), ["float32"])

    def setup(self, backend, L, dtype):
        self._setup(backend, L, dtype)
        params = self.p

        def build(arrays):
            return sgconv.kernel(params.replace(**arrays), L)       # (C', H, L)

        self.arrays = {k: v for k, v in params.arrays().items() if v is not None}
        self.build = compiled(backend, build)
        self.build(self.arrays)                                    # compile (jax), warm up

    def time_kernel(self, backend, L, dtype):
        self.build(self.arrays)


class Convolution(_Base):
    """The long convolution y = k * u + D u: u (B, H, L), k (1, H, L) -> (B, 1, H, L)."""

    def setup(self, backend, L, dtype):
        self._setup(backend, L, dtype)
        with sgconv.using(backend):
            self.k = sgconv.kernel(self.p, L)                      # (1, H, L)
        self.conv = compiled(backend, lambda u, k, D: sgconv.conv(u, k, D))
        self.conv(self.u, self.k, self.p.D)                        # compile (jax), warm up

    def time_conv(self, backend, L, dtype):
        self.conv(self.u, self.k, self.p.D)


class Layer(_Base):
    """The whole layer: conv -> GELU -> Linear(C*H -> H), (B, H, L) -> (B, H, L)."""

    def setup(self, backend, L, dtype):
        self._setup(backend, L, dtype)
        self.forward = forward_fn(backend, self.p)
        self.forward(self.u)                                       # compile (jax), warm up

    def time_forward(self, backend, L, dtype):
        self.forward(self.u)


class LayerBackward(_Base):
    """Forward and backward: gradients of sum(layer(u)) for the trained parameters and u."""

    params = (list(AUTODIFF_BACKENDS), list(LENGTHS), list(DTYPES))

    def setup(self, backend, L, dtype):
        self._setup(backend, L, dtype)
        self.step = forward_backward_fn(backend, self.p)
        self.step(self.u)                                          # compile (jax), warm up

    def time_forward_backward(self, backend, L, dtype):
        self.step(self.u)

    def peakmem_forward_backward(self, backend, L, dtype):
        self.step(self.u)


class LayerMemory(_Base):
    """Peak resident memory of the process around one forward call, float32 (asv's peakmem
    includes the imports and the setup: compare rows and commits, not absolute values)."""

    params = (list(BACKENDS), list(LENGTHS), ["float32"])

    def setup(self, backend, L, dtype):
        self._setup(backend, L, dtype)
        self.forward = forward_fn(backend, self.p)
        self.forward(self.u)                                       # compile (jax), warm up

    def peakmem_forward(self, backend, L, dtype):
        self.forward(self.u)


class ParameterCount:
    """Learned kernel weights vs L for H=32, C=1, d=64: N*C'*H*d grows as log2(L)."""

    params = [list(LENGTHS) + ([] if SMALLEST else [2 ** 18, 2 ** 20])]
    param_names = ["L"]

    def track_kernel_parameters(self, L):
        """N * C' * H * d, the sub-kernel weights (sub-linear in L)."""
        return layer_config(L).num_kernel_parameters

    track_kernel_parameters.unit = "parameters"

    def track_dense_kernel_parameters(self, L):
        """C' * H * L: what a dense kernel of the same length would learn."""
        config = layer_config(L)
        return config.kernel_rows * config.d_model * L

    track_dense_kernel_parameters.unit = "parameters"

    def track_num_scales(self, L):
        """N = 1 + ceil(log2(L / d))."""
        return layer_config(L).num_scales

    track_num_scales.unit = "scales"


class Accuracy(_Base):
    """Max relative error of the layer against a float64 oracle (see common.oracle_layer)."""

    def setup(self, backend, L, dtype):
        self._setup(backend, L, dtype)
        self.forward = forward_fn(backend, self.p)
        # The oracle sees exactly the backend's input and parameters, held in float64.
        u64 = to_numpy(backend, self.u).astype("float64")          # (B, H, L)
        self.y_ref, self.method = oracle_layer(reference_state(self.config, dtype), u64)

    def track_max_relative_error(self, backend, L, dtype):
        """max |y - y_ref| / max |y_ref|; y_ref by direct sums for L <= 4096, else by a
        float64 FFT of reference.kernel."""
        return max_relative_error(to_numpy(backend, self.forward(self.u)), self.y_ref)

    track_max_relative_error.unit = "relative error"
