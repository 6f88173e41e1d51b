"""Checks of a torch SGConv module's outputs and gradients against the float64 reference,
within the conformance suite's tolerance rule (conformance/tolerance.py).  Shared by
test_torch.py and the compiled-training script torch_compile_check.py."""

from __future__ import annotations

import numpy as np

import reference
from conformance import oracle
from conformance.tolerance import assert_close, layer_bound, layer_vjp_bound, mixing_vjp_bound


def state_of(module) -> dict:
    """A module's state_dict as NumPy float64 arrays (the reference's input layout)."""
    return {k: v.detach().cpu().double().numpy() if v.is_floating_point()
            else v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def check_layer(module, u, y, dtype, what, *, other=None, informative: float = 1e-3):
    """y (module(u)) against reference.layer within the conformance bound; with ``other``
    (another computation of the same output), also y against other within twice it (each
    is within the bound of the truth).

    informative: the bound must stay below this fraction of the output's size, so that it
    can fail (the rule's bound is normwise, so relative to single outputs it grows like
    sqrt(L): 1e-3 suits L up to a few hundred, 1e-2 L of thousands; a wrong kernel, D or
    mixing changes outputs by O(1) relative).
    """
    st = state_of(module)
    cfg = module.config
    u64 = u.detach().cpu().double().numpy()
    ub = u64 if module.transposed else u64.swapaxes(1, 2)                # (B, H, L)
    want = reference.layer(st, ub, cfg.bidirectional, True, cfg.interpolation)
    bound = layer_bound(st, cfg, ub, dtype)                              # (B, H, L)
    got = y.detach().cpu().double().numpy()
    if not module.transposed:
        got = got.swapaxes(1, 2)
    # the bound must be able to fail: far below the output's own size
    assert bound.max() < informative * np.abs(want).max(), what
    assert_close(got, want, bound, what)
    if other is not None:
        alt = other.detach().cpu().double().numpy()
        alt = alt if module.transposed else alt.swapaxes(1, 2)
        assert_close(got, alt, 2 * bound, what + " (against the other computation)")


def check_grads(module, u, g, du, dtype, what, *, mixing: bool = False, other=None):
    """du and the parameters' .grad against the reference's exact adjoint (conformance bound):
    u, D and every sub-kernel; with ``mixing``, the output linear's weight and bias too.

    other: another computation of the same gradients ({"u": du, and the parameter names of
    ``module.named_parameters()``}), held to each within twice the bound (each is within
    the bound of the truth)."""
    st, cfg = state_of(module), module.config
    u64, g64 = u.detach().cpu().double().numpy(), g.detach().cpu().double().numpy()
    gu, gws, gD = oracle.layer_vjp(st, cfg, u64, g64)
    bu, bws, bD = layer_vjp_bound(st, cfg, u64, g64, dtype)
    checks = [("u", du, gu, bu), ("D", module.D.grad, gD, bD)]
    checks += [(f"kernel_list.{i}", w.grad, gw, bw)
               for i, (w, gw, bw) in enumerate(zip(module.kernel_list, gws, bws))]
    if mixing:
        gW, gb = oracle.mixing_vjp(st, cfg, u64, g64)
        bW, bb = mixing_vjp_bound(st, cfg, u64, g64, dtype)
        lin = module.output_linear
        checks += [("output_linear.weight", lin.weight.grad, gW, bW),
                   ("output_linear.bias", lin.bias.grad, gb, bb)]
    for name, got, want, bound in checks:
        got = got.detach().cpu().double().numpy()
        assert_close(got, want, bound, f"{what}: d {name}")
        if other is not None:
            alt = other[name].detach().cpu().double().numpy()
            assert_close(got, alt, 2 * bound, f"{what}: d {name} (against the other computation)")
