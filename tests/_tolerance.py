"""Temporary tolerance rule for the package tests (replaced by conformance's helper)."""

import math

import numpy as np


def assert_matches(actual, expected, dtype, n, scale, where=""):
    eps = np.finfo(dtype).eps
    atol = 8 * eps * (math.log2(max(n, 2)) + 1) * max(float(scale), np.finfo(dtype).tiny)
    err = np.abs(np.asarray(actual, dtype=np.float64) - expected).max()
    assert err <= atol, f"{where}: max abs error {err:.3g} > {atol:.3g}"
