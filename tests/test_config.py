"""SGConvConfig: validation, derived sizes per SPEC."""

import math

import pytest

import sgconv


def spec_num_scales(l_max, d):
    # SPEC: N = 1 + ceil(log2(l_max / d)), never below 1 (computed here with floats).
    return max(1, 1 + math.ceil(math.log2(l_max / d)))


@pytest.mark.parametrize("l_max,d", [(1, 64), (63, 64), (64, 64), (65, 64), (128, 64), (129, 64),
                                     (1000, 7), (16384, 64), (16385, 64), (3, 2), (97, 5)])
def test_num_scales_matches_spec_formula(l_max, d):
    cfg = sgconv.SGConvConfig(d_model=2, l_max=l_max, kernel_dim=d)
    assert cfg.num_scales == spec_num_scales(l_max, d)
    # The concatenated kernel covers l_max: K = d * 2^(N-1) >= l_max.
    assert cfg.kernel_length == d * 2 ** (cfg.num_scales - 1) >= l_max


def test_scale_lengths_double_after_the_second():
    cfg = sgconv.SGConvConfig(d_model=3, l_max=1024, kernel_dim=16)
    assert cfg.scale_lengths == (16, 16, 32, 64, 128, 256, 512)
    assert sum(cfg.scale_lengths) == cfg.kernel_length == 1024


def test_explicit_n_scales_wins():
    cfg = sgconv.SGConvConfig(d_model=3, l_max=1024, kernel_dim=16, n_scales=3)
    assert cfg.num_scales == 3 and cfg.kernel_length == 64


def test_parameter_count_is_sublinear_in_l_max():
    counts = [sgconv.SGConvConfig(d_model=8, l_max=2 ** p).num_kernel_parameters
              for p in range(8, 21)]
    # Doubling l_max adds one scale: C'*H*d more weights, not twice as many.
    assert all(b - a == 8 * 64 for a, b in zip(counts[1:], counts[2:]))
    cfg = sgconv.SGConvConfig(d_model=8, l_max=2 ** 20, channels=2, bidirectional=True)
    assert cfg.num_kernel_parameters == cfg.num_scales * 4 * 8 * 64


def test_config_is_hashable_and_frozen():
    a = sgconv.SGConvConfig(d_model=4, l_max=32)
    assert hash(a) == hash(sgconv.SGConvConfig(d_model=4, l_max=32))
    with pytest.raises(Exception):
        a.d_model = 5


@pytest.mark.parametrize("kwargs,exc,fragment", [
    (dict(d_model=0, l_max=8), ValueError, "d_model must be >= 1, got 0"),
    (dict(d_model=-3, l_max=8), ValueError, "d_model"),
    (dict(d_model=2, l_max=0), ValueError, "l_max must be >= 1"),
    (dict(d_model=2, l_max=8, channels=0), ValueError, "channels"),
    (dict(d_model=2, l_max=8, kernel_dim=0), ValueError, "kernel_dim"),
    (dict(d_model=2, l_max=8, n_scales=0), ValueError, "n_scales"),
    (dict(d_model=2.5, l_max=8), TypeError, "d_model must be an int"),
    (dict(d_model=True, l_max=8), TypeError, "d_model must be an int"),
    (dict(d_model=2, l_max=8, decay_min=0.0), ValueError, "decay_min must be finite and > 0"),
    (dict(d_model=2, l_max=8, decay_max=-1.0, decay_min=0.5), ValueError, "decay_max"),
    (dict(d_model=2, l_max=8, decay_min=float("nan")), ValueError, "decay_min"),
    (dict(d_model=2, l_max=8, decay_min=3.0, decay_max=2.0), ValueError, "decay_min <= decay_max"),
    (dict(d_model=2, l_max=8, decay_min="2"), TypeError, "decay_min"),
    (dict(d_model=2, l_max=8, bidirectional=1), TypeError, "bidirectional must be a bool"),
    (dict(d_model=2, l_max=8, interpolation="cubic"), ValueError, "interpolation must be one of"),
])
def test_bad_configuration_says_what_was_expected(kwargs, exc, fragment):
    with pytest.raises(exc, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        sgconv.SGConvConfig(**kwargs)
