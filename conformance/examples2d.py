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

from .examples import _StrategyDraws, design_rows

__all__ = ["Example2d", "examples2d", "design2d", "design_rank2d", "PINNED2D", "label2d",
           "MAX_SIDE", "SIDE_KINDS"]

MAX_SIDE = 13
SIDE_KINDS = ("1", "prime", "odd", "power of 2", "built", "below", "above", "any")
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


def _side(draws, axis: str, built: int) -> int:
    """An image side: 1, a prime, odd, a power of two, below or above the built size."""
    kind = draws.choice(f"side {axis}", SIDE_KINDS)
    if kind == "1":
        return 1
    if kind == "prime":
        return draws.choice(f"X {axis}", _PRIMES)
    if kind == "odd":
        return 2 * draws.integer(f"X {axis}", 0, (MAX_SIDE - 1) // 2) + 1
    if kind == "power of 2":
        return draws.choice(f"X {axis}", (1, 2, 4, 8))
    if kind == "built":
        return min(built, MAX_SIDE)
    if kind == "below" and built > 1:
        return draws.integer(f"X {axis}", 1, min(built - 1, MAX_SIDE))
    if kind == "above" and built < MAX_SIDE:
        return draws.integer(f"X {axis}", built + 1, MAX_SIDE)
    return draws.integer(f"X {axis}", 1, MAX_SIDE)


def _build2d(draws, *, dtypes=("float32", "float64"), min_side: int = 1) -> Example2d:
    """One Example2d from ``draws`` (see the module docstring for the ranges)."""
    H = draws.integer("d_model", 1, 3)
    C = draws.integer("channels", 1, 2)
    d = draws.integer("kernel_dim", 1, 6)
    if draws.choice("N given", (True, False)):      # N per axis given directly
        n_scales = (draws.integer("N x", 1, 3), draws.integer("N y", 1, 3))
        sizes = tuple(draws.integer("size", 1, d * 2 ** (n - 1)) for n in n_scales)
    else:                                           # sizes from which N is derived per axis
        n_scales = None
        sizes = (draws.integer("size", 1, min(4 * d, MAX_SIDE)),
                 draws.integer("size", 1, min(4 * d, MAX_SIDE)))
    if draws.choice("square sizes", (False, False, True)) and n_scales is None:
        sizes = (sizes[0], sizes[0])
    image = (max(_side(draws, "x", sizes[0]), min_side),
             max(_side(draws, "y", sizes[1]), min_side))
    lo = round(draws.real("decay_min", 0.25, 3.0), 3)
    hi = round(lo + draws.choice("decay spread", (0.0, 0.0, 0.5, 2.0)), 3)
    taps = tuple(L if draws.choice("taps", ("L", "fewer")) == "L" else
                 draws.integer("taps", 1, L) for L in image)
    return Example2d(
        d_model=H, channels=C, kernel_dim=d, n_scales=n_scales, sizes=sizes, decay_min=lo,
        decay_max=hi, interpolation=draws.choice("interpolation", ("linear", "linear", "nearest")),
        learnable_decay=draws.choice("learnable decay", (False, False, False, True)),
        image=image, batch=draws.integer("batch", 1, 2), dtype=draws.choice("dtype", dtypes),
        taps=taps, transposed=draws.choice("transposed", (True, False)),
        skip=draws.choice("skip", (True, False)), seed=draws.integer("seed", 0, 2 ** 32 - 1))


@st.composite
def examples2d(draw, **space):
    """Hypothesis strategy of :class:`Example2d` s; ``space``: see :func:`_build2d`."""
    return _build2d(_StrategyDraws(draw), **space)


# --- the fixed CI examples ------------------------------------------------------------------------

_RANK: dict = {}


def _strata2d(i: int) -> dict:
    """Row i's stratified choices: every 2 rows both dtypes, every 3 rows one square built
    size and one with learnable decay, every 4 rows both layouts and both ways to give N,
    and every 8 rows each side kind on x, offset by 3 on y (non-square images)."""
    return {"dtype": ("float32", "float64")[i % 2],
            "square sizes": i % 3 == 0,
            "learnable decay": i % 3 == 1,
            "transposed": (True, False)[(i // 2) % 2],
            "N given": (i // 2) % 2 == 0,
            "side x": SIDE_KINDS[i % 8],
            "side y": SIDE_KINDS[(i + 3) % 8]}


def design2d(n: int, **space) -> list:
    """The first ``n`` rows of the 2D CI design over ``space``: stratified as
    :func:`_strata2d` says, every other choice from row i's own seeded generator; row i is
    the same whatever n is."""
    return design_rows(n, _build2d, _strata2d, (2,), _RANK, **space)


def design_rank2d(ex: Example2d) -> int | None:
    """The row of ``ex`` in the 2D CI design (None when it is not a design row)."""
    return _RANK.get(ex)


#: Boundary cases every 2D property runs, in every profile and on every backend: a 1 x 1
#: image; a prime non-square image larger than the built sizes (both axes' kernels
#: zero-padded); channels-last float64 with two heads.
PINNED2D = (
    Example2d(d_model=2, channels=1, kernel_dim=1, n_scales=None, sizes=(1, 1), image=(1, 1),
              taps=(1, 1), batch=1, seed=21),
    Example2d(d_model=2, channels=1, kernel_dim=2, n_scales=(2, 1), sizes=(4, 2), image=(11, 7),
              taps=(5, 7), decay_min=1.5, decay_max=3.0, seed=22),
    Example2d(d_model=3, channels=2, kernel_dim=3, n_scales=(2, 3), sizes=(5, 12), image=(7, 4),
              taps=(3, 4), dtype="float64", transposed=False, seed=23),
)


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
