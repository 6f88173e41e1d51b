"""Two-dimensional SGConv, written once for every backend (shared/SPEC.md, "Two-dimensional
SGConv").

Each kernel row has two bidirectional 1D SGConv kernels, built exactly as in 1D by
:mod:`sgconv._ops` (own sub-kernels, decay and Z per axis): kx along the first spatial axis
(extent X), ky along the second (extent Y).  Along an axis the centred kernel at offset
delta is k0[delta] for delta >= 0 and k1[-delta - 1] for delta < 0, and the 2D kernel is

    k2[c, h, dx, dy] = kx[c, h, dx] * ky[c, h, dy]

convolved linearly (zero outside the image, never circularly) with D at lag (0, 0):

    y[b, c, h, x, y] = sum_{dx, dy} k2[c, h, dx, dy] u[b, h, x - dx, y - dy] + D[c, h] u[b, h, x, y]

By FFT: each axis is padded to n >= size + max(taps - 1, anti-causal taps) (<= 2 size - 1),
and the 2D kernel's spectrum is the outer product of the two 1D spectra plus D
(``Backend.spectrum2d``), so the (X, Y) kernel is never formed in space.  Shapes: u
(B, H, X, Y), axis kernels (C', H, taps) with C' = 2C, conv output (B, C, H, X, Y).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from . import _ops
from ._config2d import SGConv2dConfig
from ._ops import FFTPlan
from .backends._base import register_structure

__all__ = ["ARRAY_NAMES_2D", "Plan2d", "plan2d", "axis_kernels", "kernel_spectrum2d",
           "conv2d_with_spectrum", "conv2d", "spectrum", "Prepared2d", "prepare",
           "choose_channel_chunk", "layer"]

ARRAY_NAMES_2D = ("kernels_x", "multiplier_x", "decay_x", "kernel_norm_x",
                  "kernels_y", "multiplier_y", "decay_y", "kernel_norm_y",
                  "D", "out_weight", "out_bias")
"""The keys of the ``arrays`` mapping the 2D layer functions take (Params2d.arrays()):
per axis a in (x, y): kernels_a N_a x (2C, H, d), multiplier_a (H,), decay_a (H,) or None,
kernel_norm_a Z_a (2C, H); then D (C, H), out_weight (H, C*H), out_bias (H,); all in the
compute dtype on the input's device."""

_AXES = ("x", "y")


class Plan2d(NamedTuple):
    """The FFT plan of a 2D convolution: one 1D plan per axis (one FFT each, no blocks)."""

    x: FFTPlan
    y: FFTPlan

    @property
    def sizes(self) -> tuple[int, int]:
        """(X, Y): the image extents the plan is for."""
        return (self.x.length, self.y.length)

    @property
    def n(self) -> tuple[int, int]:
        """(nx, ny): the FFT lengths."""
        return (self.x.n, self.y.n)


def _axis_plan(bk, size: int, taps: int) -> FFTPlan:
    # One FFT per axis (block_size=0): the kernel spans the image, so overlap-add never pays.
    return _ops.plan_fft(bk, size, taps, True, 0)


def plan2d(bk, config: SGConv2dConfig, sizes) -> Plan2d:
    """The plan of the layer's convolution for images of ``sizes`` (X, Y): per axis a
    bidirectional kernel of min(size, K) taps."""
    return Plan2d(*(_axis_plan(bk, L, min(L, axis.kernel_length))
                    for L, axis in zip(sizes, config.axes)))


def axis_kernels(bk, config: SGConv2dConfig, arrays, sizes, channels: slice = slice(None)):
    """The two bidirectional 1D kernels of the channels in ``channels``, each exactly as in
    1D: (kx (2C, h, min(X, K_x)), ky (2C, h, min(Y, K_y))), rows C..2C-1 anti-causal."""
    whole = channels == slice(None)
    pick = (lambda x: x) if whole else (lambda x: None if x is None else x[..., channels])
    out = []
    for axis, a, L in zip(config.axes, _AXES, sizes):
        kernels = arrays["kernels_" + a]
        if not whole:
            kernels = tuple(w[:, channels] for w in kernels)
        out.append(_ops.kernel(bk, axis, kernels, pick(arrays["multiplier_" + a]),
                               pick(arrays["kernel_norm_" + a]), pick(arrays["decay_" + a]),
                               length=L, pad=False))              # (2C, h, min(L, K))
    return tuple(out)


def kernel_spectrum2d(bk, kx, ky, D, plan: Plan2d):
    """The 2D kernel's spectrum (C, H, nx, ny//2 + 1): the outer product of the axis
    kernels' spectra, plus D (C, H) or None at lag (0, 0).

    kx (2C, H, tx), ky (2C, H, ty): bidirectional axis kernels; each is laid out as in 1D
    (k0 from lag 0 on, the plan's anti-causal taps of k1 reversed at the end of the
    length-n buffer) inside the backend's hook.
    """
    return bk.spectrum2d(kx, ky, D, plan.x.n, plan.y.n, plan.x.anti_taps,
                         plan.y.anti_taps)                         # (C, H, nx, ny//2+1)


def conv2d_with_spectrum(bk, u, k_f, plan: Plan2d):
    """y = irfft2(rfft2(u) * k_f)[..., :X, :Y], linear: (B, H, X, Y) -> (B, C, H, X, Y)."""
    return bk.fft_conv2d(u, k_f, plan.x.n, plan.y.n)


