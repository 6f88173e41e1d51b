"""The benchmark suite stays runnable: asv.conf.json is valid, every module imports, the
helpers' oracle is right, and numpy_floor.py runs.  (No timing is asserted here: speed is
asv's job, and CI runs every benchmark once with ``asv run -E existing --quick``.)
"""

from __future__ import annotations

import glob
import math
import importlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.join(REPO, "asv_benchmarks")


def _load_conf() -> dict:
    """asv.conf.json with asv's own reader when installed, else JSON minus // comments."""
    path = os.path.join(REPO, "asv.conf.json")
    try:
        from asv.config import Config
    except ImportError:
        text = "\n".join(line for line in open(path) if not line.lstrip().startswith("//"))
        return json.loads(text)
    return vars(Config.load(path))


def test_asv_config():
    conf = _load_conf()
    assert conf["benchmark_dir"] == "asv_benchmarks"
    assert os.path.isdir(BENCH_DIR)
    assert conf["repo"] == "."
    assert conf["environment_type"] == "virtualenv"
    # torch pinned to the CPU wheel: an unpinned torch pulls a multi-GB CUDA build
    assert conf["matrix"]["req"]["torch"] == ["2.13.0"]


def _modules():
    names = sorted(os.path.splitext(os.path.basename(p))[0]
                   for p in glob.glob(os.path.join(BENCH_DIR, "*.py")))
    return [n for n in names if n != "__init__"]


@pytest.mark.parametrize("name", _modules())
def test_every_benchmark_module_imports(name):
    """asv imports every module of benchmark_dir while discovering; none may fail or run."""
    source = open(os.path.join(BENCH_DIR, name + ".py")).read()
    needs = [fw for fw in ("torch", "jax", "cupy")
             if re.search(rf"^(import|from) {fw}\b", source, re.M)]
    for fw in needs:
        pytest.importorskip(fw)
    importlib.import_module(f"asv_benchmarks.{name}")


def _benchmark_names(module):
    for cls_name, cls in vars(module).items():
        if isinstance(cls, type) and not cls_name.startswith("_"):
            for attr in vars(cls):
                if re.match(r"(time|peakmem|track|mem)_", attr):
                    yield f"{cls_name}.{attr}"


def test_own_modules_define_benchmarks():
    expected = {
        "bench_ops": ["KernelConstruction.time_kernel", "Convolution.time_conv",
                      "Layer.time_forward", "LayerMemory.peakmem_forward",
                      "LayerBackward.time_forward_backward",
                      "ParameterCount.track_kernel_parameters",
                      "Accuracy.track_max_relative_error"],
        "bench_baselines": ["DirectConvolution.time_direct", "FFTConvolve.time_fftconvolve",
                            "ScipyFFTFloor.time_floor", "TorchStraightforward.time_forward"],
        "bench_jax_layer": ["JaxLayer.time_forward", "JaxLayer.time_forward_backward",
                            "JaxInference.time_forward", "FFTLength.time_rfft_irfft"],
        "numpy_floor": ["NumpyConvFloor.time_sgconv_conv", "NumpyConvFloor.time_floor",
                        "NumpyConvFloor.track_ratio_to_floor"],
        "bench_decode": ["DecodeToken.time_token", "DecodeToken.peakmem_state"],
        "bench_models": ["ModelBlocks.time_forward_backward"],
    }
    for module_name, names in expected.items():
        module = importlib.import_module(f"asv_benchmarks.{module_name}")
        found = set(_benchmark_names(module))
        assert set(names) <= found, (module_name, sorted(set(names) - found))


def test_fft_oracle_matches_the_reference_direct_sums():
    """The float64 FFT oracle used above L=4096 agrees with reference.layer's direct sums."""
    from asv_benchmarks import common

    for length in (1, 257, 1000):
        config = common.layer_config(length, d_model=5)
        state = common.reference_state(config, "float64")
        u = common.random_input(2, 5, length)
        direct = common.reference().layer(state, u)
        # float64 FFT of length 2L: error ~ eps64 * log2(2L) relative to the output's scale
        tol = 16 * np.finfo(np.float64).eps * max(np.log2(2 * length), 1)
        assert common.max_relative_error(common.fft_oracle_layer(state, u), direct) <= tol
    # and the comparison can fail: a wrong skip weight D is caught
    wrong = dict(state, D=state["D"] * 0.5)
    assert common.max_relative_error(common.fft_oracle_layer(wrong, u), direct) > 1e-3


def test_oracle_choice_by_length():
    from asv_benchmarks import common

    small = common.random_input(1, 2, common.DIRECT_MAX_LENGTH)
    big = common.random_input(1, 2, common.DIRECT_MAX_LENGTH + 1)
    for u, method in ((small, "direct"), (big, "FFT")):
        state = common.reference_state(common.layer_config(u.shape[-1], d_model=2), "float32")
        assert method in common.oracle_layer(state, u)[1]


def test_unavailable_backend_is_a_skip():
    from asv_benchmarks import common

    with pytest.raises(NotImplementedError):
        common.require_backend("no-such-backend")


