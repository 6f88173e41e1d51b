"""sgconv.torch.SGConv2d: the module against the reference, as a drop-in for a depthwise
nn.Conv2d, device/dtype, half precision, the evaluation cache, checkpoints, errors, and
compiled training (in a subprocess with a time limit, at 56 x 56)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import reference  # noqa: E402
import sgconv  # noqa: E402
from conformance import tolerance2d  # noqa: E402
from conformance.tolerance import assert_close  # noqa: E402
from sgconv.torch import SGConv2d  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _state(module):
    return {k: v.detach().double().numpy() for k, v in module.state_dict().items()}


def _check(module, u, y, dtype="float32", what=""):
    """y = module(u) against reference.layer2d within the conformance bound."""
    u64 = u.detach().double().numpy()
    if not module.transposed:
        u64 = np.moveaxis(u64, 3, 1)
    st = _state(module)
    want = reference.layer2d(st, u64, True, module.config.interpolation)
    got = y.detach().double().numpy()
    got = got if module.transposed else np.moveaxis(got, 3, 1)
    assert_close(got, want, tolerance2d.layer2d_bound(st, module.config, u64, dtype), what)


@pytest.mark.parametrize("sizes, image, transposed, C", [
    ((8, 8), (8, 8), True, 1), ((6, 11), (7, 5), False, 2), ((4, 4), (13, 1), True, 1),
    ((5, 3), (1, 1), False, 1)])
def test_module_matches_reference(sizes, image, transposed, C):
    torch.manual_seed(sum(image))
    m = SGConv2d(3, sizes, channels=C, kernel_dim=2, transposed=transposed)
    shape = (2, 3) + image if transposed else (2,) + image + (3,)
    u = torch.randn(shape)
    _check(m, u, m(u), what=f"SGConv2d sizes={sizes} image={image} transposed={transposed}")


class _Block(torch.nn.Module):
    """A ConvNeXt block: depthwise spatial mixing, LayerNorm, MLP, residual."""

    def __init__(self, dwconv, H):
        super().__init__()
        self.dwconv = dwconv
        self.norm = torch.nn.LayerNorm(H)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(H, 4 * H), torch.nn.GELU(),
                                       torch.nn.Linear(4 * H, H))

    def forward(self, x):                                          # (B, H, X, Y)
        y = self.dwconv(x).permute(0, 2, 3, 1)
        return x + self.mlp(self.norm(y)).permute(0, 3, 1, 2)


def test_drop_in_for_a_depthwise_conv2d_in_a_convnext_block():
    """Where nn.Conv2d(H, H, 7, padding=3, groups=H) is, SGConv2d(H, (X, Y)) fits: same
    shapes in and out, trains (gradients reach its sub-kernels), with fewer kernel weights
    than a dense global kernel; an optimiser step refreshes the evaluation cache."""
    H, X, Y = 16, 14, 14
    torch.manual_seed(0)
    x = torch.randn(4, H, X, Y)
    conv = _Block(torch.nn.Conv2d(H, H, 7, padding=3, groups=H), H)
    glob = _Block(SGConv2d(H, (X, Y), kernel_dim=4), H)
    assert conv(x).shape == glob(x).shape == x.shape
    opt = torch.optim.SGD(glob.parameters(), lr=0.1)
    glob.eval()
    with torch.no_grad():
        before = glob(x)
    glob.train()
    loss = glob(x).square().mean()
    loss.backward()
    assert glob.dwconv.kernel_list_x[0].grad.abs().sum() > 0
    assert glob.dwconv.kernel_list_y[-1].grad.abs().sum() > 0
    opt.step()
    glob.eval()
    with torch.no_grad():
        after = glob(x)
        fresh = _Block(SGConv2d(H, (X, Y), kernel_dim=4), H)
        fresh.load_state_dict(glob.state_dict())
        assert torch.equal(after, fresh.eval()(x))                 # the cache was refreshed
    assert not torch.allclose(before, after)
    assert glob.dwconv.num_kernel_parameters == 2 * 3 * 2 * H * 4 < X * Y * H


def test_device_dtype_and_extra_repr():
    m = SGConv2d(4, (10, 6), kernel_dim=2, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in m.parameters())
    assert m.kernel_norm_x.dtype == torch.float64
    u = torch.randn(2, 4, 10, 6, dtype=torch.float64)
    y = m(u)
    assert y.dtype == torch.float64
    _check(m, u, y, "float64", "float64 module")
    text = repr(m)
    for part in ("d_model=4", "sizes=(10, 6)", "kernel_dim=2", "n_scales=(4, 3)",
                 "kernel_parameters=112"):
        assert part in text, text
    m2 = m.float()
    assert m2(u.float()).dtype == torch.float32


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(half):
    torch.manual_seed(1)
    m = SGConv2d(4, (9, 7), kernel_dim=2)
    u = torch.randn(2, 4, 9, 7).to(half)
    y = m(u)
    assert y.dtype == half
    assert torch.equal(y, m(u.float()).to(half))                   # float32 inside
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya = m(u.float())
    assert ya.dtype == torch.float32 and torch.equal(ya, m(u.float()))
    mh = SGConv2d(4, (9, 7), kernel_dim=2, dtype=half)
    mh.load_state_dict({k: v.to(half) for k, v in m.state_dict().items()})
    assert mh(u).dtype == half


def test_eval_cache_follows_parameters_and_input_size():
    torch.manual_seed(2)
    m = SGConv2d(3, (8, 8), kernel_dim=2).eval()
    u = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        y1 = m(u)
        key = m._spectrum_cache[0]
        assert torch.equal(m(u), y1) and m._spectrum_cache[0] == key
        v = torch.randn(1, 3, 5, 8)
        _check(m, v, m(v), what="cache at another size")
        with torch.no_grad():
            m.kernel_list_y[1].mul_(-1)
        y2 = m(u)
    assert not torch.allclose(y1, y2)
    _check(m, u, y2, what="after an in-place update")


def test_checkpoints_through_sgconv_save_and_load(tmp_path):
    torch.manual_seed(3)
    m = SGConv2d(3, (6, 9), channels=2, kernel_dim=2, learnable_decay=True, decay_min=1.5)
    params = m.to_params()
    assert isinstance(params, sgconv.Params2d) and params.backend == "torch"
    assert set(sgconv.to_state_dict2d(params)) == set(m.state_dict())
    sgconv.save(tmp_path / "m.npz", params)
    loaded = sgconv.load(tmp_path / "m.npz")                       # NumPy
    m2 = SGConv2d.from_params(loaded, transposed=False)
    u = torch.randn(2, 3, 6, 9)
    assert torch.equal(m2(u.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), m(u))
    y_np = sgconv.apply2d(loaded, u.numpy())
    np.testing.assert_allclose(y_np, m(u).detach().numpy(), rtol=1e-5, atol=1e-5)
    fresh = SGConv2d.from_params(sgconv.init2d(m2.config, seed=5))
    np.testing.assert_array_equal(fresh.D.detach().numpy(), sgconv.init2d(m2.config, seed=5).D)


@pytest.mark.parametrize("shape, match", [
    ((2, 3, 8), "1D layer is sgconv.apply"), ((2, 4, 8, 8), "d_model=3"),
    ((2, 8, 8, 3), "transposed=False")])
def test_module_errors(shape, match):
    m = SGConv2d(3, 8, kernel_dim=2)
    with pytest.raises(ValueError, match=match):
        m(torch.zeros(shape))
    with pytest.raises(TypeError, match="real floating"):
        m(torch.zeros(2, 3, 8, 8, dtype=torch.int64))
    with pytest.raises(TypeError, match="sizes"):
        SGConv2d(3, "8")
    with pytest.raises(TypeError, match="Params2d"):
        SGConv2d.from_params(sgconv.init(sgconv.SGConvConfig(3, 8)))


def test_compiled_training_equals_eager_and_reference_at_56x56(tmp_path):
    """torch.compile(SGConv2d, fullgraph=True), forward and backward, at the width and size
    (H=16, 56 x 56, d=8: four scales) that crashed compiled training before the kernel
    layout moved into sgconv::spectrum2d (the old layout crashed this case 2 times in 2),
    channels-last; checked against eager and the reference (tests/conv2d_compile_check.py)
    in a subprocess."""
    case = [[16, 56, 56, 1, 8, False, None]]
    # An Inductor cache of its own: the on-disk cache keys a graph by its ops, not by their
    # fake implementations, so a cache left by an older sgconv can hold stale strides.
    env = dict(os.environ, PYTHONUNBUFFERED="1", TORCHINDUCTOR_CACHE_DIR=str(tmp_path))
    res = subprocess.run([sys.executable, os.path.join(HERE, "conv2d_compile_check.py"),
                          json.dumps(case)], capture_output=True, text=True, timeout=600,
                         cwd=ROOT, env=env)
    assert res.returncode == 0 and "PASS" in res.stdout, (
        f"compiled SGConv2d training failed (exit {res.returncode})\n--- stdout\n"
        f"{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-4000:]}")
