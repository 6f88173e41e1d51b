"""The PyTorch adapter: the torch backend, sgconv.torch.SGConv / GConv and sgconv.torch.functional.

Outputs are held to the float64 reference with the conformance suite's tolerance rule
(conformance/tolerance.py: bounds from the dtype's eps, log2 of the FFT length and the
operands' norms).  Gradients are checked with torch.autograd.gradcheck in float64 (central
differences against the analytic backward, PyTorch's own tolerances).  Where a result must
be bit-identical (half precision computed in float32 then rounded, autocast switched off,
the cached spectrum) the test says why and uses torch.equal.  Every failure message names
the configuration, dtype, shapes and seed that reproduce it.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import reference  # noqa: E402
import sgconv  # noqa: E402
import sgconv.torch.functional as SF  # noqa: E402
from conformance import oracle  # noqa: E402
from conformance.tolerance import (  # noqa: E402
    assert_close, conv_bound, kernel_bound, layer_bound)
from sgconv import _ops  # noqa: E402
from sgconv.torch import GConv, SGConv  # noqa: E402
from torch_checks import check_grads, check_layer, state_of  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BK = sgconv.backend("torch")
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def released_state(seed: int, **kw) -> dict:
    """A released-layout state dict (SPEC "Compatibility"), from the reference, as tensors."""
    st = reference.init_state(rng=seed, **kw)
    return {k: torch.as_tensor(np.asarray(v)) for k, v in st.items()}


def check_kernel(module, k, length, what):
    """k (C', H, L) against reference.kernel within the conformance kernel bound."""
    st = state_of(module)
    want = reference.kernel(st, length, module.config.interpolation)
    assert_close(k.detach().double().numpy(), want,
                 kernel_bound(st, module.config, length, "float64"), what)


# Causal / bidirectional, heads, L < K, L == K, L > K (overlap-add), L = 1, prime L,
# nearest interpolation and the learnable decay.
CASES = [
    dict(kw=dict(d_model=4, l_max=64, kernel_dim=8), L=37),
    dict(kw=dict(d_model=3, l_max=40, kernel_dim=8, channels=2, bidirectional=True), L=64),
    dict(kw=dict(d_model=5, l_max=20, kernel_dim=4, decay_min=1.5, decay_max=3.0), L=211),
    dict(kw=dict(d_model=3, l_max=16, kernel_dim=4, channels=2, bidirectional=True), L=300),
    dict(kw=dict(d_model=4, l_max=50, kernel_dim=8, bidirectional=True), L=1),
    dict(kw=dict(d_model=4, l_max=50, kernel_dim=8), L=1),
    dict(kw=dict(d_model=4, l_max=50, kernel_dim=8, mode="cat_randn_nearest"), L=53),
    dict(kw=dict(d_model=2, l_max=64, kernel_dim=8, channels=2, decay_min=0.5, decay_max=1.0,
                 mode="cat_randn_learnable"), L=61),
]


def _module(case, dtype, seed=0, **extra):
    torch.manual_seed(seed)
    return SGConv(**case["kw"], dtype=TORCH_DTYPES[dtype], **extra)


# --- the backend ------------------------------------------------------------------------------

def test_fast_len_is_the_smallest_even_7_smooth_length():
    def smooth(n):
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        return m == 1
    for n in list(range(1, 2000)) + [32767, 65537, 999_983]:
        want = next(m for m in range(max(n, 2), 2 * n + 2) if m % 2 == 0 and smooth(m))
        assert BK.next_fast_len(n) == want, n
    assert BK.next_fast_len(32767) == 32768


def test_backend_conversions_keep_dtype_and_device():
    for np_dtype in (np.float32, np.float64, np.int64):
        x = BK.asarray(np.arange(6, dtype=np_dtype).reshape(2, 3))
        assert isinstance(x, torch.Tensor) and BK.dtype_name(x) == np.dtype(np_dtype).name
    like = torch.zeros(2, dtype=torch.float64)
    x = BK.asarray(np.ones(3, np.float32), dtype="float64", like=like)
    assert x.dtype == torch.float64 and x.device == like.device
    ro = np.ones(4)
    ro.flags.writeable = False
    assert torch.equal(BK.asarray(ro), torch.ones(4, dtype=torch.float64))
    assert BK.to_numpy(torch.ones(2, dtype=torch.bfloat16)).dtype == np.float32
    assert BK.dtype_name(torch.ones(1, dtype=torch.bfloat16)) == "bfloat16"
    with pytest.raises(TypeError, match="numeric array"):
        BK.asarray(object())
    assert BK.version().startswith("torch ") and "cpu" in BK.device_description()


def test_backend_dropout_seeded_and_rate():
    x = torch.ones(200_000, dtype=torch.float64)
    a, b = BK.dropout(x, 0.25, 7), BK.dropout(x, 0.25, 7)
    assert torch.equal(a, b), "an int seed must give the same mask"
    kept = (a != 0).double().mean().item()
    # binomial: 5 standard deviations of the kept fraction at n = 200000
    assert abs(kept - 0.75) < 5 * np.sqrt(0.25 * 0.75 / x.numel())
    assert torch.equal(a[a != 0], torch.full_like(a[a != 0], 1 / 0.75))
    g = torch.Generator().manual_seed(3)
    assert not torch.equal(BK.dropout(x, 0.5, g), BK.dropout(x, 0.5, g))
    with pytest.raises(TypeError, match="Generator"):
        BK.dropout(x, 0.5, "seed")


def test_missing_torch_names_the_extra():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import sgconv\n"
            "try:\n    import sgconv.torch\nexcept sgconv.BackendUnavailableError as e:\n"
            "    print('ok', e)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok") and "pip install 'sgconv[torch]'" in res.stdout


