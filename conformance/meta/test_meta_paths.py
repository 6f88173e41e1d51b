"""The size-threshold path properties (conformance/paths.py) must catch bugs that live only on
those paths: two NumPy backends, correct except in the channel-chunked layer.

* ``broken_chunk_drop``: the chunks' mixing products are not accumulated (each chunk's
  ``linear_channels(..., out=)`` forgets ``out``): only the last chunk reaches the output.
* ``broken_chunk_slice``: the kernel of a channel chunk takes the decay multiplier of the
  first channels instead of its own (one per-channel array left unsliced), which shows
  whenever decay_min != decay_max.

Neither touches the unchunked path, so the main suite cannot see them; these tests show
the path properties do, on fixed examples and on the CI draws.
"""

from __future__ import annotations

import contextlib

import pytest

import sgconv
from sgconv import _ops, _switch
from sgconv.backends.numpy import NumpyBackend

from .. import hypothesis_profiles, paths
from ..examples import Example
from ..test_paths import PINNED, path_design


class _ChunkDrop(NumpyBackend):
    name = "broken_chunk_drop"

    def linear_channels(self, y, weight, bias, out=None):
        return super().linear_channels(y, weight, bias)           # out forgotten


class _ChunkSlice(NumpyBackend):
    name = "broken_chunk_slice"


def _spectrum_patch(original):
    def spectrum(bk, config, arrays, plan, channels=slice(None)):
        if isinstance(bk, _ChunkSlice) and channels != slice(None):
            m = arrays["multiplier"]
            wrong = m.copy()
            wrong[channels] = m[:len(range(*channels.indices(config.d_model)))]
            arrays = dict(arrays, multiplier=wrong)      # chunk h0.. reads channels 0..
        return original(bk, config, arrays, plan, channels)
    return spectrum


BROKEN = {"broken_chunk_drop": _ChunkDrop, "broken_chunk_slice": _ChunkSlice}


@contextlib.contextmanager
def _installed():
    original = _ops.spectrum
    _ops.spectrum = _spectrum_patch(original)
    for name, cls in BROKEN.items():
        sgconv.register_backend(name, cls, replace=True)
    try:
        yield
    finally:
        _ops.spectrum = original
        for name in BROKEN:
            _switch._REGISTRY.pop(name, None)
            _switch._INSTANCES.pop(name, None)


FIXED = (
    Example(d_model=3, channels=2, kernel_dim=2, n_scales=3, l_max=8, decay_min=1.5,
            decay_max=3.0, bidirectional=True, length=45, batch=2, dtype="float32", taps=8,
            block_size=8, transposed=True, seed=5),
    Example(d_model=2, channels=1, kernel_dim=4, n_scales=3, l_max=16, decay_min=1.0,
            decay_max=2.5, length=30, batch=1, dtype="float64", taps=16, block_size=0,
            transposed=False, seed=6),
)


@pytest.fixture(scope="module")
def installed():
    with _installed():
        yield


def test_correct_backend_passes(installed):
    for ex in FIXED:
        for front in ("apply", "prepare"):
            paths.check_chunked_layer("numpy", paths.PathExample(ex, 1, front))
            paths.check_auto_chunks("numpy", paths.PathExample(ex, 1, front))


@pytest.mark.parametrize("bug", sorted(BROKEN))
@pytest.mark.parametrize("check", ["chunked_layer", "auto_chunks"])
def test_bug_is_caught_on_fixed_examples(installed, bug, check):
    # a prepared spectrum is built for all channels at once: the slicing bug is not on
    # that path (the chunks slice the prepared spectrum), the accumulation bug is
    fronts = ("apply", "prepare") if bug == "broken_chunk_drop" else ("apply",)
    for ex in FIXED:
        for front in fronts:
            with pytest.raises(AssertionError):
                paths.PATH_PROPERTIES[check](bug, paths.PathExample(ex, 1, front))


@pytest.mark.parametrize("bug", sorted(BROKEN))
def test_bug_is_caught_by_the_ci_rows(installed, bug):
    """The rows CI runs on a NumPy-based backend (pinned + its design budget) catch it."""
    rows = PINNED + tuple(path_design(hypothesis_profiles.CI_DESIGN_ROWS["numpy"]))
    caught = 0
    for pex in rows:
        try:
            paths.check_chunked_layer(bug, pex)
        except paths.NotApplicable:
            pass
        except AssertionError:
            caught += 1
    assert caught > 0, f"{bug}: none of the {len(rows)} CI rows failed"
