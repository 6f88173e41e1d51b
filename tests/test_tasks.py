"""sgconv.tasks: the generated long-range tasks are deterministic, have the statistics their
definitions promise (ListOps against LRA's, the adding problem's 1/6, far match's
balance and locality), and refuse arguments they cannot honour."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sgconv import tasks


def _splits(task):
    return (task.train, task.val, task.test)


def _same(a: tasks.Task, b: tasks.Task) -> bool:
    return all(np.array_equal(getattr(x, f), getattr(y, f))
               for x, y in zip(_splits(a), _splits(b)) for f in ("x", "lengths", "y"))


# --- ListOps -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lra_listops():
    # the LRA setting (500 < length < 2000): ~1 s for 1500 examples
    return tasks.listops(1500, 0, 0, seed=3)


def test_listops_matches_lra_statistics(lra_listops):
    """LRA's ListOps has a majority class of about 17% (the digit 0; 9 is a close second,
    from SUM_MOD and MAX).  1500 examples: the standard error is ~1%, the band 4.5 of them."""
    y = lra_listops.train.y
    freq = np.bincount(y, minlength=10) / len(y)
    assert 0.125 <= freq.max() <= 0.215, freq
    assert int(np.argmax(freq)) in (0, 9), freq
    assert freq.min() > 0.04, freq                    # every class occurs
    lengths = lra_listops.train.lengths - 1           # the end token is not counted by LRA
    assert lengths.min() > 500 and lengths.max() < 2000
    assert 800 < np.median(lengths) < 1150            # LRA's files: a median near 950-1000


def test_listops_labels_are_the_expressions_values(lra_listops):
    """An independent evaluator (a stack machine over the tokens) agrees with every label,
    and each sequence is one expression followed by the end token, then padding."""
    split = lra_listops.train
    for x, n, y in zip(split.x[:300], split.lengths[:300], split.y[:300]):
        assert tasks.evaluate_listops(x[:n]) == y
        assert x[n - 1] == tasks.LISTOPS_VOCAB.index('<eos>') and not x[n:].any()
        assert x[0] in (13, 14, 15, 16)                      # an operator opens the tree
    text = tasks.detokenize_listops(split.x[0])
    assert text.startswith("[") and text.endswith("] <eos>")


def test_listops_evaluator_rejects_broken_expressions():
    with pytest.raises(ValueError):
        tasks.evaluate_listops([13, 3, 17])                     # one argument
    with pytest.raises(ValueError):
        tasks.evaluate_listops([13, 3, 4])                      # unclosed
    with pytest.raises(ValueError):
        tasks.evaluate_listops([13, 3, 4, 17, 5])               # a second top-level value


def test_listops_operators():
    """MED is numpy's median rounded down; SM is the sum mod 10."""
    ev = tasks.evaluate_listops
    assert ev([15, 3 + 1, 3 + 4, 17]) == 2                       # median(1, 4) = 2.5 -> 2
    assert ev([15, 3 + 9, 3 + 1, 3 + 5, 17]) == 5
    assert ev([16, 3 + 9, 3 + 8, 17]) == 7
    assert ev([13, 3 + 9, 14, 3 + 2, 3 + 6, 17, 17]) == 6        # MIN(9, MAX(2, 6))
    for values in ([1, 2], [0, 9, 3, 3], [7, 7, 1], [2, 5, 8, 9, 0, 1]):
        assert ev([15] + [3 + v for v in values] + [17]) == int(np.median(values))


def test_listops_is_deterministic_and_splits_are_disjoint():
    a = tasks.listops(120, 30, 30, min_length=20, max_length=100, seed=5)
    b = tasks.listops(120, 30, 30, min_length=20, max_length=100, seed=5)
    c = tasks.listops(120, 30, 30, min_length=20, max_length=100, seed=6)
    assert _same(a, b) and not _same(a, c)
    rows = [bytes(x[:n].astype(np.uint8)) for s in _splits(a) for x, n in zip(s.x, s.lengths)]
    assert len(set(rows)) == len(rows) == 180                  # no example twice
    assert a.vocab_size == 18 and a.d_output == 10 and a.pool == "mean"
    for s in _splits(a):
        assert s.x.dtype == np.int64 and s.x.shape == (len(s), s.lengths.max())
        assert ((s.lengths - 1 > 20) & (s.lengths - 1 < 100)).all()
        assert np.array_equal(s.mask, np.arange(s.x.shape[1]) < s.lengths[:, None])


def test_listops_cpu_scale_setting():
    t = tasks.listops(300, 0, 0, min_length=100, max_length=512, seed=0)
    assert ((t.train.lengths > 101) & (t.train.lengths <= 512)).all()
    assert 0.1 < np.bincount(t.train.y).max() / 300 < 0.25


