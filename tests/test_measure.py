"""sgconv._measure: the one timing and peak-memory helper of ``sgconv bench`` and the scripts
in asv_benchmarks/.  What is checked is what it does, not how fast anything is: the order of
the interleaved rounds, the samples' sizes, and that a known allocation is seen."""

from __future__ import annotations

import glob
import os
import sys
import time

import numpy as np
import pytest

from sgconv import _measure

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_rounds_rotate_and_every_callable_gets_one_sample_per_round():
    log = []
    calls = {name: (lambda name=name: log.append(name)) for name in "abc"}
    samples = _measure.interleaved(calls, 4)
    assert log[:3] == ["a", "b", "c"]                          # the untimed warm-up calls
    rounds = [log[3 + 3 * r: 6 + 3 * r] for r in range(4)]
    assert rounds == [list("abc"), list("bca"), list("cab"), list("abc")]
    assert list(samples) == ["a", "b", "c"]
    for s in samples.values():
        assert len(s.wall) == len(s.cpu) == 4 and s.number == 1
        assert s.best <= s.median <= s.worst


def test_a_sample_is_several_calls_when_one_is_short():
    count = {"n": 0}

    def short():
        count["n"] += 1
        time.sleep(0.001)

    samples = _measure.interleaved({"short": short}, 2, min_sample_s=0.02)
    s = samples["short"]
    # each sample lasts >= 20 ms: about 20 calls of 1 ms (fewer if the warm-up was slower)
    assert 2 <= s.number <= 21 and count["n"] == 1 + 2 * s.number
    assert s.median == pytest.approx(0.001, abs=0.004)         # seconds per call, not per sample


def test_least_most_and_a_time_budget():
    slow = {"slow": lambda: time.sleep(0.05)}
    assert len(_measure.interleaved(slow, (2, 9, 0.01))["slow"].wall) == 2   # budget spent
    assert len(_measure.interleaved(slow, (1, 3, 60.0))["slow"].wall) == 3   # most reached
    with pytest.raises(ValueError, match="repeat must be >= 1"):
        _measure.interleaved(slow, 0)
    with pytest.raises(ValueError, match="least <= most"):
        _measure.interleaved(slow, (3, 2, 1.0))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_peak_memory_sees_an_allocation_and_its_release():
    size = 64 * 2 ** 20

    def allocate():
        block = np.ones(size, dtype=np.uint8)                  # touched: resident, then freed
        return int(block[::4096].sum())

    _measure.release_free_memory()
    mib, exact = _measure.host_peak_mib(allocate)
    assert mib is not None
    if exact:                                                  # the high-water mark was reset
        assert 60 <= mib < 64 + 48, mib
    else:                                                      # an upper bound since start
        assert mib >= 60, mib
    small, _ = _measure.host_peak_mib(lambda: None)
    if exact:
        assert small < 16, small                               # nothing allocated, nothing seen


def test_benchmarks_use_this_helper_and_keep_no_copy_of_it():
    """asv_benchmarks/common.py takes the layer callables from here, and no benchmark script
    or CLI module resets the peak resident set or loops over timing rounds on its own."""
    sys.path.insert(0, REPO)
    try:
        from asv_benchmarks import common
    finally:
        sys.path.remove(REPO)
    assert common.forward_fn is _measure.forward_fn
    assert common.forward_backward_fn is _measure.forward_backward_fn
    assert common.compiled is _measure.compiled
    own = os.path.join(REPO, "sgconv", "_measure.py")
    for path in glob.glob(os.path.join(REPO, "asv_benchmarks", "*.py")) + glob.glob(
            os.path.join(REPO, "sgconv", "**", "*.py"), recursive=True):
        if os.path.samefile(path, own):
            continue
        text = open(path).read()
        for copy in ('"/proc/self/clear_refs"', "getrusage(", '"/proc/self/status"'):
            assert copy not in text, (path, copy)
