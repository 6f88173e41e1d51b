"""Training throughput of one model block: SGConv vs S4D vs a Transformer layer.

``ModelBlocks.time_forward_backward``: forward + backward (of the output's sum) of one
layer built by ``sgconv.torch.build_blocks`` in training mode, H = 64, bidirectional,
batch norm, post-norm, GLU output, float32, 2 threads, at L in {1024, 4096, 16384} with
B * L = 16384 tokens per call (so the rows of one L process the same tokens and their
times are ratios of throughput).  'sgconv': SGConvBlock with d = 64; 's4d': the same
block around S4D's diagonal state-space kernel (N = 64); 'transformer': an attention
block (4 heads, scaled_dot_product_attention) and a feed-forward block.  The paper claims
SGConv trains faster than S4; experiments/speed.py prints the same rows as ratios and
experiments/README.md holds a measured table.

With ``SGCONV_BENCH_SMALLEST=1`` (CI) only L = 1024 runs.  Skipped (NotImplementedError
in setup) when PyTorch is missing.
"""

from __future__ import annotations

from .common import SMALLEST, SingleCalls, require_backend

THREADS = 2
TOKENS = 16384
WIDTH = 64
LAYERS = {"sgconv": dict(layer="sgconv", kernel_dim=64),
          "s4d": dict(layer="s4d", d_state=64),
          "transformer": dict(layer="attention", n_heads=4, ffn_mult=1)}


class ModelBlocks(SingleCalls):
    """One block's forward+backward at B * L = 16384 tokens, H = 64."""

    params = [list(LAYERS), [1024] if SMALLEST else [1024, 4096, 16384]]
    param_names = ["block", "length"]
    repeat = (2, 5, 120.0)
    timeout = 900

    def setup(self, kind, length):
        require_backend("torch")
        import torch

        import sgconv
        from sgconv.torch import build_blocks

        torch.set_num_threads(THREADS)
        torch.manual_seed(0)
        config = sgconv.ModelConfig(d_model=WIDTH, n_layers=1, l_max=length,
                                    bidirectional=True, norm="batch", prenorm=False,
                                    postact="glu", d_input=1, **LAYERS[kind])
        self.module = torch.nn.Sequential(*build_blocks(config)).train()
        self.x = torch.randn(max(1, TOKENS // length), WIDTH, length, requires_grad=True)
        self.time_forward_backward(kind, length)               # warm-up: FFT plans, caches

    def time_forward_backward(self, kind, length):
        self.module(self.x).sum().backward()
