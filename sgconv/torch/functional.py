"""SGConv as functions of torch tensors: the kernel, the convolution and the layer.

Each is the generic math of :mod:`sgconv._ops` run by the torch backend, differentiable
with autograd, on whatever device the tensors live.  float16/bfloat16 inputs are computed
in float32 (no CPU FFT takes half precision; cuFFT's handles powers of two only) and
returned in their own dtype, with autocast switched off inside so that it cannot lower
the FFTs' precision.  Shapes follow shared/SPEC.md: u (B, H, L), kernel rows C' (C, or 2C
when bidirectional), sub-kernels (C', H, d).

::

    import torch, sgconv.torch.functional as SF
    k = SF.kernel(weights, multiplier, kernel_norm, 1024)        # (C', H, 1024)
    y = SF.conv(u, k, D)                                         # (B, C, H, L)
    out = SF.layer(u, weights, multiplier, kernel_norm, D, W, b) # (B, H, L)
"""

from __future__ import annotations

import contextlib

import torch

from .. import _checks, _ops
from .._api import validate_conv
from .._config import SGConvConfig
from .._switch import backend as _get_backend

__all__ = ["kernel", "conv", "layer"]

_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu")


_BACKEND = _get_backend("torch")   # loaded once here: no lock taken inside compiled code


