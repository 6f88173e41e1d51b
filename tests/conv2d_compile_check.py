"""Compiled training of ``sgconv.torch.SGConv2d`` held to eager and to the float64 reference.

Run by tests/test_conv2d_torch.py in a subprocess with a time limit, so that a crash in
compiled code (PyTorch <= 2.13's Inductor corrupts the heap on some fusions with the
sub-kernels' upsampling gradient: sgconv/backends/_torch_ops2d.py) fails a test instead of
killing pytest::

    python tests/conv2d_compile_check.py '[[4, 56, 56, 1, 8, true, null]]'

Each case [H, X, Y, C, d, transposed, channel_chunk]: a module built for (X, Y), trained
weights (moved off their initial values), compiled with ``torch.compile(fullgraph=True)``;
one forward and backward (B=2, float32, a random output gradient) compiled and one eager.
Both outputs and the gradients of u, D and every sub-kernel of both axes are checked
against the reference's exact values with the conformance bound (conformance/tolerance2d.py),
and compiled against eager with twice it.  Prints one PASS line per case.
"""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import numpy as np  # noqa: E402
import torch  # noqa: E402

import reference  # noqa: E402
from conformance import oracle2d, tolerance2d  # noqa: E402
from conformance.tolerance import assert_close  # noqa: E402
from sgconv.torch import SGConv2d  # noqa: E402
from torch_compile_check import run  # noqa: E402  (one forward and backward, the gradients)

B = 2


def channels_first(x, module):
    x = x.detach().double().numpy()
    return x if module.transposed else np.moveaxis(x, 3, 1)


def check(module, u, g, results, what):
    """Every result (output, gradients) against the reference, and the first against the
    others within twice the bound."""
    st = {k: v.detach().double().numpy() for k, v in module.state_dict().items()}
    cfg = module.config
    u64, g64 = channels_first(u, module), channels_first(g, module)
    want = reference.layer2d(st, u64, True, cfg.interpolation)
    bound = tolerance2d.layer2d_bound(st, cfg, u64, "float32")
    # the bound must be able to fail: far below the output (normwise, it grows like sqrt(X Y))
    assert bound.max() < 1e-2 * np.abs(want).max(), f"{what}: the bound could not fail"
    gu, gwx, gwy, gD = oracle2d.layer2d_vjp(st, cfg, u64, g64)
    bu, bwx, bwy, bD = tolerance2d.layer2d_vjp_bound(st, cfg, u64, g64, "float32")
    Nx = cfg.num_scales[0]
    for label, (y, grads) in results.items():
        w = f"{what} ({label})"
        assert_close(channels_first(y, module), want, bound, w + ": output")
        assert_close(channels_first(grads["u"], module), gu, bu, w + ": du")
        assert_close(grads["D"].double().numpy(), gD, bD, w + ": dD")
        for i, (want_w, b_w) in enumerate(zip(gwx + gwy, bwx + bwy)):
            name = f"kernel_list_x.{i}" if i < Nx else f"kernel_list_y.{i - Nx}"
            assert_close(grads[name].double().numpy(), want_w, b_w, f"{w}: d {name}")
    (y0, g0), (y1, g1) = results.values()
    assert_close(channels_first(y0, module), channels_first(y1, module), 2 * bound,
                 what + ": compiled vs eager output")
    assert_close(channels_first(g0["u"], module), channels_first(g1["u"], module), 2 * bu,
                 what + ": compiled vs eager du")


def main(cases) -> None:
    torch.set_num_threads(2)          # the Inductor bug showed with several threads only
    for H, X, Y, C, d, transposed, chunk in cases:
        what = (f"compiled SGConv2d(H={H}, sizes=({X}, {Y}), channels={C}, kernel_dim={d}, "
                f"transposed={transposed}, channel_chunk={chunk}), B={B}, float32, seed {X + Y}")
        print("RUN", what, flush=True)
        torch.manual_seed(X + Y)
        m = SGConv2d(H, (X, Y), channels=C, kernel_dim=d, transposed=transposed,
                     channel_chunk=chunk)
        with torch.no_grad():                               # away from the initial values
            for w in [*m.kernel_list_x, *m.kernel_list_y]:
                w.add_(0.5 * torch.randn_like(w))
        shape = (B, H, X, Y) if transposed else (B, X, Y, H)
        u, g = torch.randn(shape), torch.randn(shape)
        compiled = torch.compile(m, fullgraph=True, dynamic=False)
        results = {"compiled": run(compiled, m, u, g), "eager": run(m, m, u, g)}
        check(m, u, g, results, what)
        print("PASS", what, flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
