"""``sgconv demo``: the main job.  Build a layer on the NumPy backend, run a long sequence
through it, and check the output in float64 against the bundled reference
(``sgconv.reference``, the repository's ``reference/``, which never imports sgconv)."""

from __future__ import annotations

import math
import os
import statistics
import time

import numpy as np

from ._common import CliError, bundled, fmt_int, int_at_least

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="the main job: a long sequence, checked in float64",
                       description="Build an SGConv layer on the NumPy backend, run a long "
                       "sequence through it, and check the output against the float64 "
                       "reference: the first --check-length outputs against the reference "
                       "layer's direct sums (causality makes them independent of the rest), and "
                       "outputs spread over the whole sequence against float64 direct sums. "
                       "Exit status 1 if a check fails.")
    p.add_argument("--length", type=int_at_least(1), default=65536, help="L (default 65536)")
    p.add_argument("--batch", type=int_at_least(1), default=2, help="B (default 2)")
    p.add_argument("--d-model", type=int_at_least(1), default=32, help="H (default 32)")
    p.add_argument("--check-length", type=int_at_least(1), default=2048,
                   help="prefix checked against the reference layer (default 2048)")
    p.add_argument("--positions", type=int_at_least(1), default=64,
                   help="outputs checked by direct sums (default 64)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed (default 0)")
    p.set_defaults(func=run)



def _layer_at(ref, state, u64, positions):
    """The layer's float64 output at the given times by direct sums (no FFT):

        y[b, c, h, t] = sum_{s=0..t} k[c, h, s] u[b, h, t-s] + D[c, h] u[b, h, t]
        out[b, :, t]  = W gelu(y[b, :, :, t].reshape(C*H)) + bias

    with k = reference.kernel(state, L) (C, H, L).  Returns (B, H, len(positions)).
    """
    D = state["D"]                                                 # (C, H)
    C, H = D.shape
    B, _, L = u64.shape
    k = ref.kernel(state, L)                                       # (C, H, L)
    W, bias = state["output_linear.weight"], state["output_linear.bias"]
    out = np.empty((B, H, len(positions)))
    for j, t in enumerate(positions):
        past = u64[:, :, t::-1]                                    # (B, H, t+1): u[t-s], s=0..t
        y = np.einsum("chs,bhs->bch", k[:, :, :t + 1], past)       # (B, C, H)
        y = y + D[None] * u64[:, None, :, t]                       # skip term D u
        out[:, :, j] = ref.gelu(y.reshape(B, C * H)) @ W.T + bias  # (B, H)
    return out


def run(args) -> int:
    import scipy

    import sgconv

    ref = bundled("reference")
    B, H, L, T = args.batch, args.d_model, args.length, min(args.check_length, args.length)
    try:
        config = sgconv.SGConvConfig(d_model=H, l_max=L)
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc)) from None
    with sgconv.using("numpy") as bk:
        print(f"sgconv {sgconv.__version__} demo on the numpy backend (numpy {np.__version__}, "
              f"scipy {scipy.__version__}; {bk.device_description()})")
        params = sgconv.init(config, seed=args.seed, dtype="float32")
        dense = config.kernel_rows * H * L
        first = ", ".join(map(str, config.scale_lengths[:4]))
        print(f"layer: SGConv d_model H={H}, l_max={fmt_int(L)}, d={config.kernel_dim}, "
              f"N={config.num_scales} scales (lengths {first}, ..., "
              f"{fmt_int(config.scale_lengths[-1])}), causal, float32, seed {args.seed}")
        print(f"  {fmt_int(config.num_kernel_parameters)} learned kernel weights (N*H*d) where a "
              f"dense kernel of length L needs {fmt_int(dense)} "
              f"({dense / config.num_kernel_parameters:,.0f}x more); "
              f"{fmt_int(config.num_parameters)} parameters in the whole layer")
        u = np.random.default_rng(args.seed + 1).standard_normal((B, H, L), dtype=np.float32)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            y = sgconv.apply(params, u)                            # (B, H, L)
            times.append(time.perf_counter() - t0)
    n = bk.next_fast_len(2 * L - 1)
    print(f"run: u (B={B}, H={H}, L={fmt_int(L)}) float32 ~ N(0, 1) -> sgconv.apply -> "
          f"{tuple(y.shape)} {y.dtype} in {1e3 * statistics.median(times):.1f} ms "
          f"(median of 3; one FFT of length {fmt_int(n)})")

    # Float32 FFT convolution: error ~ eps*log2(n) relative to the output's scale (SPEC,
    # "Precision"); +1 for the rounding of the result itself, and the factor 8 covers the
    # float32 kernel build, the GELU and the C*H-term mixing sum.  A wrong kernel, lag or
    # mixing gives errors of order 1.
    eps = float(np.finfo(np.float32).eps)
    tol = 8 * eps * (math.log2(n) + 1)
    state = {k: np.asarray(v, dtype=np.float64) for k, v in sgconv.to_state_dict(params).items()}
    u64 = u.astype(np.float64)                                     # the exact float32 input
    scale = float(np.max(np.abs(y)))
    checks = []

    # 1. Causality: outputs 0..T-1 depend only on inputs 0..T-1, so the long run's first T
    #    outputs must equal the reference layer (direct O(T^2) sums) on the first T inputs.
    prefix = ref.layer(state, u64[:, :, :T])                       # (B, H, T)
    err = float(np.max(np.abs(y[:, :, :T] - prefix)) / np.max(np.abs(prefix)))
    checks.append((f"first {fmt_int(T)} outputs vs reference.layer (float64 direct sums) on "
                   f"the first {fmt_int(T)} inputs", err))

    # 2. The far end of the long run: outputs at spread-out times up to t = L-1, each a
    #    float64 direct sum over its whole past with the reference's kernel (no FFT).
    rng = np.random.default_rng(args.seed + 2)
    low = T if T < L else 0                                        # past the prefix if any
    positions = np.unique(np.concatenate([
        [L - 1, L // 2, low], rng.integers(low, L, size=max(args.positions - 3, 0))]))
    direct = _layer_at(ref, state, u64, positions)                 # (B, H, P)
    err = float(np.max(np.abs(y[:, :, positions] - direct)) / scale)
    checks.append((f"{len(positions)} outputs spread over t = {fmt_int(int(positions.min()))}.."
                   f"{fmt_int(L - 1)} vs float64 direct sums over the whole past", err))

    ok = True
    print(f"oracle: the float64 reference {ref.__name__} ({os.path.dirname(ref.__file__)}), "
          f"which imports nothing from sgconv")
    print(f"checks (max |error| / max |output|; tolerance 8 eps32 (log2(n) + 1) = {tol:.1e}):")
    for what, err in checks:
        passed = err <= tol
        ok &= passed
        print(f"  {'PASS' if passed else 'FAIL'}  {err:.1e}  {what}")
    print("result: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1
