"""The suite must be able to fail: every planted bug in meta/broken.py is caught.

Three kinds of evidence, on the broken backends (NumPy-based, fast, no framework; the
PyTorch-based ``grad_forward``) and on the framework layers with a planted bug:

1. control: the correct backend passes every property on the fixed examples, so a
   failure below is the bug's doing;
2. on the fixed examples, each bug fails the properties named for it in ``CATCHERS``
   (with AssertionError, i.e. a comparison failed, not a crash);
3. the property tests exactly as CI runs them (the ``ci`` profile: the pinned examples
   and the backend's share of the design) fail on each backend bug: the examples the
   suite runs do reach it.
"""

from __future__ import annotations

import pytest

import sgconv

from .. import properties as P
from ..examples import Example
from ..test_properties import property_test
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
    "nan_zeroed": ("nonfinite",),
    "nan_after_gelu": ("nonfinite",),
    "dropout_unscaled": ("dropout",),
    "dropout_rate": ("dropout",),
    "dropout_in_eval": ("dropout", "layer"),
    "init_d_zero": ("init_values",),
    "init_mixing_bound": ("init_values",),
    "init_multiplier_reversed": ("init_values",),
    "grad_forward": ("gradients",),
}

#: What the failure must say, where a property checks several things and only one of them
#: shows the bug (the gradients of ``grad_forward`` are exact: its forward is not).
MESSAGES = {"grad_forward": "forward with autograd on"}

#: Framework-layer bug -> the properties that must catch it on the fixed examples.
FRAMEWORK_CATCHERS = {
    "torch_stale_cache": ("framework_layers",),
    "torch_dropout_in_eval": ("dropout",),
    "jax_deterministic_ignored": ("dropout",),
    "jax_prepare_drops_d": ("framework_layers",),
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


def _failures(name: str, props=None) -> dict:
    """property -> first exception it raised on a fixed example for backend ``name``."""
    out = {}
    for ex in FIXED:
        for prop in props or P.PROPERTIES:
            check = P.PROPERTIES[prop]
            try:
                check(name, ex)
            except P.NotApplicable:
                pass
            except Exception as exc:  # noqa: BLE001 - any failure counts; the kind is checked below
                out.setdefault(prop, exc)
    return out


def _skip_unusable(name: str) -> None:
    reason = sgconv.backend(name).unavailable_reason()
    if reason is not None:
        pytest.skip(f"backend {name!r} cannot run here: {reason}")


def test_every_bug_has_catchers():
    assert set(CATCHERS) == set(broken.BUGS)
    assert set(FRAMEWORK_CATCHERS) == set(broken.FRAMEWORK_BUGS)
    assert all(set(c) <= set(P.PROPERTIES)
               for c in (*CATCHERS.values(), *FRAMEWORK_CATCHERS.values()))


def test_correct_backend_passes_the_fixed_examples(broken_backends):
    failures = _failures("numpy")
    assert not failures, "the correct NumPy backend failed: " + "; ".join(
        f"{p}: {e}" for p, e in failures.items())


def _assert_caught(failures: dict, catchers, what: str, message: str | None = None):
    missed = [p for p in catchers if not isinstance(failures.get(p), AssertionError)
              or (message is not None and message not in str(failures[p]))]
    assert not missed, (f"planted bug {what} was not caught by {missed}"
                        + (f" (with a failure saying {message!r})" if message else "")
                        + f"; failures: { {p: type(e).__name__ for p, e in failures.items()} }")


@pytest.mark.parametrize("bug", sorted(broken.BUGS))
def test_bug_is_caught_on_fixed_examples(broken_backends, bug):
    name = broken.backend_name(bug)
    _skip_unusable(name)
    _assert_caught(_failures(name), CATCHERS[bug], f"{bug!r} ({broken.BUGS[bug]})",
                   MESSAGES.get(bug))


@pytest.mark.parametrize("bug", sorted(broken.BUGS))
def test_bug_is_caught_by_the_ci_examples(broken_backends, bug):
    """The first catcher's test, run exactly as the ``ci`` profile runs it, fails."""
    name = broken.backend_name(bug)
    _skip_unusable(name)
    test = property_test(CATCHERS[bug][0], f"ci_test_of_{bug}", profile="ci")
    with pytest.raises(AssertionError, match=MESSAGES.get(bug)):
        test(backend_name=name)


@pytest.mark.parametrize("bug", sorted(broken.FRAMEWORK_BUGS))
def test_framework_bug_is_caught_on_fixed_examples(bug):
    framework, what = broken.FRAMEWORK_BUGS[bug]
    pytest.importorskip(framework)
    catchers = FRAMEWORK_CATCHERS[bug]
    control = _failures(framework, catchers)
    assert not control, f"the correct {framework} backend failed: " + "; ".join(
        f"{p}: {e}" for p, e in control.items())
    with broken.framework_bug(bug):
        failures = _failures(framework, catchers)
    _assert_caught(failures, catchers, f"{bug!r} ({what})")
