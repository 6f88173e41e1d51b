"""What every generated task returns: three splits of padded arrays, and how to read them."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .._checks import check_int

__all__ = ["Split", "Task", "lengths_to_mask"]


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of a task, as padded NumPy arrays.

    Attributes:
        x: (n, L) int64 token ids (padding id 0) for token tasks, or (n, L, d_input) float32
            for real-valued inputs (padding zeros).  L is the longest sequence of the split.
        lengths: (n,) int64, the valid length of each sequence (its first ``lengths[i]``
            positions; the rest is padding).
        y: (n,) int64 class labels, or (n,) float32 regression targets.
    """

    x: np.ndarray
    lengths: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def mask(self) -> np.ndarray:
        """(n, L) bool: True on the valid part of each sequence."""
        return lengths_to_mask(self.lengths, self.x.shape[1])


@dataclasses.dataclass(frozen=True)
class Task:
    """A generated task: its splits and what a model needs to know to be built for it.

    Attributes:
        name: e.g. 'listops', 'adding', 'far_match'.
        train, val, test: the :class:`Split` s (disjoint by construction; tune on ``val``).
        kind: 'classification' (cross-entropy, accuracy) or 'regression' (MSE).
        d_output: classes, or 1 for regression.
        vocab_size: the number of token ids for token tasks (id 0 is padding), else None.
        d_input: the feature width of real-valued inputs, else None.
        pool: the readout the task is defined with: 'mean' (over the valid part) or
            'last' (the last valid position).
        info: the generator's arguments and anything else worth recording.
    """

    name: str
    train: Split
    val: Split
    test: Split
    kind: str
    d_output: int
    vocab_size: int | None
    d_input: int | None
    pool: str
    info: dict[str, Any]


def lengths_to_mask(lengths, length: int) -> np.ndarray:
    """(n,) valid lengths -> (n, L) bool mask, True at positions t < lengths[i]."""
    lengths = np.asarray(lengths)
    return np.arange(length)[None, :] < lengths[:, None]


def check_count(name: str, value, minimum: int = 0) -> int:
    """An int >= minimum (split sizes, lengths, vocabulary sizes)."""
    return check_int(name, value, minimum)


def check_seed(seed) -> int:
    """A non-negative int seed (the whole task is a function of it)."""
    return check_count("seed", seed, 0)
