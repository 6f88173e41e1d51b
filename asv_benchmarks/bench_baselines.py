"""Baselines, at the sizes of bench_ops (B=2, H=32, L in {1024, 4096, 16384, 65536}).

The same causal convolution as ``bench_ops.Convolution`` (u (B, H, L), one kernel (H, L) per
channel, outputs 0..L-1), computed without sgconv:

- ``DirectConvolution``: ``scipy.signal.convolve(u[b, h], k[h], method="direct")`` row by
  row, O(L^2): only for L <= 4096 (at 16384 one call takes tens of seconds here).
- ``FFTConvolve``: ``scipy.signal.fftconvolve(u, k[None], axes=-1)[..., :L]``.
- ``ScipyFFTFloor``: the floor, bare ``scipy.fft``: ``rfft(u, n)``, times ``k_f``,
  ``irfft(., n)[..., :L]`` with n = next_fast_len(2L - 1), every core, and
  ``k_f = rfft(k, n)`` computed once in setup.  (numpy_floor.py does the same at B=8, H=256.)
- ``TorchStraightforward``: the straightforward PyTorch SGConv layer of
  ``torch_straightforward.py`` (kernel rebuilt and both signals transformed at 2L on every
  call), forward and forward+backward; compare with ``bench_ops.Layer`` and
  ``bench_ops.LayerBackward`` at the same parameters.  Skipped when PyTorch is absent.

Ratios: ``asv compare`` / the tables put these beside bench_ops' rows of the same run.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.fft
import scipy.signal

from .common import BATCH, D_MODEL, DTYPES, LENGTHS, random_input

#: Longest L for the O(L^2) direct convolution (B*H rows of L^2 multiply-adds each).
DIRECT_MAX_LENGTH = 4096


def _workers() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class _Signals:
    params = (list(LENGTHS), list(DTYPES))
    param_names = ["L", "dtype"]
    timeout = 300

    def setup(self, L, dtype):
        rng = np.random.default_rng(0)
        self.u = random_input(BATCH, D_MODEL, L).astype(dtype)                  # (B, H, L)
        self.k = rng.standard_normal((D_MODEL, L)).astype(dtype) / np.sqrt(L)   # (H, L)


class DirectConvolution(_Signals):
    """scipy.signal.convolve(method='direct'), one row at a time (O(L^2))."""

    def setup(self, L, dtype):
        if L > DIRECT_MAX_LENGTH:
            raise NotImplementedError(f"direct convolution is O(L^2): skipped above "
                                      f"L={DIRECT_MAX_LENGTH}")
        super().setup(L, dtype)

    def time_direct(self, L, dtype):
        B, H, _ = self.u.shape
        for b in range(B):
            for h in range(H):
                scipy.signal.convolve(self.u[b, h], self.k[h], method="direct")[:L]


class FFTConvolve(_Signals):
    """scipy.signal.fftconvolve along the last axis, broadcast over B."""

    def time_fftconvolve(self, L, dtype):
        scipy.signal.fftconvolve(self.u, self.k[None], axes=-1)[..., :L]


class ScipyFFTFloor(_Signals):
    """The floor: rfft(u, n) * k_f -> irfft, k_f precomputed (n = next_fast_len(2L-1))."""

    def setup(self, L, dtype):
        super().setup(L, dtype)
        self.n = scipy.fft.next_fast_len(2 * L - 1, real=True)
        self.workers = _workers()
        self.k_f = scipy.fft.rfft(self.k, self.n, workers=self.workers)        # (H, F)

    def time_floor(self, L, dtype):
        u_f = scipy.fft.rfft(self.u, self.n, workers=self.workers)             # (B, H, F)
        u_f *= self.k_f
        scipy.fft.irfft(u_f, self.n, workers=self.workers)[..., :L]            # (B, H, L)

    def time_transforms_only(self, L, dtype):
        scipy.fft.irfft(scipy.fft.rfft(self.u, self.n, workers=self.workers), self.n,
                        workers=self.workers)


class TorchStraightforward:
    """The straightforward PyTorch SGConv layer (torch_straightforward.py), on the CPU."""

    params = (list(LENGTHS), list(DTYPES))
    param_names = ["L", "dtype"]
    timeout = 300

    def setup(self, L, dtype):
        try:
            import torch

            from . import torch_straightforward
        except ImportError as exc:
            raise NotImplementedError(f"straightforward PyTorch baseline unavailable: {exc}")
        self.torch = torch
        torch.manual_seed(0)
        self.layer = torch_straightforward.StraightforwardSGConv(
            d_model=D_MODEL, l_max=L, dtype=getattr(torch, dtype))
        self.u = torch.from_numpy(random_input(BATCH, D_MODEL, L).astype(dtype))  # (B, H, L)
        self.params_ = [p for p in self.layer.parameters() if p.requires_grad]
        self.layer(self.u)                                         # warm up

    def time_forward(self, L, dtype):
        with self.torch.no_grad():
            self.layer(self.u)

    def time_forward_backward(self, L, dtype):
        u = self.u.detach().requires_grad_(True)
        self.torch.autograd.grad(self.layer(u).sum(), self.params_ + [u])

    def peakmem_forward(self, L, dtype):
        with self.torch.no_grad():
            self.layer(self.u)
