"""The drawn configuration of one check, and the Hypothesis strategies that draw it.

An :class:`Example` fixes everything a property needs: the layer's configuration, the
sequence length L and batch B, the dtype, the convolution's kernel length and block size,
the layout, and one integer seed from which every random array of the check is made.
Its ``repr`` is a complete reproduction: ``check_conv('torch', Example(...))``.

Sizes stay small because the reference's direct sums cost O(L^2): H <= 3, C <= 2,
d <= 8, N <= 4 (so K <= 64), L <= 96, B <= 3.
"""

from __future__ import annotations

import dataclasses

from hypothesis import event, note
from hypothesis import strategies as st

import sgconv

__all__ = ["Example", "examples", "label", "MAX_LENGTH", "PRIMES"]

MAX_LENGTH = 96
PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79,
          83, 89)


@dataclasses.dataclass(frozen=True)
class Example:
    """One drawn case.  Field names follow SGConvConfig; the rest:

    length (L), batch (B), dtype ('float32' / 'float64'), taps (Lk, the length of the
    random kernel given to ``sgconv.conv``, 1 <= Lk <= L), block_size (passed to
    ``sgconv.conv`` / ``sgconv.apply``: None lets the planner choose, 0 forces one FFT,
    P > 0 forces overlap-add blocks of P), transposed (the layer's layout), skip (whether
    the convolution checks pass D), seed (every random array of the check).
    """

    d_model: int = 2
    channels: int = 1
    kernel_dim: int = 4
    n_scales: int | None = 3
    l_max: int = 16
    decay_min: float = 2.0
    decay_max: float = 2.0
    bidirectional: bool = False
    interpolation: str = "linear"
    learnable_decay: bool = False
    length: int = 20
    batch: int = 2
    dtype: str = "float32"
    taps: int = 20
    block_size: int | None = None
    transposed: bool = True
    skip: bool = True
    seed: int = 0

    @property
    def config(self) -> sgconv.SGConvConfig:
        return sgconv.SGConvConfig(
            d_model=self.d_model, l_max=self.l_max, channels=self.channels,
            kernel_dim=self.kernel_dim, n_scales=self.n_scales, decay_min=self.decay_min,
            decay_max=self.decay_max, bidirectional=self.bidirectional,
            interpolation=self.interpolation, learnable_decay=self.learnable_decay)

    @property
    def kernel_rows(self) -> int:
        return 2 * self.channels if self.bidirectional else self.channels

    def replace(self, **changes) -> "Example":
        return dataclasses.replace(self, **changes)

    def shapes(self) -> str:
        cfg = self.config
        return (f"u (B={self.batch}, H={self.d_model}, L={self.length}), "
                f"kernel (C'={self.kernel_rows}, H={self.d_model}, K={cfg.kernel_length}) from "
                f"N={cfg.num_scales} sub-kernels of d={self.kernel_dim}, conv taps Lk={self.taps}")

    def describe(self, backend: str, check: str = "check_...") -> str:
        """What reproduces a failure: backend, dtype, shapes, seed and the exact call."""
        mode = "bidirectional" if self.bidirectional else "causal"
        return (f"backend={backend!r} dtype={self.dtype} {mode} block_size={self.block_size} "
                f"seed={self.seed}\n  {self.shapes()}\n  reproduce: "
                f"from {__package__}.properties import *; {check}({backend!r}, {self!r})")


def _minimum_block(length: int, taps: int, bidirectional: bool) -> int:
    """The smallest block size the planner accepts: max(Lk - 1, anti-causal taps, 1)."""
    anti = min(taps, length - 1) if bidirectional else 0
    return max(taps - 1, anti, 1)


