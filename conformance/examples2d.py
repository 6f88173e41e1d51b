"""The drawn configuration of one 2D check, and the Hypothesis strategy that draws it.

An :class:`Example2d` fixes everything a 2D property needs: the layer's configuration
(:class:`sgconv.SGConv2dConfig`), the image size (X, Y) and batch B, the dtype, the
lengths of the random axis kernels given to ``sgconv.conv2d``, the layout, and one integer
seed from which every random array of the check is made.  Its ``repr`` is a complete
reproduction: ``check2d_conv('torch', Example2d(...))``.

Sizes stay small because the reference's direct 2D sums cost O(X^2 Y^2): H <= 3, C <= 2,
d <= 6, N <= 3 per axis, X, Y <= 13, B <= 2.
"""

from __future__ import annotations

import dataclasses

from hypothesis import event, note
from hypothesis import strategies as st

import sgconv

__all__ = ["Example2d", "examples2d", "label2d", "MAX_SIDE"]

MAX_SIDE = 13
_PRIMES = (2, 3, 5, 7, 11, 13)


@dataclasses.dataclass(frozen=True)
class Example2d:
    """One drawn 2D case.  Field names follow SGConv2dConfig (``sizes``: the configured
    (X, Y) the kernels are built for); the rest: ``image`` (X, Y) of the input, ``batch``,
    ``dtype``, ``taps`` (tx, ty) of the random axis kernels given to ``sgconv.conv2d``
    (1 <= tx <= X, 1 <= ty <= Y), ``transposed`` (False: channels-last), ``skip`` (whether
    the convolution checks pass D), ``seed``.
    """

    d_model: int = 2
    channels: int = 1
    kernel_dim: int = 2
    n_scales: tuple | None = None
    sizes: tuple = (6, 9)
    decay_min: float = 2.0
    decay_max: float = 2.0
    interpolation: str = "linear"
    learnable_decay: bool = False
    image: tuple = (6, 9)
    batch: int = 2
    dtype: str = "float32"
    taps: tuple = (6, 9)
    transposed: bool = True
    skip: bool = True
    seed: int = 0

    @property
    def config(self) -> sgconv.SGConv2dConfig:
        return sgconv.SGConv2dConfig(
            d_model=self.d_model, sizes=self.sizes, channels=self.channels,
            kernel_dim=self.kernel_dim, n_scales=self.n_scales, decay_min=self.decay_min,
            decay_max=self.decay_max, interpolation=self.interpolation,
            learnable_decay=self.learnable_decay)

    def replace(self, **changes) -> "Example2d":
        return dataclasses.replace(self, **changes)

    def shapes(self) -> str:
        cfg = self.config
        X, Y = self.image
        return (f"u (B={self.batch}, H={self.d_model}, X={X}, Y={Y}), axis kernels "
                f"(C'={2 * self.channels}, H={self.d_model}, K=({cfg.kernel_lengths[0]}, "
                f"{cfg.kernel_lengths[1]})) from N={cfg.num_scales} sub-kernels of "
                f"d={self.kernel_dim}, conv2d taps {self.taps}")

    def describe(self, backend: str, check: str = "check2d_...") -> str:
        """What reproduces a failure: backend, dtype, shapes, seed and the exact call."""
        return (f"backend={backend!r} dtype={self.dtype} seed={self.seed}\n  {self.shapes()}"
                f"\n  reproduce: from conformance.properties2d import *; {check}({backend!r}, "
                f"{self!r})")


def _side(draw, built: int) -> int:
    """An image side: 1, a prime, odd, a power of two, below or above the built size."""
    kind = draw(st.sampled_from(("1", "prime", "odd", "power of 2", "built", "below", "above",
                                 "any")))
    if kind == "1":
        return 1
    if kind == "prime":
        return draw(st.sampled_from(_PRIMES))
    if kind == "odd":
        return 2 * draw(st.integers(0, (MAX_SIDE - 1) // 2)) + 1
    if kind == "power of 2":
        return draw(st.sampled_from((1, 2, 4, 8)))
    if kind == "built":
        return min(built, MAX_SIDE)
    if kind == "below" and built > 1:
        return draw(st.integers(1, min(built - 1, MAX_SIDE)))
    if kind == "above" and built < MAX_SIDE:
        return draw(st.integers(built + 1, MAX_SIDE))
    return draw(st.integers(1, MAX_SIDE))


@st.composite
def examples2d(draw, *, dtypes=("float32", "float64"), min_side: int = 1):
    """Draw an :class:`Example2d` (see the module docstring for the ranges)."""
    H = draw(st.integers(1, 3))
    C = draw(st.integers(1, 2))
    d = draw(st.integers(1, 6))
    given = draw(st.booleans())
    if given:                                     # N per axis given directly
        n_scales = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        sizes = tuple(draw(st.integers(1, d * 2 ** (n - 1))) for n in n_scales)
    else:                                         # sizes from which N is derived per axis
        n_scales = None
        sizes = (draw(st.integers(1, min(4 * d, MAX_SIDE))),
                 draw(st.integers(1, min(4 * d, MAX_SIDE))))
    if draw(st.sampled_from((False, False, True))):
        sizes = (sizes[0], sizes[0]) if n_scales is None else sizes   # a square built size
    image = (max(_side(draw, sizes[0]), min_side), max(_side(draw, sizes[1]), min_side))
    lo = round(draw(st.floats(0.25, 3.0)), 3)
    hi = round(lo + draw(st.sampled_from((0.0, 0.0, 0.5, 2.0))), 3)
    taps = tuple(draw(st.one_of(st.just(L), st.integers(1, L))) for L in image)
    return Example2d(
        d_model=H, channels=C, kernel_dim=d, n_scales=n_scales, sizes=sizes, decay_min=lo,
        decay_max=hi, interpolation=draw(st.sampled_from(("linear", "linear", "nearest"))),
        learnable_decay=draw(st.sampled_from((False, False, False, True))), image=image,
        batch=draw(st.integers(1, 2)), dtype=draw(st.sampled_from(dtypes)), taps=taps,
        transposed=draw(st.booleans()), skip=draw(st.booleans()),
        seed=draw(st.integers(0, 2 ** 32 - 1)))


def label2d(ex: Example2d, backend: str, check: str) -> None:
    """Label the draw for ``--hypothesis-show-statistics`` and note the reproduction."""
    X, Y = ex.image
    event(f"dtype={ex.dtype}")
    event("square image" if X == Y else "non-square image")
    event("a side of 1" if 1 in ex.image else "sides >= 2")
    cfg = ex.config
    event("image beyond K on an axis" if X > cfg.kernel_lengths[0] or Y > cfg.kernel_lengths[1]
          else "image within K")
    event(f"N={cfg.num_scales}")
    event("channels-last" if not ex.transposed else "(B, H, X, Y)")
    note(ex.describe(backend, check))
