"""The properties of conformance/properties.py as Hypothesis tests, one per property and backend.

``backend_name`` is parametrized by conftest.py over the selected backends.  Each test runs
the pinned boundary cases and its backend's share of the CI design as explicit examples,
plus random draws in the ``thorough`` profile (hypothesis_profiles.py).  Every example is
labelled (``--hypothesis-show-statistics`` lists the labels) and noted; a failure prints
the backend, dtype, shapes, seed and the call that reproduces it.
"""

from __future__ import annotations

import pytest
from hypothesis import reject

from . import properties as P
from .examples import label
from .hypothesis_profiles import conformance_test

#: Per property, the options of conformance_test: the example space (the laws that need
#: two time steps take L >= 2) and the share of the design for the costlier properties.
OPTIONS = {
    "causality": dict(min_length=2),
    "reach": dict(min_length=2),
    "shift": dict(min_length=2),
    "dropout": dict(scale=0.5),
    "init_values": dict(scale=0.5),
    "gradients": dict(scale=0.5),
}


def run(check, backend_name, ex):
    """Label the example and run one property; an example it says nothing about is rejected."""
    label(ex, backend_name, check.__name__)
    try:
        check(backend_name, ex)
    except P.NotApplicable:
        reject()


def property_test(prop: str, name: str, profile: str | None = None):
    """The Hypothesis test of ``P.PROPERTIES[prop]``, called ``name``, under ``profile``
    (the active one by default): what CI runs when ``profile`` is 'ci'."""
    check = P.PROPERTIES[prop]

    def test(backend_name, ex):
        run(check, backend_name, ex)

    test.__name__ = test.__qualname__ = name
    test.__doc__ = check.__doc__
    return conformance_test(profile=profile, **OPTIONS.get(prop, {}))(test)


test_kernel_matches_reference = property_test("kernel", "test_kernel_matches_reference")
test_kernel_block_structure = property_test("kernel_blocks", "test_kernel_block_structure")
test_conv_matches_direct_sums = property_test("conv", "test_conv_matches_direct_sums")
test_layer_matches_reference = property_test("layer", "test_layer_matches_reference")
test_causality = property_test("causality", "test_causality")
test_reach_of_each_tap = property_test("reach", "test_reach_of_each_tap")
test_linearity = property_test("linearity", "test_linearity")
test_time_shift_equivariance = property_test("shift", "test_time_shift_equivariance")
test_impulse_response = property_test("impulse", "test_impulse_response")
test_batch_independence = property_test("batch", "test_batch_independence")
test_non_finite_input_propagates = property_test("nonfinite", "test_non_finite_input_propagates")
test_dropout = property_test("dropout", "test_dropout")
test_initial_kernel_and_parameter_count = property_test(
    "init", "test_initial_kernel_and_parameter_count")
test_initial_values = property_test("init_values", "test_initial_values")
test_dtypes_shapes_devices = property_test("dtypes_shapes", "test_dtypes_shapes_devices")
test_parameter_transfer = property_test("transfer", "test_parameter_transfer")
test_gradients = pytest.mark.autodiff(property_test("gradients", "test_gradients"))
test_framework_layers = pytest.mark.framework_layer(
    property_test("framework_layers", "test_framework_layers"))
