"""The decoding checks must be able to fail: planted bugs in a step, a prefill and the
precision of the running sums are caught (conformance/decoding.py).

- ``leave``: each run's sums drop the input leaving the *next* run, u[t+1 - a_{p+2}],
  instead of the one leaving it, u[t+1 - a_{p+1}] (a run sum updated with the wrong
  leaving input);
- ``moments``: the prefill weighs a run's inputs r + 1 instead of r (M off by one S);
- ``ring``: a step writes its new input one slot past its place in the history ring (an
  off-by-one ring index);
- naive float32 running sums: the long horizon's drift check fails on them.

The first three are the NumPy backend with one primitive (or one core function, patched
only for that backend) changed, registered as ``broken_decode_<bug>`` for the module.
``leave`` and ``moments`` live in the float64-sum path of float32 layers (the float64
example cannot show them); ``ring`` in what both paths share.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import sgconv
from sgconv import _decode, _switch
from sgconv.backends.numpy import NumpyBackend

from .. import decoding
from ..examples import Example
from ..test_decoding import decoding_test

BUGS = {
    "leave": "a run's sums drop the input leaving the next run instead of its own",
    "moments": "the prefill's M weighs a run's inputs r + 1 instead of r",
    "ring": "a step writes its input one slot past its place in the history ring",
}
#: the bugs that float64 layers (compensated sums, another code path) cannot show
FLOAT32_ONLY = ("leave", "moments")


class _BrokenLeave(NumpyBackend):
    name = "broken_decode_leave"

    def update_runs(self, sums, rows, lengths):
        S, M = sums[0], sums[1]
        enter = rows[:-1].astype(S.dtype)
        leave = np.concatenate([rows[2:], np.zeros_like(rows[:1])]).astype(S.dtype)  # wrong
        M += S - lengths * leave
        S += enter - leave
        return sums


class _BrokenMoments(NumpyBackend):
    name = "broken_decode_moments"


class _BrokenRing(NumpyBackend):
    name = "broken_decode_ring"

    def set_slice(self, x, index, value):
        if np.ndim(index) == 0:                                     # a step's new input
            index = (index + 1) % x.shape[0]
        return super().set_slice(x, index, value)


def _wide_moments_off_by_one(original):
    def patched(bk, v, dec, geometry):
        sums = original(bk, v, dec, geometry)
        if isinstance(bk, _BrokenMoments):
            sums = np.concatenate([sums[:1], (sums[1] + sums[0])[None]])   # M + S
        return sums
    return patched


_CLASSES = (_BrokenLeave, _BrokenMoments, _BrokenRing)


@pytest.fixture(scope="module")
def broken():
    original = _decode._window_sums_wide
    _decode._window_sums_wide = _wide_moments_off_by_one(original)
    for cls in _CLASSES:
        sgconv.register_backend(cls.name, cls, replace=True)
    try:
        yield
    finally:
        _decode._window_sums_wide = original
        for cls in _CLASSES:
            _switch._REGISTRY.pop(cls.name, None)
            _switch._INSTANCES.pop(cls.name, None)


#: float32 and float64, linear interpolation with N = 4 (runs of 1, 2 and 4 taps), a
#: prefix that leaves runs of every length in the prefill's windows, L > K.
FIXED = (
    Example(d_model=2, channels=2, kernel_dim=4, n_scales=4, l_max=32, decay_min=1.5,
            decay_max=2.5, length=61, batch=2, dtype="float32", taps=61, seed=3),
    Example(d_model=3, channels=1, kernel_dim=3, n_scales=4, l_max=24, decay_min=0.7,
            decay_max=0.7, length=47, batch=1, dtype="float64", taps=47, transposed=False,
            seed=4),
)


def test_correct_backend_passes_the_fixed_examples(broken):
    for ex in FIXED:
        decoding.check_decoding("numpy", ex)


def test_every_bug_has_a_backend():
    assert sorted(cls.name for cls in _CLASSES) == sorted(f"broken_decode_{b}" for b in BUGS)


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_bug_is_caught_on_fixed_examples(broken, bug):
    for ex in FIXED:
        if bug in FLOAT32_ONLY and ex.dtype != "float32":
            continue
        with pytest.raises(AssertionError, match="check_decoding"):
            decoding.check_decoding(f"broken_decode_{bug}", ex)


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_bug_is_caught_by_the_ci_examples(broken, bug):
    """The decoding property run exactly as the ``ci`` profile runs it fails."""
    test = decoding_test(f"ci_test_of_{bug}", profile="ci")
    with pytest.raises(AssertionError, match="check_decoding"):
        test(backend_name=f"broken_decode_{bug}")


def _float32_sums(bk, params, prefix):
    """A NumPy decoder whose running sums are float32, started after ``prefix``."""
    dec = sgconv.decoder(params)
    _, state = sgconv.prefill(dec, prefix)
    naive = dataclasses.replace(dec, accumulate="float32", tap_coef=dec.tap_coef.astype("f4"),
                                coef=dec.coef.astype("f4"))
    return naive, dataclasses.replace(state, sums=state.sums.astype("f4"))


def test_float32_running_sums_drift():
    """Naive float32 sums stay inside the tolerance at L = 65536 but drift (their error
    grows about as t^1.5, the error of S feeding M every step): the check fails on it."""
    with pytest.raises(AssertionError, match="drifts"):
        decoding.check_long_horizon("numpy", make_decoder=_float32_sums)
