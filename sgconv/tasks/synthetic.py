"""Two synthetic long-range tasks: the adding problem and far match.

Adding problem (Hochreiter and Schmidhuber, 1997; in this form Arjovsky et al., 2016):
each position holds two numbers, a value drawn from U[0, 1) and a marker, 1 at exactly
two positions (one in the first half, one in the second) and 0 elsewhere.  The target is
the sum of the two marked values, read out at the last position.  The target has
variance 2/12, so predicting its mean (1) gives MSE 1/6: a model has to beat that.

Far match: a sequence of L tokens over ``vocab`` symbols.  It opens with a key: the
first ``key_length`` tokens (S) all hold one symbol, drawn uniformly.  The label (binary)
is whether the last token, the query, is that symbol, read out at the last position;
the tokens in between are uniform noise.  The query equals the key with probability 1/2
and is otherwise uniform over the other symbols, so the query alone is uniform and
independent of the label.

Why a local model provably cannot solve far match: a stack of convolutions whose kernels
reach r steps back (depthwise convolutions of width k in n layers reach r = n (k - 1)),
read out at position L - 1, computes a function of tokens L-1-r .. L-1 only (their
anti-causal halves, when bidirectional, look past L - 1, where there is nothing).  When
r < L - 1 - S those tokens miss the whole key, and they are independent of the label (the
noise is independent of everything, the query is uniform whatever the label), so every
such model, whatever its weights, has expected accuracy exactly 1/2 on balanced labels.
A model with a global kernel reaches the key from position L - 1 and can compare.  (The
readout must be local too: mean pooling over all positions is itself a global operation,
which is why the task is defined with the last-position readout.)  The key is a block of
S tokens rather than one token so that a smooth long kernel can pick it out of the noise
without resolving single lags L - 1 away; S = 1 is the hardest setting.
"""

from __future__ import annotations

import numpy as np

from ._common import Split, Task, check_count, check_seed

__all__ = ["adding", "far_match"]


def _check_length(name: str, length, minimum: int, why: str) -> int:
    length = check_count("length", length, 1)
    if length < minimum:
        raise ValueError(f"{name} needs length >= {minimum} ({why}), got length={length}")
    return length


def adding(n_train: int, n_val: int, n_test: int, *, length: int, seed: int = 0) -> Task:
    """The adding problem at sequence length L; deterministic in ``seed``.

    Returns a :class:`Task`: x (n, L, 2) float32 (channel 0 the values, channel 1 the
    markers), lengths (n,) all L, y (n,) float32 the sum of the two marked values;
    regression read out at the last position (``pool='last'``).  Predicting the mean
    target gives MSE 1/6.
    """
    counts = [check_count(name, n) for name, n in
              (("n_train", n_train), ("n_val", n_val), ("n_test", n_test))]
    length = _check_length("the adding problem", length, 2,
                           "one marked position in each half of the sequence")
    rng = np.random.default_rng(check_seed(seed))
    splits = []
    for n in counts:
        values = rng.random((n, length))                               # (n, L) in [0, 1)
        half = length // 2
        first = rng.integers(0, half, n)                               # in [0, L/2)
        second = rng.integers(half, length, n)                         # in [L/2, L)
        markers = np.zeros((n, length))
        rows = np.arange(n)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        x = np.stack([values, markers], axis=-1).astype(np.float32)    # (n, L, 2)
        y = (values[rows, first] + values[rows, second]).astype(np.float32)
        splits.append(Split(x, np.full(n, length, dtype=np.int64), y))
    return Task("adding", *splits, kind="regression", d_output=1, vocab_size=None,
                d_input=2, pool="last", info={"length": length, "seed": int(seed),
                                              "baseline_mse": 1.0 / 6.0})


def far_match(n_train: int, n_val: int, n_test: int, *, length: int, vocab: int = 8,
              key_length: int | None = None, seed: int = 0) -> Task:
    """Far match at sequence length L: is the last token the symbol of the opening key?

    The key is the first ``key_length`` (S; default L // 16, at least 1) tokens, all one
    symbol; then noise; then the query at position L - 1.  Tokens are ids 1..vocab (0 is
    padding, unused: all sequences have length L).  Labels are balanced in expectation.
    Returns a :class:`Task`: x (n, L) int64, lengths (n,) all L, y (n,) int64 in {0, 1};
    classification read out at the last position (``pool='last'``).  A model whose
    receptive field at the last position spans fewer than L - S tokens scores 1/2 in
    expectation (module docstring).
    """
    counts = [check_count(name, n) for name, n in
              (("n_train", n_train), ("n_val", n_val), ("n_test", n_test))]
    length = _check_length("far match", length, 2, "a key and a query to compare")
    vocab = check_count("vocab", vocab, 2)
    S = max(1, length // 16) if key_length is None else check_count("key_length", key_length, 1)
    if S > length - 1:
        raise ValueError(f"far match needs length >= key_length + 1 (the key, then the query); "
                         f"got length={length}, key_length={S}")
    rng = np.random.default_rng(check_seed(seed))
    splits = []
    for n in counts:
        x = rng.integers(1, vocab + 1, (n, length))                    # (n, L) noise
        key = rng.integers(1, vocab + 1, n)                             # (n,)
        y = (rng.random(n) < 0.5).astype(np.int64)                      # (n,) balanced
        other = 1 + (key - 1 + rng.integers(1, vocab, n)) % vocab      # uniform != key
        x[:, :S] = key[:, None]
        x[:, -1] = np.where(y == 1, key, other)
        splits.append(Split(x.astype(np.int64), np.full(n, length, dtype=np.int64), y))
    return Task("far_match", *splits, kind="classification", d_output=2,
                vocab_size=vocab + 1, d_input=None, pool="last",
                info={"length": length, "vocab": vocab, "key_length": S, "seed": int(seed)})
