"""Tests of the examples the suite runs: the CI design is fixed, spread and complete, and the
pinned examples hold the boundary cases (see examples.py and hypothesis_profiles.py)."""

from __future__ import annotations

import importlib
import sys

import pytest
from hypothesis import Phase, settings

from .examples import PINNED, _minimum_block, design, plan_class
from .hypothesis_profiles import CI_DESIGN_ROWS, CI_DESIGN_ROWS_DEFAULT, DESIGN_ROWS


def test_ci_profile_generates_no_draws():
    """CI runs explicit examples only: what it covers cannot hang on Hypothesis's draws."""
    assert Phase.generate not in settings.get_profile("ci").phases
    assert Phase.explicit in settings.get_profile("ci").phases
    assert Phase.generate in settings.get_profile("thorough").phases


def test_design_is_fixed_by_its_row_index(tmp_path, monkeypatch):
    """Rows are prefixes of each other and do not change when a module full of new numeric
    literals is loaded (Hypothesis would mix such literals into generated draws)."""
    before = design(DESIGN_ROWS)
    assert design(8) == before[:8]
    (tmp_path / "sgconv_literals_probe.py").write_text(
        "VALUES = (" + ", ".join(str(v) for v in range(3, 4000, 7)) + ")\n"
        "REALS = (0.37, 1.77, 2.61, 0.251, 2.999)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("sgconv_literals_probe")
    try:
        assert design(DESIGN_ROWS) == before
    finally:
        sys.modules.pop("sgconv_literals_probe", None)


@pytest.mark.parametrize("rows", sorted({*CI_DESIGN_ROWS.values(), CI_DESIGN_ROWS_DEFAULT}))
def test_every_budget_is_spread(rows):
    """Each backend's share of the design holds both dtypes and both modes in equal parts,
    overlap-add with many blocks in 2 of every 5 rows, and no repeated configuration."""
    ex = design(rows)
    f64 = sum(e.dtype == "float64" for e in ex)
    bidir = sum(e.bidirectional for e in ex)
    many = [e for e in ex if plan_class(e) == "overlap-add, 4+ blocks"]
    assert abs(2 * f64 - rows) <= 1, f"{f64} of {rows} rows in float64"
    assert abs(2 * bidir - rows) <= 2, f"{bidir} of {rows} rows bidirectional"
    assert len(many) >= 2 * rows // 5, f"{len(many)} of {rows} rows with 4+ overlap-add blocks"
    assert all(e.taps >= 3 for e in many), "many blocks with kernels of several taps"
    shapes = {(e.config, e.length, e.batch, e.dtype) for e in ex}
    assert len(shapes) == rows, "repeated configurations"


def test_full_design_covers_the_space():
    """The 40 rows NumPy runs reach every plan kind, length class and variant."""
    ex = design(DESIGN_ROWS)
    K = [e.config.kernel_length for e in ex]
    covered = {
        "L = 1": any(e.length == 1 for e in ex),
        "L > K": any(e.length > k for e, k in zip(ex, K)),
        "L < l_max": any(e.length < e.l_max for e in ex),
        "L prime": any(e.length in (7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61,
                                    67, 71, 73, 79, 83, 89) for e in ex),
        "one scale": any(e.config.num_scales == 1 for e in ex),
        "four scales": any(e.config.num_scales == 4 for e in ex),
        "N from l_max": any(e.n_scales is None for e in ex),
        "one FFT": any(e.block_size == 0 for e in ex),
        "planner": any(e.block_size is None for e in ex),
        "one block": any(plan_class(e) == "overlap-add, 1 block" for e in ex),
        "learnable decay": any(e.learnable_decay for e in ex),
        "nearest": any(e.interpolation == "nearest" for e in ex),
        "m < 1": any(e.decay_min < 1 for e in ex),
        "decay range": any(e.decay_min < e.decay_max for e in ex),
        "C = 2": any(e.channels == 2 for e in ex),
        "(B, L, H)": any(not e.transposed for e in ex),
        "no D": any(not e.skip for e in ex),
    }
    assert all(covered.values()), [k for k, v in covered.items() if not v]


def test_pinned_examples_hold_the_boundary_cases():
    def blocks(e):
        return -(-e.length // e.block_size) if e.block_size else 1

    causal_spill = [e for e in PINNED if not e.bidirectional and blocks(e) >= 3 and e.taps > 1]
    anti_spill = [e for e in PINNED if e.bidirectional and blocks(e) >= 3 and e.taps > 1]
    assert causal_spill and anti_spill, "multi-block overlap-add, causal and anti-causal spill"
    assert any(e.dtype == "float64" for e in PINNED)
    assert any(e.length == 1 for e in PINNED)
    assert any(e.length > e.config.kernel_length for e in PINNED)
    assert any(e.config.num_scales == 1 for e in PINNED)
    for e in PINNED:                           # a valid plan for the conv's and the layer's kernel
        if e.block_size:
            least = max(_minimum_block(e.length, e.taps, e.bidirectional),
                        _minimum_block(e.length, min(e.length, e.config.kernel_length),
                                       e.bidirectional))
            assert e.block_size >= least, e
