"""The suite must be able to fail: every planted bug in meta/broken.py is caught.

Three kinds of evidence, all on the NumPy-based broken backends (fast, no framework):

1. control: the correct NumPy backend passes every property on the fixed examples, so a
   failure below is the bug's doing;
2. on the fixed examples, each bug fails the properties named for it in ``CATCHERS``
   (with AssertionError, i.e. a comparison failed, not a crash);
3. the property tests as CI runs them (the ``ci`` profile's seed, examples and budget,
   no shrinking) fail on each bug: the draws the suite makes do reach it.
"""

from __future__ import annotations

import pytest
from hypothesis import Phase, given, seed, settings

from .. import hypothesis_profiles
from .. import properties as P
from ..examples import Example, examples
from . import broken

#: bug -> the properties that must catch it on the fixed examples; the first one is the
#: property whose CI run (test 3) must fail.
CATCHERS = {
    "circular": ("causality", "conv", "reach", "layer"),
    "anti_shift": ("reach", "conv", "impulse", "layer"),
    "z_recomputed": ("kernel", "kernel_blocks", "layer"),
    "align_corners": ("kernel_blocks", "kernel", "layer"),
    "decay_reversed": ("kernel_blocks", "kernel", "layer"),
    "d_missing": ("impulse", "conv", "layer"),
    "downcast64": ("dtypes_shapes", "conv", "layer"),
    "upcast32": ("dtypes_shapes",),
    "f32_compute": ("conv", "layer", "impulse"),
}

#: Two examples that between them can show every bug: a causal float32 one and a
#: bidirectional float64 one, both with N >= 3 (upsampled scales), d >= 2, a decay m != 1,
#: a kernel of several taps, D present, L not a power of two.
FIXED = (
    Example(d_model=2, channels=1, kernel_dim=4, n_scales=3, l_max=16, decay_min=1.5,
            decay_max=3.0, bidirectional=False, length=37, batch=2, dtype="float32", taps=11,
            block_size=None, transposed=True, skip=True, seed=1),
    Example(d_model=2, channels=2, kernel_dim=3, n_scales=4, l_max=24, decay_min=2.0,
            decay_max=2.5, bidirectional=True, length=29, batch=2, dtype="float64", taps=9,
            block_size=0, transposed=False, skip=True, seed=2),
)


@pytest.fixture(scope="module")
def broken_backends():
    with broken.installed() as names:
        yield names


def _failures(name: str) -> dict:
    """property -> first exception it raised on a fixed example for backend ``name``."""
    out = {}
    for ex in FIXED:
        for prop, check in P.PROPERTIES.items():
            try:
                check(name, ex)
            except P.NotApplicable:
                pass
            except Exception as exc:  # noqa: BLE001 - any failure counts; the kind is checked below
                out.setdefault(prop, exc)
    return out


def test_every_bug_has_catchers():
    assert set(CATCHERS) == set(broken.BUGS)
    assert all(set(c) <= set(P.PROPERTIES) for c in CATCHERS.values())


def test_correct_backend_passes_the_fixed_examples(broken_backends):
    failures = _failures("numpy")
    assert not failures, "the correct NumPy backend failed: " + "; ".join(
        f"{p}: {e}" for p, e in failures.items())


@pytest.mark.parametrize("bug", sorted(broken.BUGS))
def test_bug_is_caught_on_fixed_examples(broken_backends, bug):
    failures = _failures(broken.backend_name(bug))
    missed = [p for p in CATCHERS[bug] if not isinstance(failures.get(p), AssertionError)]
    assert not missed, (f"planted bug {bug!r} ({broken.BUGS[bug]}) was not caught by {missed}; "
                        f"failures: { {p: type(e).__name__ for p, e in failures.items()} }")


@pytest.mark.parametrize("bug", sorted(broken.BUGS))
def test_bug_is_caught_by_the_ci_draws(broken_backends, bug):
    name = broken.backend_name(bug)
    check = P.PROPERTIES[CATCHERS[bug][0]]
    ci = settings.get_profile("ci")

    @seed(hypothesis_profiles.CI_SEED)
    @settings(ci, phases=(Phase.explicit, Phase.generate), report_multiple_bugs=False)
    @given(ex=examples())
    def run(ex):
        try:
            check(name, ex)
        except P.NotApplicable:
            pass

    with pytest.raises(AssertionError):
        run()
