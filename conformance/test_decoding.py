"""Step-by-step decoding held to the reference: the property of conformance/decoding.py as a
Hypothesis test per backend, the long horizon, and the bidirectional refusal."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import reject

import sgconv

from . import decoding
from .examples import Example, label
from .hypothesis_profiles import conformance_test
from .properties import NotApplicable, session


def decoding_test(name: str, profile: str | None = None):
    """The Hypothesis test of check_decoding, called ``name``, over causal examples: the
    pinned causal cases and the backend's share of the design (ci), plus random draws
    (thorough), as every property of test_properties.py."""
    def test(backend_name, ex):
        label(ex, backend_name, "check_decoding")
        try:
            decoding.check_decoding(backend_name, ex)
        except NotApplicable:
            reject()

    test.__name__ = test.__qualname__ = name
    test.__doc__ = decoding.check_decoding.__doc__
    return conformance_test(profile=profile, modes=(False,))(test)


test_prefill_then_steps_match_layer = decoding_test("test_prefill_then_steps_match_layer")


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
