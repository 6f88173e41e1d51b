"""The configuration of one check, the space it is drawn from, and the fixed CI examples.

An :class:`Example` fixes everything a property needs: the layer's configuration, the
sequence length L and batch B, the dtype, the convolution's kernel length and block size,
the layout, and one integer seed from which every random array of the check is made.
Its ``repr`` is a complete reproduction: ``check_conv('torch', Example(...))``.

The space is written once (:func:`_build`) against two sources of choices:

* :func:`examples`, a Hypothesis strategy (the ``thorough`` profile draws from it);
* :func:`design`, a fixed, stratified list for the ``ci`` profile: row i takes its dtype,
  causal/bidirectional mode, decay kind, FFT plan kind and length class from interleaved
  cycles of co-prime periods (4, 3, 5, 7), so that every prefix of the list is spread,
  and its other choices from ``numpy.random.default_rng([DESIGN_SEED, i])``.  A row never
  depends on anything but i: not on the Hypothesis version, on the literals in loaded
  modules (Hypothesis mixes those into its own draws), nor on which tests ran before.

:data:`PINNED` holds the boundary cases every property runs in every profile.

Sizes stay small because the reference's direct sums cost O(L^2): H <= 3, C <= 2,
d <= 8, N <= 4 (so K <= 64), L <= 96, B <= 3; the "many blocks" plan kind, which needs a
sequence several kernels long, goes up to L = 256 with a kernel of at most L/4 taps.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import event, note
from hypothesis import strategies as st

import sgconv

__all__ = ["Example", "examples", "design", "design_rank", "PINNED", "DESIGN_SEED", "label",
           "MAX_LENGTH", "MANY_BLOCKS_MAX_LENGTH", "PLAN_KINDS", "LENGTH_KINDS", "PRIMES"]

MAX_LENGTH = 96
MANY_BLOCKS_MAX_LENGTH = 256
PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79,
          83, 89)
#: How the FFT convolution is planned: None (the planner chooses), 0 (one FFT), one
#: overlap-add block of about L, or many blocks (block size at most L/4, kernels of
#: L/16..L/4 taps, so that every block spills into its neighbours).
PLAN_KINDS = ("planner", "one FFT", "one block", "many blocks")
LENGTH_KINDS = ("1", "prime", "odd", "power of 2", "below l_max", "above K", "any")
DESIGN_SEED = 2210_09298  # the paper's arXiv number


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


# --- the space, written once over a source of choices ---------------------------------------

class _StrategyDraws:
    """Choices drawn by Hypothesis (``draw`` of an ``st.composite``)."""

    def __init__(self, draw):
        self._draw = draw

    def integer(self, label: str, lo: int, hi: int) -> int:
        return self._draw(st.integers(lo, hi))

    def real(self, label: str, lo: float, hi: float) -> float:
        return self._draw(st.floats(lo, hi))

    def choice(self, label: str, options):
        return self._draw(st.sampled_from(options))


class _DesignDraws:
    """The choices of one design row: a stratified label takes the row's value (when the
    space allows it), every other choice comes from the row's own NumPy generator."""

    def __init__(self, rng: np.random.Generator, strata: dict):
        self._rng, self._strata = rng, strata

    def integer(self, label: str, lo: int, hi: int) -> int:
        return int(self._rng.integers(lo, hi + 1))

    def real(self, label: str, lo: float, hi: float) -> float:
        return float(self._rng.uniform(lo, hi))

    def choice(self, label: str, options):
        options = tuple(options)
        value = self._strata.get(label, _NO_STRATUM)
        if value is not _NO_STRATUM and value in options:
            self._rng.integers(len(options))          # keep the row's stream aligned
            return value
        return options[int(self._rng.integers(len(options)))]


_NO_STRATUM = object()


