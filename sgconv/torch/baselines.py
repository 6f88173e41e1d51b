"""Baseline sequence-mixing layers for comparisons with SGConv in the same backbone.

Each convolutional baseline is SGConv's layer with another kernel: the same long
convolution (``sgconv.torch.functional.conv``: FFT, linear, the same bidirectional
layout), skip term D, GELU, dropout and output linear (C*H -> H, or -> 2H and a GLU),
so that a comparison measures the kernel and nothing else:

- :class:`LocalConv`: a short depthwise kernel of ``width`` taps (a CNN's local view).
- :class:`S4DConv`: the diagonal state-space kernel of S4D (Gu, Gupta, Goel and Re, "On
  the Parameterization and Initialization of Diagonal State Space Models", 2022),
  K[l] = 2 Re sum_n C_n (exp(dt A_n) - 1) / A_n exp(l dt A_n), S4D-Lin initialisation.
- :class:`DenseConv`: a free kernel with one weight per lag up to l_max (what SGConv's
  paper calls breaking its first principle, a parameter count sub-linear in L).

and :class:`SelfAttention` (multi-head, F.scaled_dot_product_attention) with
:class:`FeedForward`, for a small Transformer.

Every layer maps (B, H, L) -> (B, H, L).  The parameters that build a convolution kernel
carry an ``_optim`` dict, the convention of the S4 code base that the released SGConv
follows, which :func:`sgconv.torch.parameter_groups` reads: kernel weights train with the
kernel learning rate; S4D's A and dt also without weight decay, as S4 trains them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import functional as SF

__all__ = ["KernelConv", "LocalConv", "S4DConv", "DenseConv", "SelfAttention", "FeedForward"]


class KernelConv(nn.Module):
    """SGConv's layer around any kernel: subclasses define :meth:`kernel`.

        u (B, H, L) -> y = k * u + D u  (B, C, H, L)  (causal, or both halves when
        bidirectional) -> (B, C*H, L) -> GELU -> dropout -> Linear(C*H -> H) (B, H, L)

    with ``postact='glu'`` the linear maps to 2H and a GLU halves it.  Parameters: ``D``
    (C, H) ~ N(0, 1) and ``output_linear`` (``output_linear.0`` with the GLU), as in
    :class:`sgconv.torch.SGConv`.
    """

    uses_mask = False

    def __init__(self, d_model: int, *, channels: int = 1, bidirectional: bool = False,
                 postact: str | None = None, dropout: float = 0.0, device=None, dtype=None):
        super().__init__()
        if postact not in (None, "glu"):
            raise ValueError(f"postact must be None or 'glu', got {postact!r}")
        self.d_model, self.channels = int(d_model), int(channels)
        self.bidirectional, self.postact = bool(bidirectional), postact
        self.dropout_rate = float(dropout)
        H, C = self.d_model, self.channels
        factory = {"device": device, "dtype": dtype}
        self.D = nn.Parameter(torch.randn(C, H, **factory))                    # (C, H)
        mixing = nn.Linear(C * H, 2 * H if postact == "glu" else H, **factory)
        self.output_linear = mixing if postact is None else nn.Sequential(mixing, nn.GLU(dim=1))

    @property
    def kernel_rows(self) -> int:
        """C': C, or 2C when bidirectional (the anti-causal half in rows C..2C-1)."""
        return 2 * self.channels if self.bidirectional else self.channels

    def kernel(self, length: int) -> torch.Tensor:
        """The kernel for sequences of ``length`` L: (C', H, Lk) with 1 <= Lk <= L."""
        raise NotImplementedError

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, H, L) -> (B, H, L)."""
        B, H, L = u.shape
        k = self.kernel(L).to(u.dtype)                                         # (C', H, Lk)
        y = SF.conv(u, k, self.D.to(u.dtype), bidirectional=self.bidirectional)  # (B, C, H, L)
        z = F.gelu(y.reshape(B, self.channels * H, L))                         # (B, C*H, L)
        z = F.dropout(z, self.dropout_rate, self.training)
        mixing = self.output_linear if self.postact is None else self.output_linear[0]
        out = torch.matmul(mixing.weight, z) + mixing.bias[:, None]            # (B, H or 2H, L)
        return out if self.postact is None else F.glu(out, dim=1)             # (B, H, L)


def _kernel_parameter(tensor: torch.Tensor, optim: dict) -> nn.Parameter:
    p = nn.Parameter(tensor)
    p._optim = dict(optim)              # read by sgconv.torch.parameter_groups (S4's convention)
    return p


class _FreeKernel(KernelConv):
    """A kernel of ``taps`` free weights per row, (C', H, taps) ~ N(0, 1 / taps) (rows start
    near unit norm, like SGConv's); a sequence of length L < taps uses the first L."""

    def __init__(self, d_model: int, taps: int, *, lr: float = 0.001, **options):
        super().__init__(d_model, **options)
        if taps < 1:
            raise ValueError(f"{type(self).__name__} needs at least one tap, got {taps}")
        self.taps = int(taps)
        factory = {"device": self.D.device, "dtype": self.D.dtype}
        self.weight = _kernel_parameter(
            torch.randn(self.kernel_rows, self.d_model, taps, **factory) / math.sqrt(taps),
            {"lr": lr})                                                         # (C', H, taps)

    def kernel(self, length: int) -> torch.Tensor:
        return self.weight[..., :min(self.taps, length)]                       # (C', H, Lk)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, taps={self.taps}, channels={self.channels}, "
                f"bidirectional={self.bidirectional}, postact={self.postact!r}")


