"""The three ways to produce the next token's output of a causal SGConv layer at context L,
per backend, for bench_decode.py and compare_decode.py (no timed names: asv finds none here).

- ``step``: step-by-step decoding (``sgconv.step`` / ``SGConv.step`` / ``sgconv.jax.step``
  jitted with the state donated), from the state a prefill of L inputs left: O(P) per
  token and channel, P = 2d + (N-2)(d+1) affine runs of the kernel.
- ``recompute``: the layer over the last L inputs by FFT, O(L log L) per token, with
  the kernel's spectrum prepared once (``sgconv.prepare`` / the module's evaluation
  cache / ``sgconv.jax.prepare``): the strongest form of recomputing the prefix.
- ``dot``: a dot product of the cached kernel with the history, O(L) per token: the
  inputs in a mirrored ring buffer (H, B, 2L), so the last L are always one contiguous
  slice, and the reversed kernel (H, L, C), contracted as a batched matrix product
  (BLAS), then D u, GELU and the mixing linear.

Every case holds the same weights (``sgconv.init(config, seed)``, H channels, l_max = L,
d = 64, C = 1, float32) and is fed the same inputs; ``Case.call()`` consumes one new
input u_t (B, H) and returns y_t (B, H) as NumPy (synchronised).
"""

from __future__ import annotations

import numpy as np

from .common import require_backend, sgconv

__all__ = ["METHODS", "Case", "make_case", "stream"]

METHODS = ("step", "recompute", "dot")


def stream(B: int, H: int, L: int, steps: int, seed: int = 0):
    """(prompt (B, H, L), inputs (steps, B, H)), float32 N(0, 1)."""
    rng = np.random.default_rng(seed + 1)
    prompt = rng.standard_normal((B, H, L), dtype=np.float32)
    return prompt, rng.standard_normal((steps, B, H), dtype=np.float32)


