"""sgconv.torch.SGConv against the straightforward PyTorch SGConv (torch_straightforward.py).

``TorchLayer`` / ``TorchLayerTrain``: B=8, H=256, L=16384 (l_max = L, d = 64, N = 9
scales, C = 1), float32, torch on 2 threads (``torch.set_num_threads(2)``), the same
weights (SGConv's initial ones, copied into the baseline) and the same input in both rows:

- ``TorchLayer.time_forward``: evaluation mode under ``torch.no_grad()``; sgconv reuses
  its cached kernel spectrum (built by the warm-up call in setup), the baseline rebuilds
  its kernel.
- ``TorchLayerTrain.time_forward_backward``: training mode, input requiring grad (a layer
  inside a network), ``module(u).backward(g)`` with a fixed output gradient g.
- ``peakmem_*``: asv's peak resident memory of the process (ru_maxrss), which includes
  setup (module, u, g and one warm-up of the same call, nothing else).

``LongSequence``: B=1, H=64, L=2**20 forward in evaluation mode, sgconv with
``channel_chunk=8`` and without, beside the baseline: time and peak memory (the input is
256 MiB; asv's peak includes the interpreter, torch and the module).

With ``SGCONV_BENCH_SMALLEST=1`` (CI) every row runs at a small size instead, only to show
that it still works.

``python asv_benchmarks/compare_torch.py`` runs the same comparisons interleaved in one
process and prints the ratios (and the peak memory of one call above the setup).  Rows
skip (NotImplementedError in setup) when torch or sgconv's torch backend is missing.
"""

from __future__ import annotations

from .common import SMALLEST, SingleCalls, require_backend

THREADS = 2


def _modules(implementation: str, H: int, L: int, channel_chunk=None):
    """(module, torch) for 'sgconv' or 'straightforward', same weights for both (seed 0).

    The weights are drawn by SGConv (its Z computed a few channels at a time) and copied
    into the baseline, so an sgconv row's setup holds nothing of the baseline's.
    """
    require_backend("torch")
    import torch

    from sgconv.torch import SGConv

    from .torch_straightforward import StraightforwardSGConv

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    module = SGConv(H, L, channel_chunk=channel_chunk)
    if implementation == "sgconv":
        return module, torch
    base = StraightforwardSGConv(H, L)
    state = dict(module.state_dict())
    del state["kernel_norm_initialized"]                   # the baseline has no such flag
    base.load_state_dict(state, strict=True)
    return base, torch


class _Layer(SingleCalls):
    """B=8, H=256, L=16384 float32, 2 threads: sgconv.torch.SGConv vs the straightforward one."""

    params = [["sgconv", "straightforward"]]
    repeat = (3, 7, 120.0)
    timeout = 900

    def setup(self, implementation):
        # CI's smallest-size run (SGCONV_BENCH_SMALLEST=1) only checks that the rows still work.
        B, H, L = (1, 16, 1024) if SMALLEST else (8, 256, 16384)
        self.module, torch = _modules(implementation, H, L)
        self.torch = torch
        generator = torch.Generator().manual_seed(1)
        self.u = torch.randn(B, H, L, generator=generator)
        self.ug = self.u.clone().requires_grad_(True)
        self.g = torch.randn(B, H, L, generator=generator)
        self._call()                              # FFT plans, sgconv's kernel-spectrum cache


class TorchLayer(_Layer):
    """Evaluation: forward under torch.no_grad() (setup warms only this call, so that the
    peak memory is the forward's)."""

    def _call(self):
        self.module.eval()
        with self.torch.no_grad():
            return self.module(self.u)

    def time_forward(self, implementation):
        self._call()

    def peakmem_forward(self, implementation):
        self._call()


class TorchLayerTrain(_Layer):
    """Training: forward and backward, u requiring grad, a fixed output gradient."""

    def _call(self):
        self.module.train()
        self.ug.grad = None
        self.module.zero_grad(set_to_none=True)
        self.module(self.ug).backward(self.g)

    def time_forward_backward(self, implementation):
        self._call()

    def peakmem_forward_backward(self, implementation):
        self._call()


class LongSequence(SingleCalls):
    """B=1, H=64, L=2**20 float32 forward (evaluation): channel chunks bound the memory."""

    params = [["sgconv-chunked", "sgconv", "straightforward"]]
    repeat = (2, 3, 120.0)
    timeout = 900

    def setup(self, implementation):
        B, H, L = (1, 8, 2 ** 12) if SMALLEST else (1, 64, 2 ** 20)
        chunk = 8 if implementation == "sgconv-chunked" else None
        impl = "straightforward" if implementation == "straightforward" else "sgconv"
        self.module, torch = _modules(impl, H, L, channel_chunk=chunk)
        self.module.eval()
        self.torch = torch
        self.u = torch.randn(B, H, L, generator=torch.Generator().manual_seed(1))
        self._forward()                           # FFT plans (and the unchunked kernel cache)

    def _forward(self):
        with self.torch.no_grad():
            return self.module(self.u)

    def time_forward(self, implementation):
        self._forward()

    def peakmem_forward(self, implementation):
        self._forward()
