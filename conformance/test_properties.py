"""The properties of conformance/properties.py as Hypothesis tests, one per property and backend.

``backend_name`` is parametrized by conftest.py over the selected backends.  Every draw is
labelled (``--hypothesis-show-statistics`` lists the labels) and noted; a failure prints
the backend, dtype, shapes, seed and the call that reproduces it.
"""

from __future__ import annotations

import pytest
from hypothesis import given, reject

from . import properties as P
from .examples import examples, label
from .hypothesis_profiles import conformance_test


def run(check, backend_name, ex):
    """Label the draw and run one property; a draw it says nothing about is rejected."""
    label(ex, backend_name, check.__name__)
    try:
        check(backend_name, ex)
    except P.NotApplicable:
        reject()


@conformance_test()
@given(ex=examples())
def test_kernel_matches_reference(backend_name, ex):
    run(P.check_kernel, backend_name, ex)


@conformance_test()
@given(ex=examples())
def test_kernel_block_structure(backend_name, ex):
    run(P.check_kernel_blocks, backend_name, ex)


@conformance_test()
@given(ex=examples())
def test_conv_matches_direct_sums(backend_name, ex):
    run(P.check_conv, backend_name, ex)


@conformance_test()
@given(ex=examples())
def test_layer_matches_reference(backend_name, ex):
    run(P.check_layer, backend_name, ex)


@conformance_test()
@given(ex=examples(min_length=2))
def test_causality(backend_name, ex):
    run(P.check_causality, backend_name, ex)


@conformance_test()
@given(ex=examples(min_length=2))
def test_reach_of_each_tap(backend_name, ex):
    run(P.check_reach, backend_name, ex)


@conformance_test()
@given(ex=examples())
def test_linearity(backend_name, ex):
    run(P.check_linearity, backend_name, ex)


@conformance_test()
@given(ex=examples(min_length=2))
def test_time_shift_equivariance(backend_name, ex):
    run(P.check_shift, backend_name, ex)


@conformance_test()
@given(ex=examples())
def test_impulse_response(backend_name, ex):
    run(P.check_impulse, backend_name, ex)


@conformance_test()
@given(ex=examples())
def test_batch_independence(backend_name, ex):
    run(P.check_batch, backend_name, ex)


@conformance_test()
@given(ex=examples())
def test_initial_kernel_and_parameter_count(backend_name, ex):
    run(P.check_init, backend_name, ex)


@conformance_test()
@given(ex=examples())
def test_dtypes_shapes_devices(backend_name, ex):
    run(P.check_dtypes_shapes, backend_name, ex)


@conformance_test()
@given(ex=examples())
def test_parameter_transfer(backend_name, ex):
    run(P.check_transfer, backend_name, ex)


@pytest.mark.autodiff
@conformance_test(scale=0.5)
@given(ex=examples())
def test_gradients(backend_name, ex):
    run(P.check_gradients, backend_name, ex)
