"""Generated long-range tasks: NumPy only, seeded, deterministic, offline.

::

    from sgconv import tasks
    task = tasks.listops(2000, 200, 200, min_length=100, max_length=512, seed=0)
    task.train.x, task.train.lengths, task.train.y      # (n, L) ids, (n,), (n,)

- :func:`listops`: ListOps by the Long Range Arena's generator, with S4's tokens
  (10 classes; lengths as arguments: LRA 500-2000, CPU scale e.g. 100-512);
  :func:`evaluate_listops` and :func:`detokenize_listops` read a tokenised expression.
- :func:`adding`: the adding problem (regression at the last position; predicting the
  mean gives MSE 1/6).
- :func:`far_match`: is the last token the symbol of the key that opens the sequence?  A
  model whose receptive field misses the key scores exactly chance (see :mod:`sgconv.tasks.synthetic`).

Every task returns a :class:`Task` of three disjoint :class:`Split` s (train, val, test)
of padded NumPy arrays with their valid lengths.  ``make(name, ...)`` builds one by name.
"""

from __future__ import annotations

from ._common import Split, Task, lengths_to_mask
from ._listops import VOCAB as LISTOPS_VOCAB
from ._listops import detokenize as detokenize_listops
from ._listops import evaluate as evaluate_listops
from ._listops import listops
from .synthetic import adding, far_match

__all__ = ["Split", "Task", "lengths_to_mask", "listops", "adding", "far_match", "make",
           "TASKS", "LISTOPS_VOCAB", "evaluate_listops", "detokenize_listops"]

TASKS = {"listops": listops, "adding": adding, "far_match": far_match}


def make(name: str, n_train: int, n_val: int, n_test: int, **options) -> Task:
    """The task called ``name`` ('listops', 'adding', 'far_match') with its options."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name](n_train, n_val, n_test, **options)
