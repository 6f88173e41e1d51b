"""The Pathfinder-style generator of experiments/pathfinder: the label is the answer the
image holds (checked by connected components, not by the generator's own bookkeeping),
the classes are balanced, the marks lie in the distance range, a seed gives the same images."""

import os
import sys

import numpy as np
import pytest
from scipy import ndimage

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)),
                                "experiments", "pathfinder"))
from generator import make_split  # noqa: E402


def _marks(img):
    """Centres of the 3 x 3 all-ink squares (the marks; a one-pixel curve has none)."""
    full = ndimage.binary_erosion(img > 0, structure=np.ones((3, 3)), border_value=0)
    return np.argwhere(full)


@pytest.mark.parametrize("opts", [{}, {"size": 29, "paths": 3, "min_apart": 12,
                                       "max_apart": 26}])
def test_label_is_whether_one_curve_joins_the_marks(opts):
    images, labels = make_split(24, seed=4, **opts)
    size = opts.get("size", 32)
    assert images.shape == (24, size, size) and images.dtype == np.float32
    assert labels.sum() == 12 and set(np.unique(images)) <= {0.0, 1.0}
    for img, y in zip(images, labels):
        comps, n = ndimage.label(img > 0, structure=np.ones((3, 3)))
        assert n == opts.get("paths", 4)                 # curves never touch one another
        marks = _marks(img)
        assert len(marks) == 2, marks
        a, b = marks
        assert opts.get("min_apart", 6) <= np.hypot(*(a - b)) <= opts.get("max_apart", 22)
        assert (comps[tuple(a)] == comps[tuple(b)]) == bool(y)


def test_seeded_and_seed_dependent():
    a, la = make_split(6, seed=7)
    b, lb = make_split(6, seed=7)
    c, _ = make_split(6, seed=8)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)

