"""The size-threshold paths of conformance/paths.py as Hypothesis tests.

Draws spread over what the paths depend on: H in 2..3 (so a chunk is a real part of the
channels), the chunk size, the front end (an index into the backend's own front ends, so
every draw applies), mostly distinct decay multipliers per channel (so a chunk that reads
another chunk's channels shows), both dtypes, and block sizes from the smallest the
planner accepts (many overlap-add blocks) to one FFT.  Explicit examples pin the
boundary cases: chunks of one channel with many overlap-add blocks and an anti-causal
spill, float64, L = 1, L > K, and one scale.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import example, given, reject, seed, settings
from hypothesis import strategies as st

from . import paths
from .examples import DESIGN_SEED, Example, design, examples, label
from .hypothesis_profiles import CI_SEED, DESIGN_ROWS, active_name, design_budget

DECAY_SPREADS = (0.5, 1.0, 2.0, 0.0)        # mostly distinct multipliers per channel


def _path_of(ex: Example, H: int, spread: float, chunk: int, front: int) -> paths.PathExample:
    ex = ex.replace(d_model=H, decay_max=round(ex.decay_min + spread, 3))
    return paths.PathExample(ex, chunk=chunk, front=front)


@st.composite
def path_examples(draw):
    """Random draws (the ``thorough`` profile): an Example with H in 2..3, a chunk, a front
    end (an index into the backend's own front ends, so every draw applies)."""
    H = draw(st.integers(2, 3))
    return _path_of(draw(examples()), H, draw(st.sampled_from(DECAY_SPREADS)),
                    draw(st.integers(1, H - 1)), draw(st.integers(0, 11)))


_RANK: dict = {}


def path_design(n: int) -> list:
    """The CI rows: the conformance design's first ``n`` rows, each given H = 2 or 3, a decay
    spread, a front end (cycling through every backend's) and a chunk, from row i alone."""
    rows = []
    for i, ex in enumerate(design(n)):
        rng = np.random.default_rng([DESIGN_SEED, 7, i])
        H = 2 + i % 2
        pex = _path_of(ex, H, DECAY_SPREADS[i % 4], 1 + int(rng.integers(H - 1)), i % 4)
        _RANK.setdefault(pex, i)
        rows.append(pex)
    return rows


def _pinned(front: int):
    """Boundary cases (front: an index into the backend's front ends)."""
    many_blocks = Example(d_model=3, channels=2, kernel_dim=2, n_scales=3, l_max=8,
                          decay_min=1.5, decay_max=3.0, bidirectional=True, length=83,
                          batch=2, dtype="float32", taps=8, block_size=8, transposed=True,
                          seed=11)                                  # 11 blocks, both spills
    return [paths.PathExample(many_blocks, 1, front),
            paths.PathExample(many_blocks.replace(dtype="float64", bidirectional=False,
                                                  transposed=False), 2, front),
            paths.PathExample(Example(d_model=2, length=1, l_max=4, kernel_dim=2, n_scales=2,
                                      decay_max=3.0, seed=12), 1, front),
            paths.PathExample(Example(d_model=3, kernel_dim=3, n_scales=1, l_max=3, length=40,
                                      decay_min=1.0, block_size=None, seed=13), 1, front)]


PINNED = tuple(pex for front in range(4) for pex in _pinned(front))


def path_test(scale: float = 1.0):
    """As hypothesis_profiles.conformance_test, over PathExamples: the pinned cases and the
    backend's share of :func:`path_design` as explicit examples, random draws only in a
    profile that generates them."""
    parent = settings.get_profile(active_name())

    def decorate(fn):
        def body(backend_name, pex):
            rank = _RANK.get(pex)
            if rank is not None and pex not in PINNED and \
                    rank >= design_budget(backend_name, scale):
                reject()
            label(pex.ex, backend_name, fn.__name__)
            try:
                fn(backend_name, pex)
            except paths.NotApplicable:
                reject()

        body.__name__ = fn.__name__
        test = given(pex=path_examples())(body)
        for pex in reversed(PINNED + tuple(path_design(DESIGN_ROWS))):
            test = example(pex=pex)(test)
        test = settings(parent, max_examples=max(1, math.ceil(parent.max_examples * scale)))(test)
        return seed(CI_SEED)(test) if parent.derandomize else test
    return decorate


@path_test()
def test_layer_in_channel_chunks_matches_reference(backend_name, pex):
    paths.check_chunked_layer(backend_name, pex)


@path_test(scale=0.5)
def test_automatic_chunks_under_a_small_budget_match_reference(backend_name, pex):
    paths.check_auto_chunks(backend_name, pex)