def conv2d(bk, u, kx, ky, D=None):
    """The 2D SGConv convolution (SPEC), by FFT in O(X Y log(X Y)):

        y[b,c,h,x,y] = sum_{dx,dy} kx~[c,h,dx] ky~[c,h,dy] u[b,h,x-dx,y-dy] + D[c,h] u[b,h,x,y]

    with k~[delta] = k0[delta] (delta >= 0), k1[-delta-1] (delta < 0) per axis.
    u: (B, H, X, Y); kx: (2C, H, tx), 1 <= tx <= X; ky: (2C, H, ty), 1 <= ty <= Y;
    D: (C, H) or None.  Returns (B, C, H, X, Y).
    """
    X, Y = u.shape[-2:]
    plan = Plan2d(_axis_plan(bk, X, kx.shape[-1]), _axis_plan(bk, Y, ky.shape[-1]))
    return conv2d_with_spectrum(bk, u, kernel_spectrum2d(bk, kx, ky, D, plan), plan)


# --- the layer, in two halves (as sgconv._ops) -----------------------------------------------

def spectrum(bk, config: SGConv2dConfig, arrays, plan: Plan2d, channels: slice = slice(None)):
    """The first half: the 2D kernel's spectrum for the plan's image size, D folded into
    lag (0, 0), for the H channels in ``channels``: (C, h, nx, ny//2 + 1), complex."""
    kx, ky = axis_kernels(bk, config, arrays, plan.sizes, channels)
    D = arrays["D"] if channels == slice(None) else arrays["D"][:, channels]
    return kernel_spectrum2d(bk, kx, ky, D, plan)


@dataclasses.dataclass(frozen=True)
class Prepared2d:
    """The 2D layer with its kernel already in the frequency domain, for one image size.

    ``spectrum`` (C, H, nx, ny//2+1) complex (D folded in), ``out_weight`` (H, C*H),
    ``out_bias`` (H,): arrays of one backend; ``config`` and ``plan`` are static.  Made by
    :func:`prepare`; the layer takes it in place of the parameters (the torch module keeps
    one as its evaluation cache; under JAX it is a pytree).
    """

    config: SGConv2dConfig
    plan: Plan2d
    spectrum: Any
    out_weight: Any
    out_bias: Any

    @property
    def sizes(self) -> tuple[int, int]:
        """The image size (X, Y) the spectrum was prepared for."""
        return self.plan.sizes

    @property
    def dtype(self):
        """The real dtype the layer computes in (float32 or float64)."""
        return self.out_weight.dtype


register_structure(Prepared2d, data=("spectrum", "out_weight", "out_bias"),
                   static=("config", "plan"))


def prepare(bk, config: SGConv2dConfig, arrays, sizes) -> Prepared2d:
    """The first half, done once: the spectrum of every channel for images of ``sizes``."""
    plan = plan2d(bk, config, sizes)
    return Prepared2d(config, plan, spectrum(bk, config, arrays, plan), arrays["out_weight"],
                      arrays["out_bias"])


def choose_channel_chunk(config: SGConv2dConfig, batch: int, plan: Plan2d, itemsize: int,
                         requested: int | None = None) -> int | None:
    """How many of the H channels to convolve at a time (None: all): as in 1D, the largest
    h whose inverse FFT output, B * C * h * nx * ny reals, fits the memory budget."""
    flat = FFTPlan(plan.x.length * plan.y.length, plan.x.n * plan.y.n, None, 0)  # nx*ny points
    return _ops.choose_channel_chunk(config, batch, flat, itemsize, requested)


def layer(bk, config: SGConv2dConfig, source, u, *, dropout: float = 0.0, rng=None,
          channel_chunk=None):
    """The 2D layer on u (B, H, X, Y), already in the compute dtype, -> (B, H, X, Y):

        y = conv2d(u, kx (x) ky) + D u  (B, C, H, X, Y) -> (B, C*H, X*Y) -> GELU -> dropout
          -> W y + b                    (B, H, X, Y)

    source: the ``arrays`` mapping (ARRAY_NAMES_2D) or a :class:`Prepared2d` for this size.
    channel_chunk: None chooses it from the memory budget; the numbers are the same.
    """
    B, H, X, Y = u.shape
    if isinstance(source, Prepared2d):
        plan, full = source.plan, source.spectrum
        out_weight, out_bias = source.out_weight, source.out_bias
        spectrum_of = lambda sl: full if sl == slice(None) else full[:, sl]  # noqa: E731
    else:
        plan = plan2d(bk, config, (X, Y))
        out_weight, out_bias = source["out_weight"], source["out_bias"]
        spectrum_of = lambda sl: spectrum(bk, config, source, plan, sl)  # noqa: E731
    h = choose_channel_chunk(config, B, plan, 8 if bk.dtype_name(u) == "float64" else 4,
                             channel_chunk)

    def convolve(sl):                                              # (B, C, h, X, Y)
        return conv2d_with_spectrum(bk, u if sl == slice(None) else u[:, sl], spectrum_of(sl),
                                    plan)

    out = _ops.mix_chunks(bk, convolve, H, h, out_weight, out_bias, dropout,
                          rng, like=u)                             # (B, H, X*Y)
    return out.reshape(B, H, X, Y)