@pytest.mark.parametrize("kwargs, match", [
    (dict(min_length=100, max_length=101), "exceed min_length by at least 2"),
    (dict(min_length=0, max_length=4), "too short for ListOps"),
    (dict(min_length=10 ** 6, max_length=10 ** 6 + 10, max_depth=3), "no tree of depth"),
    (dict(leaf_prob=1.0), "leaf_prob"),
    (dict(max_depth=1), "max_depth must be >= 2"),
    (dict(max_args=1), "max_args must be an int >= 2"),
])
def test_listops_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tasks.listops(10, 0, 0, **kwargs)


def test_listops_gives_up_on_rare_bounds():
    with pytest.raises(RuntimeError, match="raise max_draws"):
        tasks.listops(10, 0, 0, min_length=3000, max_length=3100, max_draws=200)


def test_listops_type_errors():
    with pytest.raises(TypeError, match="n_train"):
        tasks.listops(10.0, 0, 0)
    with pytest.raises(ValueError, match="seed"):
        tasks.listops(10, 0, 0, seed=-1)


# --- adding problem ---------------------------------------------------------------------

def test_adding_problem_definition():
    t = tasks.adding(20000, 10, 10, length=37, seed=1)
    x, y = t.train.x, t.train.y
    assert x.shape == (20000, 37, 2) and x.dtype == np.float32 and t.pool == "last"
    markers = x[..., 1]
    assert (markers.sum(1) == 2).all()
    first, second = np.argsort(-markers, axis=1, kind="stable")[:, :2].T
    lo, hi = np.minimum(first, second), np.maximum(first, second)
    assert (lo < 37 // 2).all() and (hi >= 37 // 2).all()       # one marker per half
    assert np.allclose(y, (x[..., 0] * markers).sum(1), atol=1e-6)
    # predicting the mean: MSE = Var(U1 + U2) = 1/6; 20000 samples, s.e. ~0.0012
    assert abs(np.mean((y - 1.0) ** 2) - 1 / 6) < 0.006
    assert abs(np.mean((y - y.mean()) ** 2) - 1 / 6) < 0.006
    assert np.array_equal(tasks.adding(5, 1, 1, length=9, seed=4).train.x,
                          tasks.adding(5, 1, 1, length=9, seed=4).train.x)


def test_adding_needs_two_halves():
    with pytest.raises(ValueError, match="needs length >= 2"):
        tasks.adding(4, 1, 1, length=1)
    assert tasks.adding(4, 1, 1, length=2).train.x[..., 1].sum(1).tolist() == [2.0] * 4


# --- far match ------------------------------------------------------------------------------

def test_far_match_definition_and_locality():
    t = tasks.far_match(20000, 10, 10, length=64, vocab=8, seed=2)
    x, y = t.train.x, t.train.y
    S = t.info["key_length"]
    assert S == 4 and t.pool == "last" and t.vocab_size == 9
    assert (x[:, :S] == x[:, :1]).all() and x.min() >= 1 and x.max() <= 8
    assert np.array_equal(y, (x[:, -1] == x[:, 0]).astype(np.int64))
    assert abs(y.mean() - 0.5) < 0.015                                  # balanced
    # what a local model sees (the query and its neighbours) says nothing about the label:
    # P(y = 1 | query = v) and P(y = 1 | token L-2 = v) are 1/2 for every symbol v
    for column in (-1, -2):
        for v in range(1, 9):
            sel = x[:, column] == v
            assert abs(y[sel].mean() - 0.5) < 0.05, (column, v)


def test_far_match_arguments():
    assert tasks.far_match(3, 1, 1, length=2).info["key_length"] == 1
    assert tasks.far_match(3, 1, 1, length=40, key_length=7).info["key_length"] == 7
    with pytest.raises(ValueError, match="needs length >= 2"):
        tasks.far_match(3, 1, 1, length=1)
    with pytest.raises(ValueError, match="key_length \\+ 1"):
        tasks.far_match(3, 1, 1, length=10, key_length=10)
    with pytest.raises(ValueError, match="vocab"):
        tasks.far_match(3, 1, 1, length=10, vocab=1)
    with pytest.raises(ValueError, match="unknown task"):
        tasks.make("pathx", 1, 1, 1)


def test_tasks_import_numpy_only():
    code = ("import sys, sgconv.tasks as t; t.listops(5, 1, 1, min_length=10, max_length=40); "
            "bad = [m for m in ('torch', 'jax', 'cupy') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