def test_generic_apply_on_torch_matches_numpy_backend():
    cfg = sgconv.SGConvConfig(d_model=3, l_max=40, kernel_dim=8, channels=2, bidirectional=True)
    params = sgconv.init(cfg, seed=4, dtype="float64")
    u = np.random.default_rng(5).standard_normal((2, 3, 45))
    with sgconv.using("torch"):
        got = sgconv.apply(params.to("torch"), torch.from_numpy(u))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    st = oracle.params_state(params, sgconv.backend("numpy"))
    assert_close(got.numpy(), reference.layer(st, u, True),
                 layer_bound(st, cfg, u, "float64"), f"sgconv.apply on torch, {cfg}, seeds 4/5")


# --- the module against the reference -----------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['kw']}-L{c['L']}")
def test_module_matches_reference(case, dtype):
    m = _module(case, dtype, seed=1)
    H = case["kw"]["d_model"]
    u = torch.from_numpy(np.random.default_rng(2).standard_normal((2, H, case["L"]))
                         .astype(dtype))
    y = m(u)
    assert y.shape == u.shape and y.dtype == u.dtype
    check_layer(m, u, y, dtype, f"SGConv({case['kw']}) dtype={dtype} u={tuple(u.shape)} "
                                f"seeds torch 1 / numpy 2, train mode")
    m.eval()
    with torch.no_grad():
        y_eval = m(u)                                        # builds and caches the spectrum
        y_cached = m(u)                                      # reuses it
    # dropout is 0, so evaluation computes the same operations: identical results
    assert torch.equal(y_eval, y.detach()) and torch.equal(y_cached, y_eval)


def test_module_transposed_false_and_block_size_zero():
    case = CASES[2]
    torch.manual_seed(3)
    m = SGConv(**case["kw"], transposed=False, block_size=0, dtype=torch.float64)
    u = torch.from_numpy(np.random.default_rng(3).standard_normal((2, case["L"], 5)))
    y = m(u)                                                 # (B, L, H)
    assert y.shape == u.shape
    check_layer(m, u, y, "float64", f"transposed=False block_size=0 {case['kw']}")


