"""The baseline: SGConv as a user would write it in PyTorch straight from shared/SPEC.md.

Not a benchmark module (asv finds no timed names here).  ``bench_torch_layer.py`` and
``compare_torch.py`` time :mod:`sgconv.torch` against :class:`StraightforwardSGConv`, which
does each step the obvious way on every call:

    k   = Cat(m^(N-1-i) Up_i(w_i))[..., :L] / Z       rebuilt from the weights every call
    y   = irfft(rfft(u, 2L) * rfft(k, 2L), 2L)[..., :L] + D u      both signals to 2L
    out = Linear(GELU(y))                             on the (B, L, C*H) layout

with the parameters laid out as the released module's state_dict, so the same weights can
be loaded into both.  Tests check it against the float64 reference, so the baseline is a
correct SGConv and the comparison is like for like.
"""

from __future__ import annotations

import math

__all__ = ["StraightforwardSGConv"]

try:  # asv imports every module of the suite while discovering, torch or not
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:  # pragma: no cover - the benchmarks using this skip without torch
    torch = None
    _Module = object
else:
    _Module = nn.Module


class StraightforwardSGConv(_Module):
    """SGConv written directly from SPEC: u (B, H, L) -> (B, H, L) (linear interpolation).

    Parameters: ``kernel_list.{i}`` (C', H, d), ``multiplier`` (1, H, 1), ``kernel_norm``
    (C', H, 1), ``D`` (C, H), ``output_linear`` Linear(C*H -> H).
    """

    def __init__(self, d_model: int, l_max: int, channels: int = 1, kernel_dim: int = 64,
                 bidirectional: bool = False, decay_min: float = 2.0, decay_max: float = 2.0,
                 dropout: float = 0.0, device=None, dtype=None):
        if torch is None:
            raise ImportError("StraightforwardSGConv needs PyTorch: pip install torch")
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        H, C, d = d_model, channels, kernel_dim
        self.d_model, self.channels, self.kernel_dim = H, C, d
        self.bidirectional = bidirectional
        rows = 2 * C if bidirectional else C                       # C'
        self.num_scales = max(1, 1 + math.ceil(math.log2(l_max / d)))  # N
        self.kernel_list = nn.ParameterList(
            nn.Parameter(torch.randn(rows, H, d, **factory)) for _ in range(self.num_scales))
        self.register_buffer("multiplier",
                             torch.linspace(decay_min, decay_max, H, **factory).view(1, H, 1))
        self.register_buffer("kernel_norm", torch.ones(rows, H, 1, **factory))
        self.D = nn.Parameter(torch.randn(C, H, **factory))
        self.output_linear = nn.Linear(C * H, H, **factory)
        self.dropout = nn.Dropout(dropout)
        with torch.no_grad():
            self.kernel_norm.copy_(self.raw_kernel().norm(dim=-1, keepdim=True))

    def raw_kernel(self) -> torch.Tensor:
        """Cat(S): (C', H, K), each scale linearly upsampled and decayed."""
        N = self.num_scales
        scales = []
        for i, w in enumerate(self.kernel_list):
            factor = 2 ** max(0, i - 1)
            if factor > 1:
                w = F.interpolate(w, scale_factor=factor, mode="linear")  # (C', H, d*s_i)
            scales.append(w * self.multiplier ** (N - 1 - i))
        return torch.cat(scales, dim=-1)                           # (C', H, K)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        B, H, L = u.shape
        C = self.channels
        k = self.raw_kernel() / self.kernel_norm                   # (C', H, K)
        k = k[..., :L] if k.shape[-1] >= L else F.pad(k, (0, L - k.shape[-1]))  # (C', H, L)
        if self.bidirectional:
            # causal half at lags 0..L-1, anti-causal half reversed at the end: lags -L..-1
            k = torch.cat([k[:C], k[C:].flip(-1)], dim=-1)        # (C, H, 2L)
        k_f = torch.fft.rfft(k, n=2 * L)                           # (C, H, L+1)
        u_f = torch.fft.rfft(u, n=2 * L)                           # (B, H, L+1)
        y = torch.fft.irfft(u_f[:, None] * k_f, n=2 * L)[..., :L]  # (B, C, H, L)
        y = y + self.D[..., None] * u[:, None]                     # skip term D u
        y = y.reshape(B, C * H, L)                                 # (B, C*H, L)
        y = self.dropout(F.gelu(y))
        return self.output_linear(y.transpose(-1, -2)).transpose(-1, -2)  # (B, H, L)
