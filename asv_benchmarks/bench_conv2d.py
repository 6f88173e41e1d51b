"""2D SGConv (``sgconv.torch.SGConv2d``) beside its baselines, in the same run: a depthwise
7x7 ``nn.Conv2d`` (ConvNeXt's) and a dense global depthwise kernel applied by FFT (X Y
weights per channel), each as the same layer (D u, GELU, mixing; conv2d_baselines.py).

Rows: implementation x feature map X = Y in {14, 56, 224} x width H in {96, 384}, float32,
torch on 2 threads, B = 32 / 8 / 2 by size.  ``time_forward``: training-mode forward
(kernel rebuilt); ``time_forward_backward``: forward and backward from a fixed output
gradient; ``track_spatial_parameters``: the spatial operator's weights ((N_x + N_y) 2 H d
with d = 16, 49 H, X Y H).  With ``SGCONV_BENCH_SMALLEST=1`` (CI) only 14 x 14, H = 96,
B = 2 runs, to show the rows still work.  ``python asv_benchmarks/compare_conv2d.py``
prints the same comparison as ratios, interleaved in one process.
"""

from __future__ import annotations

from .common import SMALLEST, require_backend

THREADS = 2
SIZES = (14,) if SMALLEST else (14, 56, 224)
WIDTHS = (96,) if SMALLEST else (96, 384)
BATCH = {14: 32, 56: 8, 224: 2}
KERNEL_DIM = 16


class _Conv2dLayer:
    params = [["sgconv", "conv7x7", "dense_fft"], list(SIZES), list(WIDTHS)]
    param_names = ["implementation", "size", "width"]
    number = 1
    repeat = (3, 5, 120.0)
    rounds = 1
    warmup_time = 0.0
    timeout = 900

    def setup(self, implementation, size, width):
        require_backend("torch")
        import torch

        from .conv2d_baselines import make_layer

        torch.set_num_threads(THREADS)
        B = 2 if SMALLEST else BATCH[size]
        self.torch = torch
        self.module = make_layer(implementation, width, size, size, KERNEL_DIM).train()
        gen = torch.Generator().manual_seed(1)
        self.u = torch.randn(B, width, size, size, generator=gen).requires_grad_(True)
        self.g = torch.randn(B, width, size, size, generator=gen)
        self._call()                                   # FFT plans, first-call allocations


class Conv2dForward(_Conv2dLayer):
    """Training-mode forward (gradients enabled: the kernel is rebuilt every call)."""

    def _call(self):
        return self.module(self.u)

    def time_forward(self, implementation, size, width):
        self._call()


class Conv2dForwardBackward(_Conv2dLayer):
    """Forward and backward, the input requiring grad as inside a network."""

    def _call(self):
        self.u.grad = None
        self.module.zero_grad(set_to_none=True)
        self.module(self.u).backward(self.g)

    def time_forward_backward(self, implementation, size, width):
        self._call()


class Conv2dParameters:
    """The spatial operator's weights per layer: O(d log X) for SGConv2d, X Y H dense."""

    params = [["sgconv", "conv7x7", "dense_fft"], list(SIZES), list(WIDTHS)]
    param_names = ["implementation", "size", "width"]
    unit = "weights"

    def setup(self, implementation, size, width):
        require_backend("torch")

    def track_spatial_parameters(self, implementation, size, width):
        from .conv2d_baselines import spatial_parameters
        return spatial_parameters(implementation, width, size, size, KERNEL_DIM)