def test_numpy_floor_script_runs():
    proc = subprocess.run([sys.executable, os.path.join(BENCH_DIR, "numpy_floor.py"),
                           "--batch", "2", "--d-model", "3", "--length", "500", "--repeat", "2"],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 0, proc.stderr
    ratio = re.search(r"ratio sgconv\.conv / floor = ([\d.]+)", proc.stdout)
    assert ratio and float(ratio.group(1)) > 0
    err = re.search(r"max \|sgconv\.conv - floor\| / max \|floor\| = (\S+)", proc.stdout)
    # both sides compute the same float32 convolution: they agree to float32 rounding
    assert float(err.group(1)) <= 8 * np.finfo(np.float32).eps * np.log2(1024)


def test_compare_jax_torch_script_runs_every_row():
    pytest.importorskip("jax")
    pytest.importorskip("torch")
    proc = subprocess.run([sys.executable, os.path.join(BENCH_DIR, "compare_jax_torch.py"),
                           "--B", "1", "--H", "4", "--L", "128", "--repeats", "1"],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 0, proc.stderr
    for row in ("jax (jit)", "jax prepared", "torch module", "torch generic"):
        assert re.search(rf"^  {re.escape(row)} +[\d.]+ s", proc.stdout, re.M), (row, proc.stdout)
    ratios = re.findall(r"= ([\d.]+)  \(", proc.stdout)
    assert len(ratios) == 3 and all(float(r) >= 1.0 for r in ratios), proc.stdout


def test_numpy_floor_sides_compute_the_same_convolution():
    from asv_benchmarks.numpy_floor import Case

    case = Case(batch=2, d_model=3, length=300)
    reference = case.floor()                                   # (B, H, L)
    n = case.n
    scale = np.max(np.abs(reference))
    tol = 8 * np.finfo(np.float32).eps * np.log2(n) * scale
    for variant in Case.VARIANTS:
        out = np.asarray(getattr(case, variant)())
        if variant == "transforms_only":
            assert out.shape == (2, 3, n)
            continue
        out = out.reshape(2, 3, 300)
        assert np.max(np.abs(out - reference)) <= tol, variant
    # the floor is a causal linear convolution: against numpy's direct convolution
    direct = np.stack([[np.convolve(case.u[b, h].astype(np.float64),
                                    case.k[0, h].astype(np.float64))[:300]
                        for h in range(3)] for b in range(2)])
    assert np.max(np.abs(reference - direct)) <= tol


def test_decode_cases_agree_and_compare_decode_runs():
    """The three per-token methods of bench_decode give the same output, and
    compare_decode.py prints its table (small sizes)."""
    from asv_benchmarks.decode_cases import METHODS, make_case

    outputs = {}
    for method in METHODS:
        case, inputs = make_case("numpy", method, 256, 2, H=4)
        outputs[method] = [case.call(inputs[i]) for i in range(3)]
    for method in ("recompute", "dot"):
        for a, b in zip(outputs["step"], outputs[method]):
            assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max(), method
    out = subprocess.run([sys.executable, os.path.join(BENCH_DIR, "compare_decode.py"),
                          "--backends", "numpy", "--lengths", "256", "--batches", "1",
                          "--d-model", "4", "--calls", "0.02"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "| numpy | 256 | 1 |" in out.stdout


def test_conv2d_benchmarks_and_baselines():
    """bench_conv2d defines its rows; the baselines are honest layers: the dense FFT kernel
    computes a linear (not circular) convolution (with a 7x7 kernel embedded at its centre
    it equals the depthwise nn.Conv2d row), and compare_conv2d.py prints every row."""
    torch = pytest.importorskip("torch")
    module = importlib.import_module("asv_benchmarks.bench_conv2d")
    assert {"Conv2dForward.time_forward", "Conv2dForwardBackward.time_forward_backward",
            "Conv2dParameters.track_spatial_parameters"} <= set(_benchmark_names(module))
    from asv_benchmarks.conv2d_baselines import make_layer
    H, X, Y = 3, 9, 12
    conv, dense = make_layer("conv7x7", H, X, Y), make_layer("dense_fft", H, X, Y)
    with torch.no_grad():
        dense.weight.zero_()
        cx, cy = X // 2, Y // 2                    # offset (0, 0) sits at index (X//2, Y//2)
        # nn.Conv2d correlates: weight[i, j] reads u[x + i - 3, y + j - 3], i.e. offset
        # (3 - i, 3 - j) of a convolution kernel
        dense.weight[:, cx - 3:cx + 4, cy - 3:cy + 4] = conv.dwconv.weight[:, 0].flip(-1, -2)
        dense.load_state_dict({**dense.state_dict(), "D": conv.D,
                               "output_linear.weight": conv.output_linear.weight,
                               "output_linear.bias": conv.output_linear.bias})
        u = torch.randn(2, H, X, Y)
        scale = conv(u).abs().max()
        assert (dense(u) - conv(u)).abs().max() <= 64 * 2 ** -23 * math.log2(4 * X * Y) * scale
        dense.D.mul_(0.5)                          # and the comparison can fail
        assert (dense(u) - conv(u)).abs().max() > 1e-3 * scale
    proc = subprocess.run([sys.executable, os.path.join(BENCH_DIR, "compare_conv2d.py"),
                           "--sizes", "5", "--widths", "2", "--batch", "1", "--repeats", "1"],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 0, proc.stderr
    for mode in ("forward", "forward+backward", "inference"):
        assert re.search(rf"^\| 5 \| 2 \| 1 \| {re.escape(mode)} \|", proc.stdout, re.M), proc.stdout