def test_channel_chunks_equal_whole_layer():
    case = CASES[1]
    torch.manual_seed(4)
    whole = SGConv(**case["kw"], dtype=torch.float64)
    chunked = SGConv(**case["kw"], channel_chunk=2, dtype=torch.float64)
    chunked.load_state_dict(whole.state_dict())
    u = torch.randn(2, 3, 50, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 3, 50, dtype=torch.float64)
    y = chunked(u)
    check_layer(chunked, u, y, "float64", "channel_chunk=2 of H=3")
    y.backward(g)
    check_grads(chunked, u, g, u.grad, "float64", "channel_chunk=2 of H=3, seed 4")


def test_module_returns_kernel():
    case = CASES[1]
    m = _module(case, "float64", seed=5)
    u = torch.randn(1, 3, 70, dtype=torch.float64)
    y, k = m(u, return_kernel=True)
    assert torch.equal(y, m(u)) and k.shape == (4, 3, 70)
    check_kernel(m, k, 70, "return_kernel, L=70 > K=64, seed 5")


# --- gradients ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bidirectional,C,L,block", [(False, 1, 9, None), (True, 2, 7, None),
                                                      (False, 2, 40, 15), (True, 1, 45, 16)])
def test_gradcheck_layer_float64(bidirectional, C, L, block):
    """Central differences against the custom FFT backward, the spectrum's D folding, the
    upsampling gathers and the mixing GEMM (block > 0: the overlap-add path)."""
    torch.manual_seed(6)
    m = SGConv(2, 16, channels=C, kernel_dim=4, bidirectional=bidirectional, block_size=block,
               dtype=torch.float64)
    u = torch.randn(2, 2, L, dtype=torch.float64, requires_grad=True)
    params = [*m.kernel_list, m.D, m.output_linear.weight, m.output_linear.bias]

    def f(u, *ps):
        *ws, D, W, b = ps
        return SF.layer(u, ws, m.multiplier, m.kernel_norm, D, W, b,
                        bidirectional=bidirectional, block_size=block)
    assert torch.autograd.gradcheck(f, (u, *params), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gradcheck_learnable_decay_and_conv():
    torch.manual_seed(7)
    m = SGConv(2, 16, kernel_dim=4, mode="cat_randn_learnable", decay_min=0.5, decay_max=1.0,
               dtype=torch.float64)
    u = torch.randn(1, 2, 11, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda u, w, decay: SF.layer(u, [w, *m.kernel_list[1:]], m.multiplier, m.kernel_norm,
                                     m.D, m.output_linear.weight, m.output_linear.bias,
                                     decay=decay),
        (u, m.kernel_list[0], m.decay), eps=1e-6, atol=1e-8, rtol=1e-6)
    k = torch.randn(4, 2, 6, dtype=torch.float64, requires_grad=True)
    D = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u, k, D: SF.conv(u, k, D, bidirectional=True),
                                    (u, k, D), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_fft_conv_backward_equals_autograd_of_plain_ops():
    """The custom op's gradients against autograd through rfft, * and irfft, for a
    complex spectrum leaf too (PyTorch's convention for complex gradients), single FFT and
    blocked shapes, even and odd n."""
    torch.manual_seed(8)
    for n, u_shape, k_lead in [(16, (2, 3, 10), (2, 3)), (15, (2, 3, 10), (1, 3)),
                               (12, (2, 3, 2, 5), (1, 3))]:
        keep = u_shape[-1] if len(u_shape) == 3 else n
        u = torch.randn(*u_shape, dtype=torch.float64, requires_grad=True)
        k_f = torch.fft.rfft(torch.randn(*k_lead, n, dtype=torch.float64)).requires_grad_(True)
        g = torch.randn(u_shape[0], k_lead[0], *u_shape[1:-1], keep, dtype=torch.float64)
        ours = torch.autograd.grad(BK.fft_conv(u, k_f, n, keep), (u, k_f), g)
        k_b = k_f.reshape(*k_lead, *([1] * (len(u_shape) - 3)), -1)   # over the block axes
        plain = torch.fft.irfft(torch.fft.rfft(u, n=n)[:, None] * k_b, n=n)[..., :keep]
        want = torch.autograd.grad(plain, (u, k_f), g)
        # Both are FFT products of g with K or with U, in float64: each element errs by
        # about eps log2(n) times the norms of the two operands (conformance rule, part 1);
        # 4 of that each side.  A wrong bin weight or conjugate errs by O(|gradient|).
        scale = g.norm().item() * max(k_f.norm().item(), torch.fft.rfft(u, n=n).norm().item())
        for a, b in zip(ours, want):
            assert (a - b).abs().max() <= 8 * 2.0 ** -52 * np.log2(n) * scale, (n, u_shape)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gradients_match_the_reference_adjoint_float32(bidirectional):
    """Module gradients (custom FFT backward, float32) against the exact float64 adjoint of
    the reference, within the conformance bound for gradients."""
    torch.manual_seed(9)
    m = SGConv(4, 64, kernel_dim=8, channels=2, bidirectional=bidirectional)
    u = torch.randn(2, 4, 50, requires_grad=True)
    g = torch.randn(2, 4, 50)
    m(u).backward(g)
    check_grads(m, u, g, u.grad, "float32",
                f"gradients, bidirectional={bidirectional}, C=2, float32, seed 9")


# --- the baseline used by the benchmarks is a correct SGConv --------------------------------------

@pytest.mark.parametrize("bidirectional", [False, True])
def test_straightforward_baseline_matches_reference(bidirectional):
    sys.path.insert(0, os.path.join(REPO, "asv_benchmarks"))
    from torch_straightforward import StraightforwardSGConv
    torch.manual_seed(10)
    base = StraightforwardSGConv(3, 40, kernel_dim=8, channels=2, bidirectional=bidirectional,
                                 dtype=torch.float64)
    m = SGConv(3, 40, kernel_dim=8, channels=2, bidirectional=bidirectional, dtype=torch.float64)
    m.load_state_dict({**base.state_dict(), "kernel_norm_initialized": torch.tensor(True)})
    u = torch.randn(2, 3, 33, dtype=torch.float64)
    check_layer(m, u, base(u), "float64", f"straightforward baseline bidirectional={bidirectional}")


# --- evaluation cache -------------------------------------------------------------------------

def test_spectrum_cache_reused_and_invalidated(monkeypatch):
    calls = []
    real = _ops.kernel_spectrum
    monkeypatch.setattr(_ops, "kernel_spectrum", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(11)
    m = SGConv(3, 32, kernel_dim=4, dtype=torch.float64).eval()
    u = torch.randn(2, 3, 30, dtype=torch.float64)
    with torch.no_grad():
        y0 = m(u)
        m(u)
        assert len(calls) == 1, "second evaluation call must reuse the cached spectrum"
        m(u[..., :20])
        assert len(calls) == 2, "a new length needs a new spectrum"
        m(u)
        assert len(calls) == 3
    # an optimiser step changes the weights in place: the cache must notice
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m.train()
    m(u).square().sum().backward()
    opt.step()
    m.eval()
    with torch.no_grad():
        y1 = m(u)
        fresh = SGConv(3, 32, kernel_dim=4, dtype=torch.float64).eval()
        fresh.load_state_dict(m.state_dict())
        assert not torch.equal(y1, y0)
        assert torch.equal(y1, fresh(u)), "stale spectrum after an optimiser step"
        for mutate in (lambda: m.D.mul_(2), lambda: m.kernel_list[2].add_(1),
                       lambda: m.load_state_dict(fresh.state_dict())):
            mutate()
            ref_m = SGConv(3, 32, kernel_dim=4, dtype=torch.float64).eval()
            ref_m.load_state_dict(m.state_dict())
            assert torch.equal(m(u), ref_m(u)), "stale spectrum after an in-place change"
    # with gradients needed the cache is bypassed, so parameter gradients exist
    m(u).sum().backward()
    assert m.kernel_list[0].grad is not None and m.D.grad is not None
    with torch.inference_mode():
        m(u)                                                  # an inference-mode entry ...
    x = u.clone().requires_grad_(True)
    for p in m.parameters():
        p.requires_grad_(False)
    m(x).sum().backward()                                     # ... is not reused outside it
    assert x.grad is not None


# --- compile, half precision, autocast ----------------------------------------------------------

def test_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(12)
    m = SGConv(4, 24, channels=2, kernel_dim=4, bidirectional=True)
    u = torch.randn(2, 4, 40)
    g = torch.randn(2, 4, 40)
    compiled = torch.compile(m, fullgraph=True)             # one compile: forward and backward
    x = u.clone().requires_grad_(True)
    y = compiled(x)
    y.backward(g)
    # compiled output and gradients held to the reference like eager ones (eager is
    # checked the same way in the tests above)
    check_layer(m, u, y, "float32", "torch.compile(fullgraph=True) output, seed 12")
    check_grads(m, u, g, x.grad, "float32", "torch.compile(fullgraph=True) gradients, seed 12")
    with torch.no_grad():
        y_eager = m(u)
    assert y.shape == y_eager.shape and y.dtype == y_eager.dtype


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(half):
    torch.manual_seed(13)
    m = SGConv(4, 32, channels=2, kernel_dim=4, bidirectional=True)
    u = torch.randn(2, 4, 29).to(half)
    y = m(u)
    # the layer casts to float32, computes, and rounds once at the end: bit-identical
    assert y.dtype == half and torch.equal(y, m(u.float()).to(half))
    y.float().sum().backward()                               # backward through half works
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_auto = m(u)
        y32_auto = m(u.float())
    # autocast is switched off inside: the same float32 computation, input dtype out
    assert y_auto.dtype == half and torch.equal(y_auto, y)
    assert y32_auto.dtype == torch.float32 and torch.equal(y32_auto, m(u.float()))
    mh = SGConv(4, 32, channels=2, kernel_dim=4, bidirectional=True, dtype=half)
    mh.load_state_dict(m.state_dict())
    m32 = SGConv(4, 32, channels=2, kernel_dim=4, bidirectional=True)
    m32.load_state_dict(mh.state_dict())                     # the half weights, in float32
    assert mh.kernel_list[0].dtype == half
    assert torch.equal(mh(u), m32(u.float()).to(half)), "half parameters are computed in float32"


# --- released checkpoints -------------------------------------------------------------------------

def _released_keys(N, learnable=False):
    keys = {"D", "multiplier", "kernel_norm", "kernel_norm_initialized",
            "output_linear.weight", "output_linear.bias"}
    keys |= {f"kernel_list.{i}" for i in range(N)}
    return keys | ({"decay"} if learnable else set())


@pytest.mark.parametrize("learnable", [False, True])
def test_released_state_dict_loads_strictly_and_matches(learnable):
    kw = dict(d_model=3, l_max=100, kernel_dim=8, channels=2, bidirectional=True)
    sd = released_state(14, learnable_decay=learnable, decay_min=1.0, decay_max=2.0, **kw)
    # the names and shapes of SPEC "Compatibility" (N = 1 + ceil(log2(100 / 8)) = 5)
    shapes = {"D": (2, 3), "kernel_list.0": (4, 3, 8), "kernel_norm": (4, 3, 1),
              "output_linear.weight": (3, 6), "output_linear.bias": (3,),
              "multiplier": () if learnable else (1, 3, 1), "kernel_norm_initialized": ()}
    for k, s in shapes.items():
        assert tuple(sd[k].shape) == s
    m = SGConv(**kw, decay_min=1.0, decay_max=2.0,
               mode="cat_randn_learnable" if learnable else "cat_randn", dtype=torch.float64)
    assert set(m.state_dict()) == set(sd) == _released_keys(5, learnable)
    for k, v in m.state_dict().items():
        assert tuple(v.shape) == tuple(sd[k].shape), k
    m.load_state_dict(sd, strict=True)
    u = torch.randn(2, 3, 130, dtype=torch.float64)
    check_layer(m, u, m(u), "float64", f"released state dict, learnable={learnable}, seed 14")


def test_uninitialised_released_checkpoint_gets_z_from_its_weights():
    """A released module saved before its first forward has kernel_norm = 1 and the flag
    False; loading computes Z from the loaded weights, as that module's first call would."""
    sd = released_state(15, d_model=3, l_max=64, kernel_dim=8)
    sd["kernel_norm"] = torch.ones_like(sd["kernel_norm"])
    sd["kernel_norm_initialized"] = torch.tensor(False)
    m = SGConv(3, 64, kernel_dim=8, dtype=torch.float64)
    m.load_state_dict(sd, strict=True)
    assert bool(m.kernel_norm_initialized)
    ref_state = {k: np.asarray(v) for k, v in sd.items()}
    want_Z = reference.normaliser(reference.cat_kernel(
        [ref_state[f"kernel_list.{i}"] for i in range(4)], ref_state["multiplier"]))
    # Z = sqrt of a sum of K = 64 squares, float64: relative error (log2 K + 2) eps < 32 eps
    assert np.abs(m.kernel_norm[..., 0].numpy() - want_Z).max() <= 32 * 2.0 ** -52 * want_Z.max()
    u = torch.randn(1, 3, 50, dtype=torch.float64)
    want = reference.layer(ref_state, u.numpy())             # the reference's lazy Z
    st = state_of(m)
    assert_close(m(u).detach().numpy(), want, layer_bound(st, m.config, u.numpy(), "float64"),
                 "uninitialised checkpoint, seed 15")


def test_torch_save_weights_only_round_trip():
    torch.manual_seed(16)
    m = SGConv(4, 40, channels=2, kernel_dim=8, mode="cat_randn_learnable")
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    m2 = SGConv(4, 40, channels=2, kernel_dim=8, mode="cat_randn_learnable")
    m2.load_state_dict(loaded, strict=True)
    u = torch.randn(2, 4, 41)
    assert torch.equal(m(u), m2(u))


def test_from_params_and_core_checkpoint():
    cfg = sgconv.SGConvConfig(d_model=3, l_max=48, kernel_dim=8, channels=2, bidirectional=True)
    params = sgconv.init(cfg, seed=17, dtype="float64")
    m = SGConv.from_params(params, dtype=torch.float64)
    u = np.random.default_rng(17).standard_normal((2, 3, 40))
    st = oracle.params_state(params, sgconv.backend("numpy"))
    assert state_of(m).keys() == st.keys()
    assert all(np.array_equal(state_of(m)[k], st[k]) for k in st), "weights not carried over"
    check_layer(m, torch.from_numpy(u), m(torch.from_numpy(u)), "float64", "from_params, seed 17")


# --- construction, side effects, the released call convention -----------------------------------

def test_z_at_construction_and_forward_has_no_side_effects(capsys):
    torch.manual_seed(18)
    m = SGConv(3, 64, kernel_dim=8, channels=2, verbose=True, dtype=torch.float64)
    assert bool(m.kernel_norm_initialized)
    st = state_of(m)
    ws = [st[f"kernel_list.{i}"] for i in range(m.config.num_scales)]
    want_Z = reference.normaliser(reference.cat_kernel(ws, st["multiplier"]))
    # as above: a norm over K = 64 taps in float64
    assert np.abs(m.kernel_norm[..., 0].numpy() - want_Z).max() <= 32 * 2.0 ** -52 * want_Z.max()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m(torch.randn(2, 3, 70, dtype=torch.float64))
    m.eval()
    with torch.no_grad():
        m(torch.randn(2, 3, 70, dtype=torch.float64))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert capsys.readouterr().out == ""


def test_initial_draws_follow_the_released_order():
    """Same seed, same numbers as the released module draws them: D, the linear, w_i, decay."""
    torch.manual_seed(19)
    m = SGConv(5, 64, kernel_dim=8, channels=2, mode="cat_randn_learnable")
    torch.manual_seed(19)
    D = torch.randn(2, 5)
    lin = torch.nn.Linear(10, 5)
    ws = [torch.randn(2, 5, 8) for _ in range(4)]
    decay = torch.rand(5) * (2.0 - 2.0) + 2.0
    assert torch.equal(m.D, D) and torch.equal(m.output_linear.weight, lin.weight)
    assert torch.equal(m.output_linear.bias, lin.bias)
    assert all(torch.equal(a, b) for a, b in zip(m.kernel_list, ws))
    assert torch.equal(m.decay, decay)
    assert getattr(m.kernel_list[0], "_optim") == {"lr": 0.001}
    cos = SGConv(5, 64, kernel_dim=8, mode="cat_cos")
    rows = cos.kernel_list[0][0]                             # (H, d): cos waves over [0, 2 pi h]
    grid = torch.linspace(0, 1, 8, dtype=torch.float64)
    want = {tuple(torch.cos(2 * np.pi * h * grid).float().tolist()) for h in range(5)}
    assert {tuple(r.tolist()) for r in rows} == want


def test_gconv_call_convention():
    torch.manual_seed(20)
    g = GConv(3, 64, 40, 2, True, kernel_dim=8, dtype=torch.float64)  # released positional order
    assert g.config.l_max == 40 and g.channels == 2 and g.bidirectional and g.d_output == 3
    assert g.d_state == 3 * 64
    u = torch.randn(2, 3, 30, dtype=torch.float64)
    y, none = g(u)
    assert none is None
    y2, k = g(u, return_kernel=True)
    assert torch.equal(y, y2) and k.shape == (2, 3, 60)     # (C, H, 2L): causal, then reversed
    st = state_of(g)
    kr = reference.kernel(st, 30)                            # (C', H, L)
    bound = kernel_bound(st, g.config, 30, "float64")
    assert_close(k.detach().numpy(), np.concatenate([kr[:2], kr[2:, :, ::-1]], axis=-1),
                 np.concatenate([bound[:2], bound[2:, :, ::-1]], axis=-1), "GConv kernel layout")
    check_layer(g, u, y, "float64", "GConv positional construction")
    with pytest.raises(TypeError, match="unexpected keyword"):
        GConv(3, l_max=40, kernel_size=8)


@pytest.mark.parametrize("kwargs,match", [
    (dict(activation="relu"), "activation"), (dict(shift=True), "shift"),
    (dict(linear=True), "linear"), (dict(init_scale=1), "init_scale"),
    (dict(postact="tanh"), "postact"), (dict(hyper_act="sigmoid"), "hyper_act"),
    (dict(mode="sum_randn"), "sum"), (dict(mode="cat_randn_foo"), "foo"),
    (dict(mode="cat_fixed_randn"), "fixed"), (dict(mode="cat"), "randn"),
    (dict(dropout=1.0), "dropout"), (dict(d_state=0), "d_state"),
    (dict(channel_chunk=0), "channel_chunk"), (dict(block_size=-1), "block_size"),
    (dict(lr=0.0), "lr"),
])
def test_unsupported_keywords_raise(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        SGConv(4, 32, **kwargs)


def test_bad_input_errors():
    m = SGConv(4, 32)
    with pytest.raises(ValueError, match="H=3"):
        m(torch.randn(2, 3, 10))
    with pytest.raises(ValueError, match="3 dimensions"):
        m(torch.randn(4, 10))
    with pytest.raises(TypeError, match="floating"):
        m(torch.ones(1, 4, 10, dtype=torch.int64))
    with pytest.raises(ValueError, match="length"):
        SF.kernel(list(m.kernel_list), m.multiplier, m.kernel_norm, 0)
    with pytest.raises(ValueError, match="taps"):
        SF.conv(torch.randn(1, 4, 5), torch.randn(1, 4, 6))


def test_extra_repr():
    text = repr(SGConv(4, 100, channels=2, bidirectional=True, transposed=False, dropout=0.1))
    for part in ("d_model=4", "l_max=100", "channels=2", "n_scales=2", "kernel_length=128",
                 "bidirectional=True", "transposed=False", "dropout=0.1"):
        assert part in text


def test_dropout_only_in_training():
    torch.manual_seed(21)
    m = SGConv(4, 32, dropout=0.5)
    u = torch.randn(2, 4, 31)
    m.eval()
    with torch.no_grad():
        y_eval = m(u)
    m.train()
    torch.manual_seed(5)
    a = m(u)
    torch.manual_seed(5)
    b = m(u)
    assert torch.equal(a, b) and not torch.equal(a, y_eval)


def test_functional_kernel_and_conv_match_reference():
    sd = released_state(22, d_model=3, l_max=64, kernel_dim=8, channels=2, bidirectional=True)
    ws = [sd[f"kernel_list.{i}"] for i in range(4)]
    k = SF.kernel(ws, sd["multiplier"], sd["kernel_norm"], 90)
    st = {k_: np.asarray(v) for k_, v in sd.items()}
    cfg = sgconv.SGConvConfig(d_model=3, l_max=64, kernel_dim=8, channels=2, bidirectional=True)
    assert k.shape == (4, 3, 90)
    assert_close(k.numpy(), reference.kernel(st, 90), kernel_bound(st, cfg, 90, "float64"),
                 "functional.kernel, seed 22")
    u = torch.randn(2, 3, 90, dtype=torch.float64)
    k20 = k[..., :20]                                        # exact taps given to both sides
    for block in (None, 0, 20):                              # 20: overlap-add blocks
        y = SF.conv(u, k20, sd["D"], bidirectional=True, block_size=block)
        assert_close(y.numpy(), reference.conv(u.numpy(), k20.numpy(), st["D"], True),
                     conv_bound(u.numpy(), k20.numpy(), st["D"], True, "float64"),
                     f"functional.conv block_size={block}")


# --- CUDA (skipped with the reason where there is none) ----------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.cuda is not available")


@cuda
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cuda_module_matches_reference(dtype):
    case = CASES[3]
    m = _module(case, dtype, seed=23).cuda()
    u = torch.from_numpy(np.random.default_rng(23).standard_normal((2, 3, case["L"]))
                         .astype(dtype))
    y = m(u.cuda())
    assert y.is_cuda
    check_layer(m.cpu(), u, y.cpu(), dtype, f"CUDA {case['kw']} dtype={dtype}")


@cuda
def test_cuda_gradients_and_half():
    torch.manual_seed(24)
    m = SGConv(3, 32, kernel_dim=4, channels=2, bidirectional=True, dtype=torch.float64).cuda()
    u = torch.randn(2, 3, 21, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda u: m(u), (u,), eps=1e-6, atol=1e-8, rtol=1e-6)
    m32 = SGConv(3, 32, kernel_dim=4).cuda()
    x = torch.randn(2, 3, 50, device="cuda")
    for half in (torch.float16, torch.bfloat16):
        assert torch.equal(m32(x.to(half)), m32(x.to(half).float()).to(half))
    with torch.autocast("cuda", dtype=torch.float16):
        assert m32(x).dtype == torch.float32