def _bk():
    return _BACKEND


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 -> float32 (the FFTs' dtype); float32 and float64 stay."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _no_autocast(device: torch.device):
    """Autocast off for the block (it would run the GEMM, and so the FFTs after it, in half)."""
    if device.type in _AUTOCAST_DEVICES:
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _weights_config(weights, decay, interpolation: str, channels: int | None = None,
                    bidirectional: bool = False) -> SGConvConfig:
    """The static configuration implied by the sub-kernels' shapes (N, C', H, d)."""
    if isinstance(weights, torch.Tensor) or not len(weights):
        raise TypeError("weights must be a non-empty sequence of sub-kernel tensors "
                        "(C', H, d), one per scale (a module's kernel_list)")
    shape = tuple(weights[0].shape)
    if len(shape) != 3:
        raise ValueError(f"each sub-kernel must have shape (C', H, d), got {shape}")
    for i, w in enumerate(weights):
        if tuple(w.shape) != shape:
            raise ValueError(f"sub-kernel {i} has shape {tuple(w.shape)}, expected {shape} "
                             f"like sub-kernel 0: every scale has the same (C', H, d)")
    rows, H, d = shape
    N = len(weights)
    if channels is None:
        channels = rows // 2 if bidirectional else rows
    if rows != (2 * channels if bidirectional else channels):
        raise ValueError(f"the sub-kernels have C'={rows} rows but C={channels} channels "
                         f"{'bidirectional' if bidirectional else 'causal'} needs "
                         f"{2 * channels if bidirectional else channels}")
    return SGConvConfig(d_model=H, l_max=d * 2 ** (N - 1), channels=channels, kernel_dim=d,
                        n_scales=N, bidirectional=bidirectional, interpolation=interpolation,
                        learnable_decay=decay is not None)


def _vector(name: str, x, H: int, cdtype, device):
    """multiplier / decay as (H,): given as (H,), (1, H, 1) (the released module's layout)
    or one value for every channel (the released 'learnable' mode's 0-d multiplier)."""
    x = torch.as_tensor(x, device=device)
    if x.numel() == 1:
        return x.reshape(1).expand(H).to(cdtype)
    if x.numel() != H:
        raise ValueError(f"{name} must hold H={H} values ((H,) or (1, H, 1)) or one value, "
                         f"got shape {tuple(x.shape)}")
    return x.reshape(H).to(cdtype)


def _norm(kernel_norm, rows: int, H: int, cdtype, device):
    """Z as (C', H) (the released module stores it as (C', H, 1))."""
    Z = torch.as_tensor(kernel_norm, device=device)
    if tuple(Z.shape) not in ((rows, H), (rows, H, 1)):
        raise ValueError(f"kernel_norm must have shape (C', H) = {(rows, H)} or (C', H, 1), "
                         f"got {tuple(Z.shape)}")
    return Z.reshape(rows, H).to(cdtype)


def kernel(weights, multiplier, kernel_norm, length: int, *, decay=None,
           interpolation: str = "linear") -> torch.Tensor:
    """The SGConv kernel for length L: k = Cat(m^(N-1-i) Up_i(w_i))[..., :L] / Z.

    weights: N tensors (C', H, d), the sub-kernels w_i; multiplier m: (H,) or (1, H, 1);
    kernel_norm Z: (C', H) or (C', H, 1); decay: (H,) for the learnable-decay variant
    (k_raw[..., t] *= (t+1)^(-decay[h]); m is then ignored).  Returns (C', H, L), zero
    padded past K = d 2^(N-1), in the weights' dtype (float32 for half weights).
    """
    bk = _bk()
    length = _checks.check_length(length)
    config = _weights_config(weights, decay, interpolation,
                             channels=tuple(weights[0].shape)[0] if len(weights) else None)
    w0 = weights[0]
    cdtype, device = _compute_dtype(w0.dtype), w0.device
    H, rows = config.d_model, config.kernel_rows
    with _no_autocast(device):
        return _ops.kernel(bk, config, tuple(w.to(cdtype) for w in weights),
                           _vector("multiplier", multiplier, H, cdtype, device),
                           _norm(kernel_norm, rows, H, cdtype, device),
                           None if decay is None else _vector("decay", decay, H, cdtype, device),
                           length=int(length))                     # (C', H, L)


def conv(u, k, D=None, *, bidirectional: bool = False, block_size: int | None = None):
    """SGConv's long convolution (linear, by FFT), with the skip term folded into lag 0:

        y[b,c,h,t] = sum_{s<=t} k[c,h,s] u[b,h,t-s]
                   (+ sum_{s=1..L-1-t} k[C+c,h,s-1] u[b,h,t+s] when bidirectional)
                   + D[c,h] u[b,h,t]

    u: (B, H, L); k: (C', H, Lk), 1 <= Lk <= L; D: (C, H) or None.  Returns (B, C, H, L)
    in u's dtype.  ``block_size``: None lets the planner pick overlap-add blocks when the
    kernel is much shorter than L (cost ~ L log Lk), 0 forces one FFT, P > 0 blocks of P.
    """
    bk = _bk()
    if not isinstance(k, torch.Tensor):
        raise TypeError(f"k must be a torch.Tensor (C', H, Lk), got {type(k).__name__}")
    if D is not None and not isinstance(D, torch.Tensor):
        raise TypeError(f"D must be a torch.Tensor (C, H) or None, got {type(D).__name__}")
    bidirectional = _checks.check_bool("bidirectional", bidirectional)
    block_size = _checks.check_block_size(block_size)
    u, k, D = validate_conv(bk, u, k, D, bidirectional)
    cdtype = _compute_dtype(u.dtype)
    if D is not None:
        D = D.to(dtype=cdtype)
    with _no_autocast(u.device):
        y = _ops.conv(bk, u.to(cdtype), k.to(device=u.device, dtype=cdtype), D,
                      bidirectional, block_size)                   # (B, C, H, L)
    return y.to(u.dtype)


def layer(u, weights, multiplier, kernel_norm, D, out_weight, out_bias, *, decay=None,
          bidirectional: bool = False, interpolation: str = "linear", dropout: float = 0.0,
          training: bool = True, generator=None, transposed: bool = True,
          block_size: int | None = None, channel_chunk: int | None = None,
          return_kernel: bool = False):
    """The SGConv layer: conv -> (B, C*H, L) -> GELU -> dropout -> Linear(C*H -> H).

    u: (B, H, L), or (B, L, H) with ``transposed=False``; weights: N sub-kernels (C', H, d);
    multiplier (H,) or (1, H, 1); kernel_norm (C', H) or (C', H, 1); D (C, H); out_weight
    (H, C*H); out_bias (H,); decay (H,) for the learnable-decay variant.  Dropout (rate
    ``dropout``) acts only when ``training``; ``generator`` (a torch.Generator or int seed)
    makes it reproducible.  ``channel_chunk``: work through the H channels that many at a
    time (None: chosen from ``sgconv.get_memory_budget()``; the numbers are the same).
    Returns u's layout and dtype, and the kernel (C', H, L) too with ``return_kernel``.
    """
    bk = _bk()
    rate = _checks.check_rate(dropout)
    transposed = _checks.check_bool("transposed", transposed)
    block_size = _checks.check_block_size(block_size)
    channel_chunk = _checks.check_channel_chunk(channel_chunk)
    if not isinstance(D, torch.Tensor) or D.ndim != 2:
        raise ValueError(f"D must be a (C, H) tensor, got "
                         f"{tuple(D.shape) if isinstance(D, torch.Tensor) else type(D).__name__}")
    config = _weights_config(weights, decay, interpolation, channels=D.shape[0],
                             bidirectional=bidirectional)
    u = _checks.check_input(bk, u, config.d_model, transposed)
    H, C = config.d_model, config.channels
    if tuple(out_weight.shape) != (H, C * H) or tuple(out_bias.shape) != (H,):
        raise ValueError(f"out_weight must be (H, C*H) = {(H, C * H)} and out_bias (H,) = "
                         f"{(H,)}, got {tuple(out_weight.shape)} and {tuple(out_bias.shape)}")
    if tuple(D.shape) != (C, H):
        raise ValueError(f"D must have shape (C, H) = {(C, H)}, got {tuple(D.shape)}")
    cdtype, device = _compute_dtype(u.dtype), u.device
    arrays = {
        "kernels": tuple(w.to(device=device, dtype=cdtype) for w in weights),
        "multiplier": _vector("multiplier", multiplier, H, cdtype, device),
        "kernel_norm": _norm(kernel_norm, config.kernel_rows, H, cdtype, device),
        "decay": None if decay is None else _vector("decay", decay, H, cdtype, device),
        "D": D.to(device=device, dtype=cdtype),
        "out_weight": out_weight.to(device=device, dtype=cdtype),
        "out_bias": out_bias.to(device=device, dtype=cdtype),
    }
    return run_layer(config, arrays, u, transposed=transposed,
                     dropout=rate if training else 0.0, rng=generator, block_size=block_size,
                     channel_chunk=channel_chunk, return_kernel=return_kernel)


def run_layer(config: SGConvConfig, source, u, *, transposed: bool, dropout: float, rng,
              block_size, channel_chunk, return_kernel: bool = False):
    """The core's layer (sgconv._ops.layer) on checked torch input, in torch's habits: u's
    layout and dtype in and out, autocast off inside (so it cannot lower the FFTs'
    precision).  source: the arrays in the compute dtype on u's device, or a Prepared."""
    bk = _bk()
    with _no_autocast(u.device):
        x = u if transposed else u.transpose(-1, -2)                # (B, H, L)
        x = x.to(_compute_dtype(u.dtype))
        out = _ops.layer(bk, config, source, x, dropout=dropout, rng=rng,
                         block_size=block_size, channel_chunk=channel_chunk)  # (B, H, L)
        out = out.to(u.dtype)
        if not transposed:
            out = out.transpose(-1, -2)                              # (B, L, H)
        if return_kernel:
            k = _ops.kernel(bk, config, source["kernels"], source["multiplier"],
                            source["kernel_norm"], source["decay"], length=x.shape[-1])
            return out, k                                            # k (C', H, L)
        return out
