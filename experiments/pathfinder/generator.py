"""Pathfinder-style images: are the two marked points joined by one curved path?

After the Pathfinder task of the Long Range Arena (Linsley et al. 2018; Tay et al. 2021),
written here from the task's description, NumPy only, seeded:

* every image holds ``paths`` smooth curves, each a random walk whose heading turns by a
  curvature of its own plus a small random angle per step (both of about ``turn`` radians
  per step), drawn one pixel wide and kept at least ``gap`` pixels away from the curves
  already drawn, so that curves never touch or cross;
* two endpoints are marked with 3 x 3 squares.  Positive (label 1): both ends of one
  curve.  Negative (label 0): one end each of two different curves.  The pair is drawn
  at random among those whose marks lie between ``min_apart`` and ``max_apart`` pixels
  apart (an image with none is drawn again).  Both classes draw the same number of curves
  of the same length distribution with marks in the same distance range, so neither the
  ink, the number of curves nor the presence of two nearby marks tells the classes apart:
  following a curve from one mark to the other does, which needs context across the image.

    images, labels = make_split(4096, size=32, seed=0)    # (n, size, size) float32, (n,) int64

The same seed gives the same images on any machine (``numpy.random.default_rng``).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["make_image", "make_split", "DEFAULTS"]

DEFAULTS = dict(size=32, paths=4, length=(18, 34), turn=0.1, gap=2, min_apart=6,
                max_apart=22)


def _curve(rng, size: int, length: int, turn: float, free: np.ndarray):
    """A random smooth curve of ``length`` pixels inside the image avoiding ``free == False``,
    as an (m, 2) int array of distinct, 8-connected pixels, or None when none fits."""
    for _ in range(20):
        x, y = rng.uniform(2, size - 3, size=2).tolist()     # Python floats: fast round()
        heading = rng.uniform(0, 2 * math.pi)
        start = (round(x), round(y))
        if not free[start]:
            continue
        pixels, seen = [start], {start}
        curvature = rng.normal(0.0, turn)             # each curve bends its own way
        for wiggle in rng.normal(0.0, turn, size=4 * length).tolist():  # and wiggles
            if len(pixels) == length:
                return np.array(pixels)
            heading += curvature + wiggle
            x, y = x + 0.7 * math.cos(heading), y + 0.7 * math.sin(heading)
            p = (round(x), round(y))
            if p == pixels[-1]:
                continue
            if not (1 <= p[0] < size - 1 and 1 <= p[1] < size - 1) or not free[p] or p in seen:
                break
            pixels.append(p)
            seen.add(p)
    return None


def _block(mask: np.ndarray, pixels: np.ndarray, gap: int) -> None:
    """Mark every pixel within ``gap`` (Chebyshev) of the curve as taken."""
    size = mask.shape[0]
    for x, y in pixels:
        mask[max(x - gap, 0):min(x + gap + 1, size), max(y - gap, 0):min(y + gap + 1, size)] = False


def make_image(rng, label: int, *, size=32, paths=4, length=(18, 34), turn=0.1, gap=2,
               min_apart=6, max_apart=22) -> np.ndarray:
    """One (size, size) float32 image in [0, 1] whose answer is ``label`` (1: the marks are
    joined by one curve, 0: they sit on two different curves)."""
    while True:
        free = np.ones((size, size), dtype=bool)
        curves = []
        for _ in range(paths):
            c = _curve(rng, size, int(rng.integers(length[0], length[1] + 1)), turn, free)
            if c is None:
                break
            curves.append(c)
            _block(free, c, gap)
        if len(curves) < paths:
            continue                                  # the image is too crowded: start again
        if label == 1:                                # the two ends of one curve
            pairs = [(c[0], c[-1]) for c in curves]
        else:                                         # one end each of two curves
            pairs = [(curves[i][e], curves[j][f]) for i in range(paths)
                     for j in range(i + 1, paths) for e in (0, -1) for f in (0, -1)]
        pairs = [(a, b) for a, b in pairs if min_apart <= np.hypot(*(a - b)) <= max_apart]
        if not pairs:
            continue                                  # the same distance range in both classes
        a, b = pairs[int(rng.integers(len(pairs)))]
        img = np.zeros((size, size), dtype=np.float32)
        for c in curves:
            img[c[:, 0], c[:, 1]] = 1.0
        for x, y in (a, b):
            img[max(x - 1, 0):x + 2, max(y - 1, 0):y + 2] = 1.0
        return img


def make_split(n: int, *, seed: int, **options) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, size, size) float32 and labels (n,) int64, half of each class in a
    random order, from ``numpy.random.default_rng(seed)``; options as :data:`DEFAULTS`."""
    rng = np.random.default_rng(seed)
    opts = {**DEFAULTS, **options}
    labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
    images = np.stack([make_image(rng, int(y), **opts) for y in labels])
    return images, labels
