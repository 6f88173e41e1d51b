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

from hypothesis import example, given, reject
from hypothesis import strategies as st

from . import paths
from .examples import Example, examples, label
from .hypothesis_profiles import conformance_test

@st.composite
def path_examples(draw):
    ex = draw(examples())
    spread = draw(st.sampled_from((0.5, 1.0, 2.0, 0.0)))
    ex = ex.replace(d_model=draw(st.integers(2, 3)), decay_max=round(ex.decay_min + spread, 3))
    return paths.PathExample(ex, chunk=draw(st.integers(1, ex.d_model - 1)),
                             front=draw(st.integers(0, 11)))


def _pinned(front: int):
    """Boundary cases (front: an index into the backend's front ends)."""
    many_blocks = Example(d_model=3, channels=2, kernel_dim=2, n_scales=3, l_max=8,
                          bidirectional=True, length=83, batch=2, dtype="float32", taps=8,
                          block_size=8, transposed=True, seed=11)          # 11 blocks, spill
    return [paths.PathExample(many_blocks, 1, front),
            paths.PathExample(many_blocks.replace(dtype="float64", bidirectional=False,
                                                  transposed=False), 2, front),
            paths.PathExample(Example(d_model=2, length=1, l_max=4, kernel_dim=2, n_scales=2,
                                      seed=12), 1, front),
            paths.PathExample(Example(d_model=3, kernel_dim=3, n_scales=1, l_max=3, length=40,
                                      block_size=None, seed=13), 1, front)]  # one scale, L > K


def _run(check, backend_name, pex):
    label(pex.ex, backend_name, check.__name__)
    try:
        check(backend_name, pex)
    except paths.NotApplicable:
        reject()


def _with_pins(test):
    for front in range(4):                  # every front end of every backend
        for pex in _pinned(front):
            test = example(pex=pex)(test)
    return test


@conformance_test()
@_with_pins
@given(pex=path_examples())
def test_layer_in_channel_chunks_matches_reference(backend_name, pex):
    _run(paths.check_chunked_layer, backend_name, pex)


@conformance_test(scale=0.5)
@given(pex=path_examples())
def test_automatic_chunks_under_a_small_budget_match_reference(backend_name, pex):
    _run(paths.check_auto_chunks, backend_name, pex)
