"""sgconv.jax on several devices, held to one device and to the float64 reference.

Run by tests/test_distributed_jax.py in a subprocess (4 CPU devices need XLA_FLAGS set
before JAX starts, so never in the pytest process)::

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/distributed_jax_check.py

Prints one ``PASS`` line per case; exits non-zero on the first failure.

- Data parallel: ``sgconv.jax.apply`` on a batch sharded over a mesh of 2 and of 4 devices
  (NamedSharding), under jit: the output and the gradients of a batch-mean loss (input,
  sub-kernels, D, mixing) against the reference within the rule's bound, and against the
  unsharded computation within twice it.
- Context parallel: ``sgconv.jax.distributed.context_apply`` over a mesh axis of 2 and 4
  devices, jitted and differentiated: causal and bidirectional, L > l_max, uneven L and H
  (H < P too), the (B, L, H) layout, Auto and Explicit mesh axes; and
  ``context_apply_shard`` inside a hand-written ``shard_map``.  Output and gradients
  against the reference (bound) and against ``sgconv.jax.apply`` on one device (twice).

Tolerance (conformance/tolerance.py): either parallel form computes every output with the
same FFT convolution of length n >= 2L - 1 per channel as one device does (only which
device runs which channel or example changes; the zero padding of an uneven L adds
taps that multiply zeros), so the single-layer rule applies as it is.  Gradients of the
replicated parameters are sums over devices of per-device parts: a few more additions,
each rounding at most eps of the total, inside the rule's eps log2(n) terms.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec  # noqa: E402

import reference  # noqa: E402
import sgconv  # noqa: E402
import sgconv.jax as sgj  # noqa: E402
from conformance import oracle  # noqa: E402
from conformance.tolerance import (assert_close, layer_bound, layer_vjp_bound,  # noqa: E402
                                   mixing_vjp_bound)
from sgconv.jax.distributed import context_apply, context_apply_shard  # noqa: E402

BK = sgconv.backend("jax")
B = 2


def state_of(params) -> dict:
    return oracle.params_state(params, BK)


def check(params, u, g, y, grads, what, *, others=()):
    """y = layer(u) and grads = (d params, d u) of <layer(u), g> against the reference within
    the rule's bound, and against each of ``others`` (the same, computed another way)
    within twice it.  u, g, y: (B, H, L)."""
    st, cfg = state_of(params), params.config
    u64, g64 = np.asarray(u, np.float64), np.asarray(g, np.float64)
    want = reference.layer(st, u64, cfg.bidirectional, True, cfg.interpolation)
    bound = layer_bound(st, cfg, u64, "float32")
    assert bound.max() < 3e-3 * np.abs(want).max(), what + ": bound too loose to fail"
    gu, gws, gD = oracle.layer_vjp(st, cfg, u64, g64)
    gW, gb = oracle.mixing_vjp(st, cfg, u64, g64)
    bu, bws, bD = layer_vjp_bound(st, cfg, u64, g64, "float32")
    bW, bb = mixing_vjp_bound(st, cfg, u64, g64, "float32")

    def flat(y, grads):
        dp, du = grads
        items = [("output", y, want, bound), ("d u", du, gu, bu), ("d D", dp.D, gD, bD),
                 ("d out_weight", dp.out_weight, gW, bW), ("d out_bias", dp.out_bias, gb, bb)]
        return items + [(f"d kernels[{i}]", w, gw, bw)
                        for i, (w, gw, bw) in enumerate(zip(dp.kernels, gws, bws))]

    mine = flat(y, grads)
    for name, got, exact, b in mine:
        assert_close(np.asarray(got), exact, b, f"{what}: {name}")
    for label, (y_o, grads_o) in others:
        for (name, got, _, b), (_, alt, _, _) in zip(mine, flat(y_o, grads_o)):
            assert_close(np.asarray(got), np.asarray(alt), 2 * b, f"{what}: {name} vs {label}")
    print(f"PASS {what}", flush=True)


def value_and_grads(fn, params, u, g):
    """(fn(params, u), d/d(params, u) of <fn(params, u), g>), jitted."""
    y = jax.jit(fn)(params, u)
    grads = jax.jit(jax.grad(lambda p, x: jnp.sum(fn(p, x) * g), argnums=(0, 1)))(params, u)
    return y, grads


def mesh_of(P, name, kind=AxisType.Auto):
    return jax.make_mesh((P,), (name,), axis_types=(kind,), devices=jax.devices()[:P])


def data_parallel():
    cfg = sgconv.SGConvConfig(d_model=4, l_max=64, bidirectional=True)
    params = sgj.init(3, cfg)
    L, batch = 97, 4
    rng = np.random.default_rng(0)
    u = jnp.asarray(rng.standard_normal((batch, 4, L)), jnp.float32)
    g = jnp.asarray(rng.standard_normal((batch, 4, L)), jnp.float32)
    single = value_and_grads(sgj.apply, params, u, g)
    for P in (2, 4):
        mesh = mesh_of(P, "data")
        batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
        u_s, g_s = jax.device_put(u, batch_sharding), jax.device_put(g, batch_sharding)
        y, grads = value_and_grads(sgj.apply, params, u_s, g_s)
        assert y.sharding.spec[0] == "data", y.sharding   # the batch stayed sharded
        check(params, u, g, y, grads, f"jax data parallel: apply on a batch of {batch} sharded "
              f"over {P} devices, {cfg}, L={L}", others=[("unsharded", single)])


CONTEXT_CASES = [
    # P, H, C, l_max, L, bidirectional, transposed, mesh axis type
    (2, 4, 1, 64, 97, False, True, AxisType.Auto),         # L odd > l_max: padded to 98
    (2, 5, 2, 128, 300, True, False, AxisType.Explicit),   # uneven H, (B, L, H), Explicit
    (4, 6, 1, 128, 301, False, True, AxisType.Explicit),   # uneven L and H
    (4, 3, 1, 64, 130, True, True, AxisType.Auto),         # H < P: a device convolves zeros
    (4, 8, 2, 512, 512, True, True, AxisType.Auto),        # even sizes, upsampled scales
]


def context_parallel():
    for P, H, C, l_max, L, bidirectional, transposed, kind in CONTEXT_CASES:
        cfg = sgconv.SGConvConfig(d_model=H, l_max=l_max, channels=C,
                                  bidirectional=bidirectional)
        params = sgj.init(L, cfg)
        rng = np.random.default_rng(L)
        u = jnp.asarray(rng.standard_normal((B, H, L)), jnp.float32)
        g = jnp.asarray(rng.standard_normal((B, H, L)), jnp.float32)
        mesh = mesh_of(P, "seq", kind)
        swap = (lambda x: x) if transposed else (lambda x: jnp.swapaxes(x, 1, 2))

        def parallel(p, x):
            return swap(context_apply(p, swap(x), mesh=mesh, axis_name="seq",
                                      transposed=transposed))

        if kind == AxisType.Explicit:
            with jax.set_mesh(mesh):
                y, grads = value_and_grads(parallel, params, u, g)
        else:
            y, grads = value_and_grads(parallel, params, u, g)
        check(params, u, g, y, grads,
              f"jax context parallel: context_apply over {P} devices ({kind}), {cfg}, L={L}, "
              f"B={B}, transposed={transposed}",
              others=[("one device", value_and_grads(sgj.apply, params, u, g))])


def context_parallel_shard():
    """context_apply_shard inside a hand-written shard_map (a model written per device)."""
    P, L = 4, 256
    cfg = sgconv.SGConvConfig(d_model=4, l_max=128)
    params = sgj.init(5, cfg)
    rng = np.random.default_rng(5)
    u = jnp.asarray(rng.standard_normal((B, 4, L)), jnp.float32)
    g = jnp.asarray(rng.standard_normal((B, 4, L)), jnp.float32)
    mesh = mesh_of(P, "seq")
    spec = PartitionSpec(None, None, "seq")
    layer = jax.shard_map(lambda p, x: context_apply_shard(p, x, "seq"), mesh=mesh,
                          in_specs=(PartitionSpec(), spec), out_specs=spec)
    check(params, u, g, *value_and_grads(layer, params, u, g),
          f"jax context parallel: context_apply_shard in shard_map over {P} devices, {cfg}, "
          f"L={L}", others=[("one device", value_and_grads(sgj.apply, params, u, g))])


def main():
    assert len(jax.devices()) >= 4, ("run with XLA_FLAGS=--xla_force_host_platform_device_"
                                      "count=4 (JAX sees %d devices)" % len(jax.devices()))
    data_parallel()
    context_parallel()
    context_parallel_shard()


if __name__ == "__main__":
    main()
