"""Bad input: every mistake gets a ValueError/TypeError that says what was expected."""

import numpy as np
import pytest

import sgconv


@pytest.fixture(scope="module")
def params():
    cfg = sgconv.SGConvConfig(d_model=3, l_max=32, kernel_dim=4, channels=2)
    return sgconv.init(cfg, seed=0, backend="numpy")


@pytest.fixture(autouse=True)
def numpy_backend():
    with sgconv.using("numpy"):
        yield


def test_wrong_rank(params):
    with pytest.raises(ValueError, match=r"u must have 3 dimensions \(B, H, L\), got shape \(3, 16\)"):
        sgconv.apply(params, np.zeros((3, 16), "float32"))
    with pytest.raises(ValueError, match=r"3 dimensions \(B, L, H\)"):
        sgconv.apply(params, np.zeros((1, 1, 3, 16), "float32"), transposed=False)


def test_channel_mismatch(params):
    with pytest.raises(ValueError, match=r"u has H=4 channels on axis 1 .* d_model=3"):
        sgconv.apply(params, np.zeros((1, 4, 16), "float32"))
    with pytest.raises(ValueError, match=r"H=16 channels on axis 2 .*pass transposed=True"):
        sgconv.apply(params, np.zeros((1, 3, 16), "float32"), transposed=False)


def test_zero_length_and_zero_batch(params):
    with pytest.raises(ValueError, match=r"length L=0 .*expected L >= 1"):
        sgconv.apply(params, np.zeros((1, 3, 0), "float32"))
    # B = 0 is an empty batch, as torch layers take it: an empty output of the right shape
    for transposed, shape in ((True, (0, 3, 5)), (False, (0, 5, 3))):
        y = sgconv.apply(params, np.zeros(shape, "float32"), transposed=transposed)
        assert y.shape == shape and y.dtype == np.float32
    with pytest.raises(ValueError, match=r"length must be an int L >= 1, got 0"):
        sgconv.kernel(params, 0)
    with pytest.raises(TypeError, match=r"length must be an int"):
        sgconv.kernel(params, 4.0)


@pytest.mark.parametrize("dtype", ["int32", "int64", "bool", "complex64", "complex128"])
def test_integer_bool_and_complex_input(params, dtype):
    with pytest.raises(TypeError, match=r"u must be a real floating array .* got dtype"):
        sgconv.apply(params, np.zeros((1, 3, 8), dtype))


def test_non_numeric_and_ragged_input(params):
    with pytest.raises(TypeError, match=r"real floating array .* got dtype str"):
        sgconv.apply(params, [[[1.0, "a"]]])
    with pytest.raises(TypeError, match="nested lists of equal lengths"):
        sgconv.apply(params, [[[1.0, 2.0], [1.0]]])


def test_not_params():
    with pytest.raises(TypeError, match=r"expected sgconv.Params .* got dict"):
        sgconv.apply({}, np.zeros((1, 3, 8), "float32"))
    with pytest.raises(TypeError, match="init expects an SGConvConfig"):
        sgconv.init({"d_model": 3})
    with pytest.raises(TypeError, match="parameter dtype must be one of"):
        sgconv.init(sgconv.SGConvConfig(d_model=1, l_max=4), dtype="int32")


def test_bad_dropout(params):
    for rate in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"dropout must be a rate in \[0, 1\)"):
            sgconv.apply(params, np.zeros((1, 3, 8), "float32"), dropout=rate)
    for rate in ("0.1", None, True):
        with pytest.raises(TypeError, match=r"dropout must be a rate in \[0, 1\)"):
            sgconv.apply(params, np.zeros((1, 3, 8), "float32"), dropout=rate)


def test_conv_shape_errors():
    u = np.zeros((2, 3, 10))
    with pytest.raises(ValueError, match=r"k must have shape \(C', H=3, Lk\), got \(1, 2, 10\)"):
        sgconv.conv(u, np.zeros((1, 2, 10)))
    with pytest.raises(ValueError, match=r"k has 11 taps but u has length L=10"):
        sgconv.conv(u, np.zeros((1, 3, 11)))
    with pytest.raises(ValueError, match=r"even number of kernel rows"):
        sgconv.conv(u, np.zeros((3, 3, 10)), bidirectional=True)
    with pytest.raises(ValueError, match=r"D must have shape \(C=2, H=3\), got \(4, 3\)"):
        sgconv.conv(u, np.zeros((4, 3, 10)), np.zeros((4, 3)), bidirectional=True)
    with pytest.raises(TypeError, match=r"k must be a real floating array"):
        sgconv.conv(u, np.zeros((1, 3, 10), "int64"))
    with pytest.raises(ValueError, match=r"block_size=2 is too small for this kernel: .* = 5 "
                                         r"samples; pass block_size >= 5"):
        sgconv.conv(u, np.zeros((1, 3, 6)), block_size=2)


def test_nan_and_inf_propagate_without_crash(params):
    u = np.zeros((2, 3, 16), "float32")
    u[0, 1, 5] = np.nan
    u[1, 0, 3] = np.inf
    y = sgconv.apply(params, u)
    assert y.shape == (2, 3, 16)
    assert np.isnan(y[0]).any() and not np.isfinite(y[1]).all()


def test_long_and_length_one_sequences_work(params):
    # L > l_max: the kernel is zero-padded (SPEC); L = 1: only the lag-0 tap and D.
    for L in (1, 2, 33, 100):
        y = sgconv.apply(params, np.ones((1, 3, L), "float64"))
        assert y.shape == (1, 3, L) and np.isfinite(y).all()
    k = sgconv.kernel(params, 100)
    assert k.shape == (2, 3, 100) and np.all(k[..., 32:] == 0)
