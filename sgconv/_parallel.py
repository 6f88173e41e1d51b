"""Context parallelism: one SGConv layer over a sequence split across P devices, exactly.

Written once for every backend; the framework front ends (sgconv.torch.distributed,
sgconv.jax.distributed) supply only their collectives.  Device p holds the time slice
u[:, :, t_p : t_p + L_p] (B, H, L_p) of a sequence of length L = sum_p L_p.  SGConv is
depthwise until the mixing, so

    1. all-to-all:  (B, H, L_p) time slice -> (B, h_p, L) channel slice, the whole sequence
                    for the h_p channels device p owns;
    2. the long convolution of those channels, by FFT over the full length L with the
       kernel spectrum of those channels only (exactly as on one device);
    3. all-to-all:  (B, C, h_p, L) -> (B, C, H, L_p), every channel for the time slice;
    4. GELU, dropout and the mixing linear, pointwise in time.

Each all-to-all moves B*H*L/P elements out of (and into) a device for C = 1, of which the
fraction (P-1)/P leaves it; the second carries C times that (the C heads before mixing).
Per layer and direction (forward; the backward sends the same in reverse):
``communication_volume``.
"""

from __future__ import annotations

from . import _ops
from ._ops import FFTPlan

__all__ = ["split_sizes", "offsets", "communication_volume", "context_layer"]


def split_sizes(n: int, parts: int) -> tuple[int, ...]:
    """n items in ``parts`` contiguous pieces as even as can be: the first n % parts get one more.

    split_sizes(10, 4) == (3, 3, 2, 2).  Used for the channels (each device convolves its
    h_p of the H channels) and as the default time split (L_p).
    """
    if parts < 1:
        raise ValueError(f"cannot split into {parts} parts: expected at least 1")
    q, r = divmod(n, parts)
    return tuple(q + 1 if p < r else q for p in range(parts))


def offsets(sizes) -> tuple[int, ...]:
    """Start of each piece: (0, s_0, s_0 + s_1, ...)."""
    out, start = [], 0
    for s in sizes:
        out.append(start)
        start += s
    return tuple(out)


def communication_volume(batch: int, d_model: int, length: int, parts: int,
                         channels: int = 1, itemsize: int = 4) -> dict:
    """Bytes one device sends in one layer's forward (the backward sends the same again).

    First all-to-all: its (B, H, L/P) slice, of which the (P-1)/P addressed to other
    devices leaves it; second: its (B, C, H/P, L) convolution output, (P-1)/P of it sent.
    With even splits each is B*H*L/P elements (times C for the second), (P-1)/P sent.
    Returns {"first": bytes, "second": bytes, "total": bytes} for device 0 (the largest
    share when the sizes do not divide).
    """
    h0, L0 = split_sizes(d_model, parts)[0], split_sizes(length, parts)[0]
    first = batch * (d_model - h0) * L0 * itemsize          # (B, H, L_0) less its own channels
    second = batch * channels * h0 * (length - L0) * itemsize  # (B, C, h_0, L) less own time
    return {"first": first, "second": second, "total": first + second}


def _conv_chunks(bk, x, spectrum, plan: FFTPlan, chunk: int):
    """conv(x, k) + D x of ``chunk`` channels at a time: yields (B, C, chunk, L) pieces."""
    for h0 in range(0, x.shape[1], chunk):
        yield _ops.conv_with_spectrum(bk, x[:, h0:h0 + chunk], spectrum[:, h0:h0 + chunk], plan)


def context_layer(bk, config, spectrum, out_weight, out_bias, u, plan: FFTPlan, *,
                  to_channels, to_time, dropout: float = 0.0, rng=None, channel_chunk=None):
    """One device's part of the layer: its time slice u (B, H, L_p) -> its output (B, H, L_p).

        x = to_channels(u)                          (B, h, L)     the first all-to-all
        y = conv(x, k) + D x                        (B, C, h, L)  by FFT, full length L
        y = to_time(y)                              (B, C, H, L_p) the second all-to-all
        out = W dropout(GELU(y)) + b                (B, H, L_p)

    spectrum: this device's kernel spectrum (C, h, n//2+1) for the plan's length L (from
    :func:`sgconv._ops.spectrum` with its channel slice, D folded in), None when the device
    owns no channel (H < P); out_weight (H, C*H) and out_bias (H,) are the whole mixing (it
    is pointwise in time).  to_channels and to_time are the front end's all-to-alls
    (differentiable: the adjoint of each is the reverse all-to-all); to_time receives the
    convolution as an iterator of channel chunks (B, C, h_i, L), in order, so that it can
    send each as it comes instead of holding them all.  The h channels are convolved, and
    the H channels mixed, ``channel_chunk`` at a time (None: from the memory budget, as
    :func:`sgconv._ops.layer` does); any chunk gives the same numbers.
    """
    x = to_channels(u)                                             # (B, h, L)
    B, h, L = x.shape
    C = config.channels
    chunk = _ops.choose_channel_chunk(config, B, plan, _ops._itemsize(bk, x), channel_chunk)
    if h == 0:
        # H < P: no channel to convolve.  The empty result still derives from x, so that the
        # backward passes through both all-to-alls on every device, as the collectives need.
        pieces = iter([bk.concat([x[:, None]] * C, axis=1)])       # (B, C, 0, L)
    else:
        pieces = _conv_chunks(bk, x, spectrum, plan, h if chunk is None else min(chunk, h))
    del x                                      # the iterator holds it until the last chunk
    y = to_time(pieces)                                            # (B, C, H, L_p)
    return _ops.mix(bk, y, out_weight, out_bias, dropout, rng, channel_chunk=chunk)