def _plan(draws, kind: str, length: int, taps: int, kernel_length: int, bidirectional: bool):
    """The FFT plan fields of an Example for plan ``kind`` (see PLAN_KINDS).

    Every code path that engages only above some size gets its threshold as a field drawn
    here (a future ``channel_chunk`` or ``batch_chunk`` is drawn next to ``block_size``,
    and added to Example and to ``_apply``'s call in properties.py).
    """
    if kind == "planner":
        return {"block_size": None}
    if kind == "one FFT":
        return {"block_size": 0}
    # valid for the conv's kernel and for the layer's (min(L, K) taps)
    least = max(_minimum_block(length, taps, bidirectional),
                _minimum_block(length, min(length, kernel_length), bidirectional))
    if kind == "many blocks":
        return {"block_size": draws.integer("block_size", least, max(least, length // 4))}
    return {"block_size": draws.integer("block_size", least, least + length)}


def _build(draws, *, dtypes=("float32", "float64"), modes=(False, True), min_length: int = 1,
           max_length: int = MAX_LENGTH, max_batch: int = 3) -> Example:
    """One Example from ``draws`` (see the module docstring for the ranges)."""
    H = draws.integer("d_model", 1, 3)
    C = draws.integer("channels", 1, 2)
    d = draws.integer("kernel_dim", 1, 8)
    bidirectional = draws.choice("bidirectional", modes)
    N = draws.integer("N", 1, 4)
    if draws.choice("N given", (True, False)):       # N given directly
        n_scales = N
        l_max = draws.integer("l_max", 1, d * 2 ** (N - 1))
    else:                                           # an l_max from which SPEC derives this N
        n_scales = None
        lowest = 1 if N == 1 else d * 2 ** (N - 2) + 1
        l_max = draws.integer("l_max", lowest, d * 2 ** (N - 1))
    K = d * 2 ** (N - 1)
    learnable = draws.choice("learnable decay", (False, False, False, True))
    interpolation = draws.choice("interpolation", ("linear", "linear", "linear", "nearest"))
    lo = round(draws.real("decay_min", 0.25, 3.0), 3)  # decay multiplier m (or exponent) range
    hi = round(lo + draws.choice("decay spread", (0.0, 0.0, 0.5, 2.0)), 3)

    plan_kind = draws.choice("plan", PLAN_KINDS)
    kind = draws.choice("length", LENGTH_KINDS)
    top = max_length
    if plan_kind == "many blocks":                  # several kernels long: blocks << L
        L = draws.integer("L", max(4 * K, 48), max(4 * K, MANY_BLOCKS_MAX_LENGTH))
    elif kind == "1":
        L = 1
    elif kind == "prime":
        L = draws.choice("L", [p for p in PRIMES if p <= top])
    elif kind == "odd":
        L = 2 * draws.integer("L", 0, (top - 1) // 2) + 1
    elif kind == "power of 2":
        L = 2 ** draws.integer("L", 0, top.bit_length() - 1)
    elif kind == "below l_max" and l_max > 1:
        L = draws.integer("L", 1, min(l_max - 1, top))
    elif kind == "above K" and K < top:
        L = draws.integer("L", K + 1, min(3 * K, top))
    else:
        L = draws.integer("L", 1, top)
    L = max(L, min_length)

    B = draws.integer("batch", 1, max_batch)
    dtype = draws.choice("dtype", dtypes)
    if plan_kind == "many blocks":
        taps = draws.integer("taps", max(1, L // 16), max(1, L // 4))
    else:
        taps = draws.choice("taps", ("L", "fewer"))
        taps = L if taps == "L" else draws.integer("taps", 1, L)
    plan = _plan(draws, plan_kind, L, taps, K, bidirectional)
    return Example(
        d_model=H, channels=C, kernel_dim=d, n_scales=n_scales, l_max=l_max, decay_min=lo,
        decay_max=hi, bidirectional=bidirectional, interpolation=interpolation,
        learnable_decay=learnable, length=L, batch=B, dtype=dtype, taps=taps,
        transposed=draws.choice("transposed", (True, False)),
        skip=draws.choice("skip", (True, False)),
        seed=draws.integer("seed", 0, 2 ** 32 - 1), **plan)


@st.composite
def examples(draw, **space):
    """Hypothesis strategy of :class:`Example` s; ``space``: see :func:`_build`."""
    return _build(_StrategyDraws(draw), **space)


# --- the fixed CI examples -----------------------------------------------------------------------

_RANK: dict = {}


def _strata(i: int) -> dict:
    """Row i's stratified choices: cycles of co-prime periods, so every run of 4 rows holds
    both dtypes in both modes, every 3 rows one with learnable decay, every 5 rows every
    plan kind (two of them many blocks), every 7 rows every length class, and all 420
    combinations recur every 420 rows."""
    return {"dtype": ("float32", "float64")[i % 2],
            "bidirectional": (False, True)[(i // 2) % 2],
            "learnable decay": i % 3 == 2,
            "plan": ("many blocks", "planner", "one FFT", "many blocks", "one block")[i % 5],
            "length": LENGTH_KINDS[i % 7]}


def design(n: int, **space) -> list:
    """The first ``n`` rows of the CI design over ``space`` (see the module docstring).

    Row i is the same whatever n is, so a budget of n rows is a prefix of any larger one.
    """
    return design_rows(n, _build, _strata, (), _RANK, **space)


def design_rows(n: int, build, strata, salt: tuple, ranks: dict, **space) -> list:
    """Rows 0..n-1 of a stratified design: row i is ``build`` over the draws of
    :class:`_DesignDraws` (its stratified choices ``strata(i)``, the others from
    ``default_rng([DESIGN_SEED, *salt, i])``); ``ranks`` records each row's index."""
    rows = []
    for i in range(n):
        rng = np.random.default_rng([DESIGN_SEED, *salt, i])
        ex = build(_DesignDraws(rng, strata(i)), **space)
        ranks.setdefault(ex, i)
        rows.append(ex)
    return rows


def design_rank(ex: Example) -> int | None:
    """The row of ``ex`` in the CI design (None when it is not a design row)."""
    return _RANK.get(ex)


#: Boundary cases that every property runs, in every profile and on every backend.
PINNED = (
    # overlap-add with 7 blocks of 16, causal spill into the next block (conv: 13 taps;
    # layer: K = 16 taps), float32, C = 2, decay range across m > 1
    Example(d_model=2, channels=2, kernel_dim=4, n_scales=3, l_max=16, decay_min=1.5,
            decay_max=3.0, bidirectional=False, length=100, batch=2, dtype="float32", taps=13,
            block_size=16, transposed=True, skip=True, seed=11),
    # overlap-add with 9 blocks of 12, bidirectional: causal and anti-causal spill, float64,
    # L prime, the (B, L, H) layout
    Example(d_model=3, channels=1, kernel_dim=3, n_scales=3, l_max=12, decay_min=2.0,
            decay_max=2.5, bidirectional=True, length=97, batch=2, dtype="float64", taps=10,
            block_size=12, transposed=False, skip=True, seed=12),
    # L = 1, bidirectional (no anti-causal tap can reach), C = 2, planner
    Example(d_model=2, channels=2, kernel_dim=4, n_scales=2, l_max=8, decay_min=2.0,
            decay_max=2.0, bidirectional=True, length=1, batch=3, dtype="float32", taps=1,
            block_size=None, transposed=True, skip=True, seed=13),
    # one scale (N = 1, K = d = 5), L > K (zero-padded kernel), float64, one FFT, no D,
    # learnable decay
    Example(d_model=3, channels=1, kernel_dim=5, n_scales=1, l_max=5, decay_min=0.5,
            decay_max=1.5, bidirectional=False, learnable_decay=True, length=23, batch=2,
            dtype="float64", taps=7, block_size=0, transposed=True, skip=False, seed=14),
)


# --- labels -----------------------------------------------------------------------------------

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


def plan_class(ex: Example) -> str:
    """'planner', 'one FFT', or 'overlap-add, n blocks' with n = ceil(L / block_size)."""
    if ex.block_size is None:
        return "planner"
    if ex.block_size == 0:
        return "one FFT"
    blocks = -(-ex.length // ex.block_size)
    return "overlap-add, 1 block" if blocks == 1 else \
        f"overlap-add, {'2-3' if blocks <= 3 else '4+'} blocks"


def label(ex: Example, backend: str, check: str) -> None:
    """Label the draw for ``--hypothesis-show-statistics`` and note the reproduction."""
    event(f"dtype={ex.dtype}")
    event("bidirectional" if ex.bidirectional else "causal")
    event(_length_class(ex))
    event(f"N={ex.config.num_scales} ({'n_scales' if ex.n_scales else 'from l_max'})")
    event(f"block_size: {plan_class(ex)}")
    event(f"interpolation={ex.interpolation}"
          + (", learnable decay" if ex.learnable_decay else ""))
    event("decay m=1" if ex.decay_min == ex.decay_max == 1 else
          "decay range" if ex.decay_min != ex.decay_max else
          ("decay m<1" if ex.decay_min < 1 else "decay m>1"))
    note(ex.describe(backend, check))


def design_summary(n: int) -> dict:
    """How the first ``n`` design rows spread: label -> count (dtype, mode, plan, L class, N)."""
    counts: dict = {}
    for ex in design(n):
        for key in (f"dtype={ex.dtype}", "bidirectional" if ex.bidirectional else "causal",
                    f"block_size: {plan_class(ex)}", _length_class(ex),
                    f"N={ex.config.num_scales}", f"interpolation={ex.interpolation}",
                    "learnable decay" if ex.learnable_decay else "fixed decay"):
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


if __name__ == "__main__":  # python -m conformance.examples [rows]: what the ci profile runs
    import sys
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    print(f"pinned ({len(PINNED)}, every property and backend):")
    for ex in PINNED:
        print(f"  {ex}")
    print(f"first {rows} design rows:")
    for key, count in design_summary(rows).items():
        print(f"  {count:3d}  {key}")