@st.composite
def examples(draw, *, dtypes=("float32", "float64"), modes=(False, True), min_length: int = 1,
             max_length: int = MAX_LENGTH, max_batch: int = 3):
    """Draw an :class:`Example` (see the module docstring for the ranges)."""
    H = draw(st.integers(1, 3))
    C = draw(st.integers(1, 2))
    d = draw(st.integers(1, 8))
    bidirectional = draw(st.sampled_from(modes))
    N = draw(st.integers(1, 4))
    if draw(st.booleans()):                       # N given directly
        n_scales = N
        l_max = draw(st.integers(1, d * 2 ** (N - 1)))
    else:                                         # an l_max from which SPEC derives this N
        n_scales = None
        lowest = 1 if N == 1 else d * 2 ** (N - 2) + 1
        l_max = draw(st.integers(lowest, d * 2 ** (N - 1)))
    K = d * 2 ** (N - 1)
    learnable = draw(st.sampled_from((False, False, False, True)))
    interpolation = draw(st.sampled_from(("linear", "linear", "linear", "nearest")))
    lo = round(draw(st.floats(0.25, 3.0)), 3)     # decay multiplier m (or exponent) range
    hi = round(lo + draw(st.sampled_from((0.0, 0.0, 0.5, 2.0))), 3)

    kind = draw(st.sampled_from(("1", "prime", "odd", "power of 2", "below l_max", "above K",
                                 "any")))
    top = max_length
    if kind == "1":
        L = 1
    elif kind == "prime":
        L = draw(st.sampled_from([p for p in PRIMES if p <= top]))
    elif kind == "odd":
        L = 2 * draw(st.integers(0, (top - 1) // 2)) + 1
    elif kind == "power of 2":
        L = 2 ** draw(st.integers(0, top.bit_length() - 1))
    elif kind == "below l_max" and l_max > 1:
        L = draw(st.integers(1, min(l_max - 1, top)))
    elif kind == "above K" and K < top:
        L = draw(st.integers(K + 1, min(3 * K, top)))
    else:
        L = draw(st.integers(1, top))
    L = max(L, min_length)

    B = draw(st.integers(1, max_batch))
    dtype = draw(st.sampled_from(dtypes))
    taps = draw(st.one_of(st.just(L), st.integers(1, L)))
    block_kind = draw(st.sampled_from(("planner", "one FFT", "blocks")))
    if block_kind == "planner":
        block_size = None
    elif block_kind == "one FFT":
        block_size = 0
    else:                                         # valid for the conv's and the layer's kernel
        least = max(_minimum_block(L, taps, bidirectional),
                    _minimum_block(L, min(L, K), bidirectional))
        block_size = draw(st.integers(least, least + L))
    return Example(
        d_model=H, channels=C, kernel_dim=d, n_scales=n_scales, l_max=l_max, decay_min=lo,
        decay_max=hi, bidirectional=bidirectional, interpolation=interpolation,
        learnable_decay=learnable, length=L, batch=B, dtype=dtype, taps=taps,
        block_size=block_size, transposed=draw(st.booleans()), skip=draw(st.booleans()),
        seed=draw(st.integers(0, 2 ** 32 - 1)))


def _length_class(ex: Example) -> str:
    L, cfg = ex.length, ex.config
    if L == 1:
        shape = "L=1"
    elif L in PRIMES:
        shape = "L prime"
    elif L & (L - 1) == 0:
        shape = "L power of 2"
    elif L % 2:
        shape = "L odd"
    else:
        shape = "L even"
    if L < ex.l_max:
        where = "L < l_max"
    elif L > cfg.kernel_length:
        where = "L > K"
    else:
        where = "l_max <= L <= K"
    return f"{shape}; {where}"


def label(ex: Example, backend: str, check: str) -> None:
    """Label the draw for ``--hypothesis-show-statistics`` and note the reproduction."""
    event(f"dtype={ex.dtype}")
    event("bidirectional" if ex.bidirectional else "causal")
    event(_length_class(ex))
    event(f"N={ex.config.num_scales} ({'n_scales' if ex.n_scales else 'from l_max'})")
    event("block_size=None (planner)" if ex.block_size is None else
          "block_size=0 (one FFT)" if ex.block_size == 0 else "block_size=P (overlap-add)")
    event(f"interpolation={ex.interpolation}"
          + (", learnable decay" if ex.learnable_decay else ""))
    event("decay m=1" if ex.decay_min == ex.decay_max == 1 else
          "decay range" if ex.decay_min != ex.decay_max else
          ("decay m<1" if ex.decay_min < 1 else "decay m>1"))
    note(ex.describe(backend, check))
