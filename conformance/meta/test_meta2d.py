"""The 2D suite must be able to fail: every planted bug of meta/broken2d.py is caught.

As meta/test_meta.py for 1D: (1) the correct NumPy backend passes every 2D property on
the fixed examples; (2) each bug fails the properties named for it in ``CATCHERS_2D``
there, with AssertionError (a comparison failed, not a crash); (3) the first of them, run
exactly as conformance/test_conv2d.py runs it in CI (the pinned examples and the backend's
share of the 2D design), fails too.
"""

from __future__ import annotations

import pytest
from .. import properties2d as P
from ..examples2d import Example2d
from ..hypothesis_profiles import conformance_test
from . import broken2d

#: bug -> the properties that must catch it on the fixed examples; the first one's CI run
#: must fail too.
CATCHERS_2D = {
    "circular": ("conv", "reach", "impulse", "layer"),
    "axes_swapped": ("layer", "kernel"),
    "d_missing": ("conv", "impulse", "layer"),
    "anti_shift": ("conv", "reach", "impulse", "layer"),
}

#: Two examples that between them can show every bug: non-square images (so a swap of the
#: axes also changes the shapes involved), several taps per axis, D present, float32
#: (B, H, X, Y) and float64 channels-last.
FIXED_2D = (
    Example2d(d_model=2, channels=1, kernel_dim=2, n_scales=(2, 3), sizes=(4, 8), image=(5, 9),
              taps=(4, 6), decay_min=1.5, decay_max=3.0, dtype="float32", seed=1),
    Example2d(d_model=2, channels=2, kernel_dim=3, n_scales=None, sizes=(7, 4), image=(7, 3),
              taps=(5, 3), decay_min=2.0, decay_max=2.5, dtype="float64", transposed=False,
              seed=2),
)

#: How conformance/test_conv2d.py runs each catching property: its example space.
_CI_RUNS = {"conv": {}, "layer": {}, "kernel": {}, "reach": {"min_side": 2}, "impulse": {}}


@pytest.fixture(scope="module")
def broken_backends():
    with broken2d.installed() as names:
        yield names


def _failures(name: str) -> dict:
    out = {}
    for ex in FIXED_2D:
        for prop, check in P.PROPERTIES_2D.items():
            try:
                check(name, ex)
            except P.NotApplicable:
                pass
            except Exception as exc:  # noqa: BLE001 - any failure counts; the kind is checked below
                out.setdefault(prop, exc)
    return out


def test_every_bug_has_catchers():
    assert set(CATCHERS_2D) == set(broken2d.BUGS_2D)
    assert all(set(c) <= set(P.PROPERTIES_2D) for c in CATCHERS_2D.values())
    assert all(c[0] in _CI_RUNS for c in CATCHERS_2D.values())


def test_correct_backend_passes_the_fixed_examples(broken_backends):
    failures = _failures("numpy")
    assert not failures, "the correct NumPy backend failed: " + "; ".join(
        f"{p}: {e}" for p, e in failures.items())


@pytest.mark.parametrize("bug", sorted(broken2d.BUGS_2D))
def test_bug_is_caught_on_fixed_examples(broken_backends, bug):
    failures = _failures(broken2d.backend_name(bug))
    missed = [p for p in CATCHERS_2D[bug] if not isinstance(failures.get(p), AssertionError)]
    assert not missed, (f"planted 2D bug {bug!r} ({broken2d.BUGS_2D[bug]}) was not caught by "
                        f"{missed}; failures: { {p: type(e).__name__ for p, e in failures.items()} }")


@pytest.mark.parametrize("bug", sorted(broken2d.BUGS_2D))
def test_bug_is_caught_by_the_ci_examples(broken_backends, bug):
    """The first catcher, run exactly as conformance/test_conv2d.py runs it in the ``ci``
    profile (the pinned examples, then the backend's share of the 2D design), fails on the
    broken backend."""
    prop = CATCHERS_2D[bug][0]
    check = P.PROPERTIES_2D[prop]

    def body(backend_name, ex):
        try:
            check(backend_name, ex)
        except P.NotApplicable:
            pass

    test = conformance_test(scale=0.25, profile="ci", two_d=True, **_CI_RUNS[prop])(body)
    with pytest.raises(AssertionError):
        test(backend_name=broken2d.backend_name(bug))
