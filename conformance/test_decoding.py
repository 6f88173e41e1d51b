"""Step-by-step decoding held to the reference: the property of conformance/decoding.py as a
Hypothesis test per backend, the long horizon, and the bidirectional refusal."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, reject

import sgconv

from . import decoding
from .decoding import decoding_examples
from .examples import Example, label
from .hypothesis_profiles import conformance_test
from .properties import NotApplicable, session


@conformance_test()
@given(ex=decoding_examples())
def test_prefill_then_steps_match_layer(backend_name, ex):
    label(ex, backend_name, "check_decoding")
    try:
        decoding.check_decoding(backend_name, ex)
    except NotApplicable:
        reject()


def test_long_horizon_has_no_drift(backend_name):
    """65536 float32 steps (K = 65536, P = 713 runs): within the rule at every t, no drift.

    NumPy and torch loop over sgconv.step (a few seconds); JAX scans sgconv.jax.step.
    """
    summary = decoding.check_long_horizon(backend_name)
    print(f"{backend_name}: {summary}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bidirectional_layer_refuses_to_decode(backend_name, dtype):
    ex = Example(bidirectional=True, dtype=dtype)
    with session(backend_name, dtype) as bk:
        params = sgconv.init(ex.config, seed=0, dtype=dtype, backend=backend_name)
        u = bk.asarray(np.zeros((1, ex.d_model, 4), dtype=dtype))
        for call in (lambda: sgconv.decoder(params), lambda: sgconv.prefill(params, u),
                     lambda: sgconv.step(params, None, u[..., 0])):
            with pytest.raises(ValueError, match="bidirectional"):
                call()
