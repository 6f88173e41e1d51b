"""The baselines of the 2D speed comparison, as layers a user would write in PyTorch.

Every row of bench_conv2d.py / compare_conv2d.py is the same layer with a different
spatial operator, so that the ratios measure the operator:

    u (B, H, X, Y) -> spatial(u) + D u -> GELU -> mixing (H -> H) -> (B, H, X, Y)

* ``sgconv``: ``sgconv.torch.SGConv2d(H, (X, Y), kernel_dim=d)`` (its GELU and mixing are
  the layer's own; C = 1).
* ``conv7x7``: the depthwise ``nn.Conv2d(H, H, 7, padding=3, groups=H, bias=False)`` of a
  ConvNeXt block: 49 weights per channel, local.
* ``dense_fft``: a depthwise dense global kernel of X * Y weights per channel (offsets
  -(X//2) .. X - X//2 - 1 along x, likewise y), applied by a linear FFT convolution of
  nx by ny >= (2X - 1) by (2Y - 1) points, the kernel's rfft2 recomputed on every call
  (training) and cached in evaluation (as SGConv2d caches its spectrum).  The FFT sizes
  are sgconv's (the torch backend's next_fast_len), so both FFT layers transform the
  same number of points.

The skip term D, the exact GELU and the mixing (``torch.baddbmm`` with the bias folded
in, what SGConv2d's mixing runs) are shared code, so every row pays the same for them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Conv7x7Layer", "DenseFFTLayer", "make_layer", "spatial_parameters",
           "IMPLEMENTATIONS"]

IMPLEMENTATIONS = ("sgconv", "conv7x7", "dense_fft")


class _Mixing(nn.Module):
    """D u skip, exact GELU and the mixing Linear(H -> H) over channels, as SGConv2d has."""

    def __init__(self, H: int):
        super().__init__()
        self.D = nn.Parameter(torch.randn(H))
        self.output_linear = nn.Linear(H, H)

    def finish(self, y, u):
        B, H, X, Y = u.shape
        z = F.gelu((y + self.D[:, None, None] * u).reshape(B, H, X * Y))      # (B, H, X*Y)
        W, b = self.output_linear.weight, self.output_linear.bias
        return torch.baddbmm(b[None, :, None], W.expand(B, H, H), z).reshape(B, H, X, Y)


class Conv7x7Layer(_Mixing):
    """The ConvNeXt depthwise 7x7 convolution as the spatial operator."""

    def __init__(self, H: int):
        super().__init__(H)
        self.dwconv = nn.Conv2d(H, H, 7, padding=3, groups=H, bias=False)

    def forward(self, u):
        return self.finish(self.dwconv(u), u)


class DenseFFTLayer(_Mixing):
    """A dense global depthwise kernel (H, X, Y) applied by a linear 2D FFT convolution."""

    def __init__(self, H: int, X: int, Y: int):
        super().__init__(H)
        self.weight = nn.Parameter(torch.randn(H, X, Y) / (X * Y) ** 0.5)
        import sgconv
        fast = sgconv.backend("torch").next_fast_len
        self.n = (fast(2 * X - 1), fast(2 * Y - 1))
        self._cache = None

    def _spectrum(self):
        """rfft2 of the kernel laid out with offset (0, 0) at index (0, 0): (H, nx, ny//2+1)."""
        H, X, Y = self.weight.shape
        nx, ny = self.n
        k = F.pad(self.weight, (0, ny - Y, 0, nx - X))
        k = torch.roll(k, shifts=(-(X // 2), -(Y // 2)), dims=(-2, -1))
        return torch.fft.rfft2(k)

    def forward(self, u):
        X, Y = u.shape[-2:]
        nx, ny = self.n
        if torch.is_grad_enabled() and self.weight.requires_grad:
            k_f = self._spectrum()
        else:                                      # evaluation: cached until the weight changes
            key = (self.weight.data_ptr(), self.weight._version)
            if self._cache is None or self._cache[0] != key:
                self._cache = (key, self._spectrum())
            k_f = self._cache[1]
        y = torch.fft.irfft2(torch.fft.rfft2(u, s=(nx, ny)) * k_f, s=(nx, ny))[..., :X, :Y]
        return self.finish(y, u)


def make_layer(impl: str, H: int, X: int, Y: int, kernel_dim: int = 16, seed: int = 0):
    """One of IMPLEMENTATIONS as an nn.Module for images (B, H, X, Y)."""
    torch.manual_seed(seed)
    if impl == "sgconv":
        from sgconv.torch import SGConv2d
        return SGConv2d(H, (X, Y), kernel_dim=kernel_dim)
    if impl == "conv7x7":
        return Conv7x7Layer(H)
    if impl == "dense_fft":
        return DenseFFTLayer(H, X, Y)
    raise ValueError(f"unknown implementation {impl!r}; expected one of {IMPLEMENTATIONS}")


def spatial_parameters(impl: str, H: int, X: int, Y: int, kernel_dim: int = 16) -> int:
    """The spatial operator's weights: (N_x + N_y) 2 H d for sgconv, 49 H, X Y H."""
    if impl == "sgconv":
        import sgconv
        return sgconv.SGConv2dConfig(H, (X, Y), kernel_dim=kernel_dim).num_kernel_parameters
    return {"conv7x7": 49 * H, "dense_fft": X * Y * H}[impl]
