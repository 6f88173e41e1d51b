"""Compiled training of ``sgconv.torch.SGConv`` held to eager and to the float64 reference.

Run by tests/test_torch_compile.py in a subprocess with a time limit, so that a crash in
compiled code (PyTorch <= 2.13's Inductor once corrupted the heap here) fails a test
instead of killing pytest::

    python tests/torch_compile_check.py '{"bidirectional": false, "channel_chunk": null,
                                          "cases": [[255, 255], [1024, 3000]]}'

Each case [l_max, L]: a module of width H=4 with l_max, seeded by L, compiled with
``torch.compile(fullgraph=True)``; one forward and backward (B=2, float32, a random output
gradient) compiled and one eager.  Both outputs and every gradient (input, D, each
sub-kernel, the output linear's weight and bias) are checked against the reference's
exact values with the conformance bound, and compiled against eager with twice it (each
is within the bound of the truth).  Prints one PASS line per case; exits non-zero on the
first failure.
"""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import torch  # noqa: E402

from sgconv.torch import SGConv  # noqa: E402
from torch_checks import check_grads, check_layer  # noqa: E402

H, B = 4, 2


def run(call, module, u, g):
    """(output, {name: gradient}) of one forward (``call``: the module or its compiled form)
    and backward, the gradients read off ``module``'s parameters."""
    for p in module.parameters():
        p.grad = None
    u = u.detach().requires_grad_(True)
    y = call(u)
    y.backward(g)
    grads = {name: p.grad.detach().clone() for name, p in module.named_parameters()}
    grads["u"] = u.grad.detach().clone()
    return y.detach(), grads


def main(spec: dict) -> None:
    torch.set_num_threads(2)          # the Inductor bug showed with several threads only
    for l_max, L in spec["cases"]:
        what = (f"compiled SGConv(H={H}, l_max={l_max}, bidirectional={spec['bidirectional']}, "
                f"channel_chunk={spec['channel_chunk']}) at L={L}, B={B}, float32, seed {L}")
        print("RUN", what, flush=True)
        torch.manual_seed(L)
        m = SGConv(H, l_max, bidirectional=spec["bidirectional"],
                   channel_chunk=spec["channel_chunk"])
        with torch.no_grad():                          # away from the initial values
            for w in m.kernel_list:
                w.add_(0.5 * torch.randn_like(w))
        u, g = torch.randn(B, H, L), torch.randn(B, H, L)
        compiled = torch.compile(m, fullgraph=True, dynamic=False)
        y_c, grads_c = run(compiled, m, u, g)
        y_e, grads_e = run(m, m, u, g)
        check_layer(m, u, y_c, "float32", what + ": output", other=y_e, informative=1e-2)
        check_layer(m, u, y_e, "float32", what + " (eager): output", informative=1e-2)
        for grads, label in ((grads_c, "compiled"), (grads_e, "eager")):
            for name, p in m.named_parameters():
                p.grad = grads[name]
            check_grads(m, u, g, grads["u"], "float32", f"{what} ({label})", mixing=True)
        print("PASS", what, flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
