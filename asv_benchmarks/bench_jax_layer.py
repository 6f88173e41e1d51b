"""The jitted sgconv.jax layer beside sgconv's PyTorch layer, and the FFT length JAX uses.

``JaxLayer``: B=8, H=256, L=16384, float32, C=1, d=64 (N=9 scales), the same parameters
(``sgconv.init(config, seed=0)``) and input on every row:

- ``jax``: ``jax.jit(sgconv.jax.apply)``; forward+backward is
  ``jax.jit(jax.grad(vdot(apply(p, u), g), argnums=(0, 1)))`` (every parameter leaf and u).
  Compiled in ``setup``; each timed call ends with ``jax.block_until_ready``.
- ``torch-module``: ``sgconv.torch.SGConv.from_params``; forward in evaluation mode under
  ``torch.no_grad()`` (the module caches its kernel spectrum), forward+backward in
  training mode with ``module(u).backward(g)``, u requiring grad.
- ``torch-generic``: ``sgconv.apply`` under ``sgconv.using('torch')``, forward under
  ``torch.no_grad()``, forward+backward with ``torch.autograd.grad`` for the trained
  parameters and u (what ``common.forward_backward_fn`` does, with the output gradient g).

``JaxInference``: forward only, ``jax.jit(sgconv.jax.apply)`` on ``sgconv.jax.prepare(params,
L)`` (the spectrum computed once) beside the torch module in evaluation mode.

A row whose framework (or sgconv backend) is missing is skipped (NotImplementedError in
setup).  ``asv_benchmarks/compare_jax_torch.py`` times the same rows interleaved in one
process and prints the ratios.

``FFTLength``: float32 rfft + irfft of 128 rows in XLA's CPU FFT at the power of two
above a required length and at the JAX backend's ``next_fast_len`` (the 2,3,5,7-smooth
length above it): the measurement behind that choice.
"""

from __future__ import annotations

import numpy as np

from .common import SMALLEST, SingleCalls, require_backend, sgconv

# CI's smallest-size run (SGCONV_BENCH_SMALLEST=1) only checks that the rows still work.
B, H, L = (1, 16, 1024) if SMALLEST else (8, 256, 16384)


def _problem():
    config = sgconv.SGConvConfig(d_model=H, l_max=L)
    params = sgconv.init(config, seed=0)                             # NumPy float32
    rng = np.random.default_rng(1)
    u = rng.standard_normal((B, H, L), dtype=np.float32)            # (B, H, L)
    g = rng.standard_normal((B, H, L), dtype=np.float32)            # output gradient
    return params, u, g


def _jax_calls(params, u, g):
    require_backend("jax")
    import jax
    import jax.numpy as jnp

    import sgconv.jax as sgj

    p = sgj.as_jax_params(params)
    uj, gj = jnp.asarray(u), jnp.asarray(g)
    fwd = jax.jit(lambda p, u: sgj.apply(p, u))
    step = jax.jit(jax.grad(lambda p, u, g: jnp.vdot(sgj.apply(p, u), g), argnums=(0, 1)))
    return (lambda: jax.block_until_ready(fwd(p, uj)),
            lambda: jax.block_until_ready(step(p, uj, gj)))


def _torch_module_calls(params, u, g):
    require_backend("torch")
    import torch
    try:
        from sgconv.torch import SGConv
    except ImportError as exc:
        raise NotImplementedError(f"sgconv.torch is not available: {exc}") from None
    module = SGConv.from_params(params)
    ut, gt = torch.from_numpy(u.copy()), torch.from_numpy(g.copy())
    ug = ut.clone().requires_grad_(True)

    def forward():
        module.eval()
        with torch.no_grad():
            return module(ut)

    def forward_backward():
        module.train()
        ug.grad = None
        module.zero_grad(set_to_none=True)
        module(ug).backward(gt)

    return forward, forward_backward


def _torch_generic_calls(params, u, g):
    require_backend("torch")
    import torch
    tp = params.to("torch")
    leaves = tp._map(lambda x: x.detach().clone().requires_grad_(True))
    inputs = [*leaves.kernels, leaves.D, leaves.out_weight, leaves.out_bias]
    ut, gt = torch.from_numpy(u.copy()), torch.from_numpy(g.copy())

    def forward():
        with torch.no_grad(), sgconv.using("torch"):
            return sgconv.apply(tp, ut)

    def forward_backward():
        uu = ut.clone().requires_grad_(True)
        with sgconv.using("torch"):
            y = sgconv.apply(leaves, uu)
        return torch.autograd.grad(y, inputs + [uu], gt)

    return forward, forward_backward


_IMPLEMENTATIONS = {"jax": _jax_calls, "torch-module": _torch_module_calls,
                    "torch-generic": _torch_generic_calls}


class JaxLayer(SingleCalls):
    """The SGConv layer at B=8, H=256, L=16384, float32: JAX (jitted) beside PyTorch."""

    params = [list(_IMPLEMENTATIONS)]

    def setup(self, implementation):
        params, u, g = _problem()
        self.forward, self.forward_backward = _IMPLEMENTATIONS[implementation](params, u, g)
        self.forward()                          # jit compile / FFT plans / kernel cache
        self.forward_backward()

    def time_forward(self, implementation):
        self.forward()

    def time_forward_backward(self, implementation):
        self.forward_backward()

    def peakmem_forward_backward(self, implementation):
        self.forward_backward()


def _jax_prepared_forward(params, u, g):
    require_backend("jax")
    import jax
    import jax.numpy as jnp

    import sgconv.jax as sgj

    fast = sgj.prepare(sgj.as_jax_params(params), u.shape[-1])
    uj = jnp.asarray(u)
    fwd = jax.jit(sgj.apply)
    return lambda: jax.block_until_ready(fwd(fast, uj))


class JaxInference(SingleCalls):
    """Forward only, the kernel spectrum computed once on both sides: ``jax-prepared`` is
    ``jax.jit(sgconv.jax.apply)(sgconv.jax.prepare(params, L), u)``, ``torch-module`` the
    module in evaluation mode (which caches its spectrum)."""

    params = [["jax-prepared", "torch-module"]]

    def setup(self, implementation):
        params, u, g = _problem()
        if implementation == "jax-prepared":
            self.forward = _jax_prepared_forward(params, u, g)
        else:
            self.forward = _torch_module_calls(params, u, g)[0]
        self.forward()                          # jit compile / FFT plans / kernel cache

    def time_forward(self, implementation):
        self.forward()


class FFTLength:
    """rfft + irfft (float32, 128 rows) at the power of two vs the 7-smooth length >= n."""

    params = [[1546] if SMALLEST else [1546, 2502, 11448, 20591, 24619, 34159],
              ["power-of-two", "next_fast_len"]]
    param_names = ["required", "length"]
    timeout = 300

    def setup(self, required, length):
        require_backend("jax")
        import jax
        import jax.numpy as jnp

        n = 1 << (required - 1).bit_length() if length == "power-of-two" \
            else sgconv.backend("jax").next_fast_len(required)
        x = jnp.asarray(np.random.default_rng(0).standard_normal((128, required),
                                                                 dtype=np.float32))
        roundtrip = jax.jit(lambda x: jnp.fft.irfft(jnp.fft.rfft(x, n=n), n=n))
        self.call = lambda: jax.block_until_ready(roundtrip(x))
        self.call()                             # compile

    def time_rfft_irfft(self, required, length):
        self.call()