class LocalConv(_FreeKernel):
    """A depthwise convolution with ``width`` taps per direction (lags 0..width-1, and
    1..width ahead when bidirectional): it sees only its neighbourhood.  Weights
    (C', H, width) ~ N(0, 1 / width)."""

    def __init__(self, d_model: int, width: int, **options):
        super().__init__(d_model, width, **options)
        self.width = self.taps


class DenseConv(_FreeKernel):
    """A free long kernel, one weight per lag up to ``l_max`` (zero beyond).  Weights
    (C', H, l_max) ~ N(0, 1 / l_max): unit-norm rows at the start, no decay and no shared
    structure, so the parameter count grows linearly with l_max."""

    def __init__(self, d_model: int, l_max: int, **options):
        super().__init__(d_model, l_max, **options)
        self.l_max = self.taps


class S4DConv(KernelConv):
    """S4D's diagonal state-space kernel, zero-order-hold discretisation, S4D-Lin init.

    Per channel h, N/2 complex modes n with A_n = -exp(log_A_real) + i A_imag (initially
    -1/2 + i pi n), step dt = exp(log_dt) (initially log-uniform in [dt_min, dt_max]),
    B = 1, and C' output rows C[c, h, n] ~ complex N(0, 1):

        K[c, h, l] = 2 Re sum_n C[c,h,n] (exp(dt A_n) - 1) / A_n * exp(l dt A_n)

    (the conjugate modes give the factor 2).  When bidirectional, the two halves have their
    own C and share A and dt.  A and dt train with the kernel learning rate and no weight
    decay (``_optim``), as in S4.  The Vandermonde product materialises (H, N/2, L)
    complex numbers, as S4D's reference code does.
    """

    def __init__(self, d_model: int, d_state: int = 64, *, dt_min: float = 0.001,
                 dt_max: float = 0.1, lr: float = 0.001, **options):
        super().__init__(d_model, **options)
        if d_state < 2 or d_state % 2:
            raise ValueError(f"d_state must be an even int >= 2 (N/2 conjugate pairs), "
                             f"got {d_state}")
        H, n = self.d_model, d_state // 2
        self.d_state = int(d_state)
        factory = {"device": self.D.device, "dtype": self.D.dtype}
        log_dt = torch.rand(H, **factory) * (math.log(dt_max) - math.log(dt_min)) \
            + math.log(dt_min)                                                  # (H,)
        optim = {"lr": lr, "weight_decay": 0.0}
        self.log_dt = _kernel_parameter(log_dt, optim)
        self.log_A_real = _kernel_parameter(
            torch.full((H, n), math.log(0.5), **factory), optim)                # (H, N/2)
        self.A_imag = _kernel_parameter(
            math.pi * torch.arange(n, **factory).expand(H, n).clone(), optim)  # (H, N/2)
        C = torch.randn(self.kernel_rows, H, n, dtype=torch.complex64 if self.D.dtype !=
                        torch.float64 else torch.complex128, device=self.D.device)
        self.C = nn.Parameter(torch.view_as_real(C).clone())                   # (C', H, N/2, 2)

    def kernel(self, length: int) -> torch.Tensor:
        dt = torch.exp(self.log_dt)                                             # (H,)
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)             # (H, N/2)
        dtA = A * dt[:, None]                                                   # (H, N/2)
        C = torch.view_as_complex(self.C) * ((torch.exp(dtA) - 1.0) / A)        # (C', H, N/2)
        steps = torch.arange(length, device=dt.device, dtype=dt.dtype)          # (L,)
        # Re(C z^l) with z^l = exp(l dt Re A) (cos + i sin)(l dt Im A), in real arithmetic
        # (one real batched matmul; complex exp/einsum and their autograd are slower on CPU)
        decay = torch.exp(dtA.real[..., None] * steps)                         # (H, N/2, L)
        angle = dtA.imag[..., None] * steps                                     # (H, N/2, L)
        powers = torch.cat([decay * torch.cos(angle), -decay * torch.sin(angle)], 1)  # (H, N, L)
        coeffs = torch.cat([C.real, C.imag], -1)                                # (C', H, N)
        return 2.0 * torch.einsum("chm,hml->chl", coeffs, powers)              # (C', H, L)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, channels={self.channels}, "
                f"bidirectional={self.bidirectional}, postact={self.postact!r}")