class Case:
    """One method on one backend at context L.  ``call(u_t)`` -> y_t (B, H) NumPy."""

    def __init__(self, backend: str, method: str, L: int, B: int, H: int, prompt, seed=0):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.bk = require_backend(backend)
        if not hasattr(self, f"_setup_{backend}"):
            raise NotImplementedError(f"no decoding benchmark case for backend {backend!r} "
                                      f"(cases exist for numpy, torch and jax)")
        self.backend, self.method, self.L, self.B, self.H = backend, method, L, B, H
        self.config = sgconv.SGConvConfig(d_model=H, l_max=L)
        self.params = sgconv.init(self.config, seed=seed, dtype="float32", backend="numpy")
        self.state_bytes = 0
        getattr(self, f"_setup_{backend}")(method, prompt)

    @property
    def runs(self) -> int:
        """P, the number of affine runs of the kernel (what a step costs per channel)."""
        with sgconv.using("numpy"):
            return sgconv.decoder(self.params).runs.count

    # --- the dot product's buffers, shared by the three frameworks --------------------------

    def _dot_arrays(self, prompt):
        """(buffer (H, B, 2L) mirrored, reversed kernel (H, L, C), D (C, H), W, b), NumPy."""
        L = self.L
        k = np.asarray(sgconv.kernel(self.params, L))               # (C, H, L)
        kr = np.ascontiguousarray(k[..., ::-1].transpose(1, 2, 0))  # (H, L, C)
        buf = np.concatenate([prompt, prompt], axis=-1).transpose(1, 0, 2)  # (H, B, 2L)
        p = self.params
        return (np.ascontiguousarray(buf), kr, np.asarray(p.D), np.asarray(p.out_weight),
                np.asarray(p.out_bias))

    # --- numpy ----------------------------------------------------------------------------

    def _setup_numpy(self, method, prompt):
        import scipy.special
        L = self.L
        with sgconv.using("numpy"):
            if method == "step":
                self.dec = sgconv.decoder(self.params)
                _, self.state = sgconv.prefill(self.dec, prompt)
                self.state_bytes = self.state.nbytes
                self.call = self._step_numpy
            elif method == "recompute":
                self.prepared = sgconv.prepare(self.params, L)
                self.buf = np.concatenate([prompt, prompt], axis=-1)   # (B, H, 2L)
                self.pos = 0
                self.call = self._recompute_numpy
            else:
                self.buf, self.kr, self.D, self.W, self.b = self._dot_arrays(prompt)
                self.erf = scipy.special.erf
                self.pos = 0
                self.call = self._dot_numpy

    def _step_numpy(self, u_t):
        with sgconv.using("numpy"):
            y, self.state = sgconv.step(self.dec, self.state, u_t)
        return y

    def _recompute_numpy(self, u_t):
        L, slot = self.L, self.pos % self.L
        self.pos += 1
        self.buf[..., slot] = u_t
        self.buf[..., slot + L] = u_t
        with sgconv.using("numpy"):
            y = sgconv.apply(self.prepared, self.buf[..., slot + 1:slot + 1 + L])
        return y[..., -1]

    def _dot_numpy(self, u_t):
        L, slot = self.L, self.pos % self.L
        self.pos += 1
        x = u_t.T                                                   # (H, B)
        self.buf[..., slot] = x
        self.buf[..., slot + L] = x
        z = np.matmul(self.buf[..., slot + 1:slot + 1 + L], self.kr)  # (H, B, C)
        z = z.transpose(1, 2, 0) + self.D * u_t[:, None]            # (B, C, H), + D u
        g = 0.5 * z * (1.0 + self.erf(z * np.float32(2 ** -0.5)))
        return g.reshape(self.B, -1) @ self.W.T + self.b            # (B, H)

    # --- torch ----------------------------------------------------------------------------

    def _setup_torch(self, method, prompt):
        import torch
        from sgconv.torch import SGConv
        self.torch = torch
        L = self.L
        self.module = SGConv.from_params(self.params).eval()
        with torch.inference_mode():
            if method == "step":
                _, self.state = self.module.prefill(torch.from_numpy(prompt))
                self.state_bytes = self.state.nbytes
                self.call = self._step_torch
            elif method == "recompute":
                self.buf = torch.from_numpy(np.concatenate([prompt, prompt], axis=-1))
                self.pos = 0
                self.module(self.buf[..., :L])                    # the spectrum cache
                self.call = self._recompute_torch
            else:
                arrays = [torch.from_numpy(a) for a in self._dot_arrays(prompt)]
                self.buf, self.kr, self.D, self.W, self.b = arrays
                self.pos = 0
                self.call = self._dot_torch

    def _step_torch(self, u_t):
        with self.torch.inference_mode():
            y, self.state = self.module.step(self.torch.from_numpy(u_t), self.state)
        return y.numpy()

    def _recompute_torch(self, u_t):
        torch, L, slot = self.torch, self.L, self.pos % self.L
        self.pos += 1
        with torch.inference_mode():
            x = torch.from_numpy(u_t)
            self.buf[..., slot] = x
            self.buf[..., slot + L] = x
            y = self.module(self.buf[..., slot + 1:slot + 1 + L])
        return y[..., -1].numpy()

    def _dot_torch(self, u_t):
        torch, L, slot = self.torch, self.L, self.pos % self.L
        self.pos += 1
        with torch.inference_mode():
            x = torch.from_numpy(u_t)
            self.buf[..., slot] = x.T
            self.buf[..., slot + L] = x.T
            z = torch.matmul(self.buf[..., slot + 1:slot + 1 + L], self.kr)  # (H, B, C)
            z = z.permute(1, 2, 0) + self.D * x[:, None]                # (B, C, H)
            g = torch.nn.functional.gelu(z).reshape(self.B, -1)
            return torch.addmm(self.b, g, self.W.T).numpy()

    # --- jax ------------------------------------------------------------------------------

    def _setup_jax(self, method, prompt):
        import jax
        import jax.numpy as jnp
        import sgconv.jax as sgj
        self.jax = jax
        L, B = self.L, self.B
        params = sgj.as_jax_params(self.params)
        if method == "step":
            self.dec = sgj.decoder(params)
            _, self.state = sgj.prefill(self.dec, jnp.asarray(prompt))
            self.state_bytes = self.state.nbytes
            self.jstep = jax.jit(sgj.step, donate_argnums=1)
            self.call = self._step_jax
        elif method == "recompute":
            prepared = sgj.prepare(params, L)

            def run(buf, pos, u_t):
                slot = pos % L
                buf = jax.lax.dynamic_update_slice(buf, u_t[..., None], (0, 0, slot))
                buf = jax.lax.dynamic_update_slice(buf, u_t[..., None], (0, 0, slot + L))
                window = jax.lax.dynamic_slice(buf, (0, 0, slot + 1), (B, self.H, L))
                return buf, sgj.apply(prepared, window)[..., -1]

            self.buf = jnp.asarray(np.concatenate([prompt, prompt], axis=-1))
            self.run = jax.jit(run, donate_argnums=0)
            self.pos = 0
            self.call = self._window_jax
        else:
            buf, kr, D, W, b = (jnp.asarray(a) for a in self._dot_arrays(prompt))

            def run(buf, pos, u_t):
                slot = pos % L
                x = u_t.T[..., None]                                # (H, B, 1)
                buf = jax.lax.dynamic_update_slice(buf, x, (0, 0, slot))
                buf = jax.lax.dynamic_update_slice(buf, x, (0, 0, slot + L))
                window = jax.lax.dynamic_slice(buf, (0, 0, slot + 1), (self.H, B, L))
                z = jnp.matmul(window, kr).transpose(1, 2, 0) + D * u_t[:, None]
                g = jax.nn.gelu(z, approximate=False).reshape(B, -1)
                return buf, g @ W.T + b

            self.buf = buf
            self.run = jax.jit(run, donate_argnums=0)
            self.pos = 0
            self.call = self._window_jax

    def _step_jax(self, u_t):
        y, self.state = self.jstep(self.dec, self.state, u_t)
        return np.asarray(self.jax.block_until_ready(y))

    def _window_jax(self, u_t):
        self.buf, y = self.run(self.buf, self.pos, u_t)
        self.pos += 1
        return np.asarray(self.jax.block_until_ready(y))


def make_case(backend: str, method: str, L: int, B: int, H: int = 256, seed: int = 0):
    """(case, inputs): a Case after a prompt of L inputs, and 2048 further inputs (B, H)."""
    prompt, inputs = stream(B, H, L, 2048, seed)
    return Case(backend, method, L, B, H, prompt, seed), inputs