class SelfAttention(nn.Module):
    """Multi-head self-attention on (B, H, L): softmax(q k^T / sqrt(H/heads)) v, then an
    output projection.  ``mask`` (B, L) bool hides padded keys; ``causal`` hides the future.
    """

    uses_mask = True

    def __init__(self, d_model: int, n_heads: int, *, causal: bool = False,
                 dropout: float = 0.0, device=None, dtype=None):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be a multiple of n_heads={n_heads}")
        self.d_model, self.n_heads, self.causal = d_model, n_heads, bool(causal)
        self.dropout_rate = float(dropout)
        self.in_proj = nn.Linear(d_model, 3 * d_model, device=device, dtype=dtype)
        self.out_proj = nn.Linear(d_model, d_model, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, H, L), mask (B, L) bool or None -> (B, H, L)."""
        B, H, L = x.shape
        heads = self.n_heads
        qkv = self.in_proj(x.transpose(1, 2))                                   # (B, L, 3H)
        q, k, v = qkv.view(B, L, 3, heads, H // heads).permute(2, 0, 3, 1, 4)   # (B, h, L, H/h)
        attn_mask = None
        if mask is not None:
            attn_mask = mask[:, None, None, :]                                  # (B, 1, 1, L)
            if self.causal:
                attn_mask = attn_mask & torch.ones(L, L, dtype=torch.bool,
                                                   device=x.device).tril()
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask,
            dropout_p=self.dropout_rate if self.training else 0.0,
            is_causal=self.causal and mask is None)                             # (B, h, L, H/h)
        y = self.out_proj(y.transpose(1, 2).reshape(B, L, H))                   # (B, L, H)
        return y.transpose(1, 2)                                                # (B, H, L)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, causal={self.causal}"


class FeedForward(nn.Module):
    """Position-wise Linear(H -> mult H) -> GELU -> dropout -> Linear(mult H -> H) on (B, H, L)."""

    uses_mask = False

    def __init__(self, d_model: int, mult: int = 2, *, dropout: float = 0.0, device=None,
                 dtype=None):
        super().__init__()
        self.up = nn.Linear(d_model, mult * d_model, device=device, dtype=dtype)
        self.down = nn.Linear(mult * d_model, d_model, device=device, dtype=dtype)
        self.dropout_rate = float(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.gelu(self.up(x.transpose(1, 2)))                                  # (B, L, mH)
        z = F.dropout(z, self.dropout_rate, self.training)
        return self.down(z).transpose(1, 2)                                     # (B, H, L)
