"""sgconv.torch beyond one device, held to one device and to the float64 reference.

Run by tests/test_distributed_torch.py in a subprocess with a time limit::

    python tests/distributed_torch_check.py <P> <cases>       # cases: comma-separated names

It starts P processes (torch.multiprocessing, spawn) joined in a gloo process group on
127.0.0.1 (a free port), with ``timeout`` on the group so that a collective that waits for a
rank that never comes raises instead of hanging; a rank that raises makes the parent
terminate the others and exit non-zero.  Rank 0 prints one ``PASS <case>`` line per case.

Cases:

- ``context``: ContextParallelSGConv against the reference and the single-device layer,
  P in {2, 4}: outputs and gradients (input, sub-kernels, D, mixing weight and bias),
  causal and bidirectional, L > l_max, uneven L and H (H < P too), (B, L, H) layout,
  channel chunks, the evaluation cache.  float32; tolerance below.
- ``data``: DDP and FSDP2 (fully_shard) training of a stack of two SGConv layers against
  single-process training on the same global batch: gradients after one step and weights
  after three SGD steps.  float64; tolerance below.
- ``errors``: ranks with different batch sizes get the same clear error on every rank;
  sync_gradients(average=True) gives the mean of the ranks' gradients;
  a collective one rank never joins raises on the other after the group's timeout.
- ``fail``: rank 1 raises; used to check that the parent exits non-zero, quickly.

Tolerances (conformance/tolerance.py).  Context parallel computes each output the way the
single-device layer does (the same FFT of length n >= 2L - 1 per channel, the same
GELU and mixing), only on another device, so the rule's single-layer bounds apply as
they are: CP within the bound of the reference, and within twice it of the single-device
layer (both are within the bound of the truth).  Parameter gradients are sums of the
ranks' parts (sync_gradients): a few more additions of partial sums, each rounding to at
most eps of the total, far inside the rule's eps log2(n) terms.

Data parallel runs in float64 and is held to the float32 rule's bounds of each layer's
gradients, evaluated at the layer's inputs and output gradients.  Why that is right: the
two runs differ only in how sums over the batch are grouped (two ranks' partial sums,
all-reduced, against one sum over the whole batch), and the error of either run, float64
rounding carried through both layers, is of order eps64 log2(n) times the operands'
norms times the layers' gains (a few units here), 2^29 times below the same terms with
float32's eps: the float32 bound is a safe upper bound on the difference, and still
1e-6 of the gradients, while a real fault (a missing all-reduce, sum for average, a
wrong shard) moves them by 10% or more.  After K SGD steps the weights differ by at most
lr times the sum of each step's gradient difference: lr * sum_k bound_k.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

GROUP_TIMEOUT_S = 60          # a collective waiting longer than this raises on its rank


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- context parallel ------------------------------------------------------------------

# (P, H, C, l_max, L, bidirectional, transposed, channel_chunk): the cases each group runs
CONTEXT_CASES = {
    2: [(4, 1, 64, 97, False, True, None),        # L odd, > l_max: uneven L, padded kernel
        (5, 2, 128, 300, True, True, None),       # uneven H, 2 heads, bidirectional
        (3, 1, 256, 256, False, False, 1)],       # (B, L, H), upsampled scales, chunks of 1
    4: [(6, 1, 128, 301, False, True, None),      # uneven L and H
        (3, 1, 64, 130, True, True, None),        # H < P: one rank convolves nothing
        (8, 2, 512, 512, True, True, 1)],         # even sizes, 2 heads, chunks
}


def _gather_time(x, lengths, axis):
    """Every rank's slice along ``axis`` (uneven), joined: the whole sequence, on every rank."""
    P = dist.get_world_size()
    most = max(lengths)
    pad = [0, 0] * (x.ndim - 1 - axis) + [0, most - x.shape[axis]]
    padded = torch.nn.functional.pad(x.detach(), pad).contiguous()
    parts = [torch.empty_like(padded) for _ in range(P)]
    dist.all_gather(parts, padded)
    return torch.cat([p.narrow(axis, 0, n) for p, n in zip(parts, lengths)], dim=axis)


def run_context(rank: int, P: int) -> None:
    from sgconv.torch import SGConv
    from sgconv.torch.distributed import ContextParallelSGConv, split_sizes, sync_gradients
    from torch_checks import check_grads, check_layer

    B = 2
    for H, C, l_max, L, bidirectional, transposed, chunk in CONTEXT_CASES[P]:
        what = (f"ContextParallelSGConv P={P} H={H} C={C} l_max={l_max} L={L} "
                f"bidirectional={bidirectional} transposed={transposed} channel_chunk={chunk} "
                f"B={B} float32 seed {L}")
        torch.manual_seed(L + rank)               # ranks draw differently: the broadcast fixes it
        single = SGConv(H, l_max, channels=C, bidirectional=bidirectional,
                        transposed=transposed, channel_chunk=chunk)
        cp = ContextParallelSGConv.from_module(single)   # rank 0's weights everywhere
        single.load_state_dict(cp.state_dict())
        gen = torch.Generator().manual_seed(L)
        shape = (B, H, L) if transposed else (B, L, H)
        u, g = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
        axis = 2 if transposed else 1
        lengths = split_sizes(L, P)
        start = sum(lengths[:rank])
        u_mine = u.narrow(axis, start, lengths[rank]).clone().requires_grad_(True)
        y_mine = cp(u_mine)
        assert y_mine.shape == u_mine.shape, (what, y_mine.shape)
        y_mine.backward(g.narrow(axis, start, lengths[rank]))
        sync_gradients(cp)
        grads = {n: p.grad.clone() for n, p in cp.named_parameters()}
        # an input that needs no gradient (a model's first layer): the same parameter
        # gradients, and every rank's backward still joins the collectives (H < P too)
        cp.zero_grad()
        cp(u_mine.detach()).backward(g.narrow(axis, start, lengths[rank]))
        sync_gradients(cp)
        for n, p in cp.named_parameters():
            assert torch.equal(p.grad, grads[n]), f"{what}: d {n} with a constant input"
        y = _gather_time(y_mine, lengths, axis)
        du = _gather_time(u_mine.grad, lengths, axis)
        with torch.no_grad():                     # the evaluation path: cached spectrum
            cp.eval()
            y_eval = _gather_time(cp(u.narrow(axis, start, lengths[rank])), lengths, axis)
            again = _gather_time(cp(u.narrow(axis, start, lengths[rank])), lengths, axis)
        u_single = u.clone().requires_grad_(True)
        y_single = single(u_single)
        y_single.backward(g)
        if rank == 0:
            check_layer(cp, u, y, "float32", what, other=y_single, informative=3e-3)
            check_layer(cp, u, y_eval, "float32", what + " (eval, cached spectrum)",
                        other=y_single, informative=3e-3)
            assert torch.equal(y_eval, again), what + ": the cached spectrum changed the output"
            du_t = du if transposed else du.transpose(1, 2)
            u_t, g_t = (u, g) if transposed else (u.transpose(1, 2), g.transpose(1, 2))
            other = {n: p.grad for n, p in single.named_parameters()}
            other["u"] = u_single.grad if transposed else u_single.grad.transpose(1, 2)
            check_grads(cp, u_t, g_t, du_t, "float32", what, mixing=True, other=other)
            print(f"PASS context {what}", flush=True)
    # dropout in training: each rank masks its own slice with its own generator (there is no
    # single-device twin to match): the output moves away from evaluation's and stays finite
    cp = ContextParallelSGConv(4, 64, dropout=0.5)
    u_mine = torch.randn(2, 4, 40, generator=torch.Generator().manual_seed(rank))
    y_drop = cp(u_mine)
    cp.eval()
    y_eval = cp(u_mine)
    assert torch.isfinite(y_drop).all() and not torch.allclose(y_drop, y_eval), "dropout"


# --- data parallel -----------------------------------------------------------------------

def _stack(seed: int):
    from sgconv.torch import SGConv
    torch.manual_seed(seed)
    return torch.nn.Sequential(SGConv(4, 64, dtype=torch.float64),
                               SGConv(4, 64, bidirectional=True, dtype=torch.float64))


DP_B, DP_L, DP_STEPS, DP_LR = 4, 80, 3, 0.1


def _dp_data():
    gen = torch.Generator().manual_seed(7)
    u = torch.randn(DP_B, 4, DP_L, generator=gen, dtype=torch.float64)
    g = torch.randn(DP_B, 4, DP_L, generator=gen, dtype=torch.float64)
    return u, g


def _loss(model, u, g):
    """The mean over the batch of <model(u)_b, g_b>: the output gradient is g / B, exact."""
    return (model(u) * g).sum() / u.shape[0]


def _single_run():
    """Single-process training on the global batch: per step, the gradients, and the bound on
    them (the float32 rule at each layer's input and output gradient); the final weights."""
    from conformance.tolerance import layer_vjp_bound, mixing_vjp_bound
    from torch_checks import state_of

    model = _stack(0)
    u, g = _dp_data()
    opt = torch.optim.SGD(model.parameters(), lr=DP_LR)
    steps = []
    for _ in range(DP_STEPS):
        inputs, grads_out = [], []

        def record(module, args, out):
            inputs.append(args[0].detach())
            out.register_hook(grads_out.append)

        hooks = [m.register_forward_hook(record) for m in model]
        opt.zero_grad()
        _loss(model, u, g).backward()
        for h in hooks:
            h.remove()
        grads_out.reverse()                                # recorded last layer first
        bounds = {}
        for j, (layer, x, gy) in enumerate(zip(model, inputs, grads_out)):
            st, cfg = state_of(layer), layer.config
            x64, g64 = x.numpy(), gy.detach().numpy()
            _, bws, bD = layer_vjp_bound(st, cfg, x64, g64, "float32")
            bW, bb = mixing_vjp_bound(st, cfg, x64, g64, "float32")
            for i, bw in enumerate(bws):
                bounds[f"{j}.kernel_list.{i}"] = bw
            bounds.update({f"{j}.D": bD, f"{j}.output_linear.weight": bW,
                           f"{j}.output_linear.bias": bb})
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        steps.append((grads, bounds))
        opt.step()
    return steps, {n: p.detach().clone() for n, p in model.named_parameters()}


def _check_dp(kind: str, rank: int, grads_1: dict, weights: dict, steps, final) -> None:
    from conformance.tolerance import assert_close

    what = (f"{kind}: 2 ranks x B={DP_B // 2} against 1 process x B={DP_B}, two SGConv layers "
            f"(H=4, l_max=64, causal then bidirectional), L={DP_L}, float64, SGD lr={DP_LR}")
    for name, bound in steps[0][1].items():
        want = steps[0][0][name].numpy()
        # informative: a factor-2 fault (a sum for a mean) or a missing reduction must fail
        assert np.max(bound) < 0.1 * np.abs(want).max(), f"{what}: bound too loose for {name}"
        assert_close(grads_1[name].numpy(), want, bound,
                     f"{what}: gradient of {name} after one step")
    for name in final:
        bound = DP_LR * sum(np.asarray(b[name]) for _, b in steps)
        assert_close(weights[name].numpy(), final[name].numpy(), bound,
                     f"{what}: {name} after {DP_STEPS} steps")
    if rank == 0:
        print(f"PASS data {what}", flush=True)


def run_data(rank: int, P: int) -> None:
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    steps, final = _single_run()
    u, g = _dp_data()
    per = DP_B // P
    u_mine, g_mine = u[rank * per:(rank + 1) * per], g[rank * per:(rank + 1) * per]

    def train(model, full):
        opt = torch.optim.SGD(model.parameters(), lr=DP_LR)
        first = None
        for _ in range(DP_STEPS):
            opt.zero_grad()
            _loss(model, u_mine, g_mine).backward()
            if first is None:
                first = {n: full(p.grad).detach().clone() for n, p in model.named_parameters()}
            opt.step()
        return first, {n: full(p).detach().clone() for n, p in model.named_parameters()}

    ddp = DistributedDataParallel(_stack(0))
    grads_1, weights = train(ddp, lambda t: t)
    strip = lambda d: {k.removeprefix("module."): v for k, v in d.items()}  # noqa: E731
    _check_dp("DDP", rank, strip(grads_1), strip(weights), steps, final)

    model = _stack(0)
    for layer in model:
        fully_shard(layer)
    fully_shard(model)
    grads_1, weights = train(model, lambda t: t.full_tensor())
    _check_dp("FSDP2 (fully_shard)", rank, grads_1, weights, steps, final)


# --- errors ------------------------------------------------------------------------------

def run_errors(rank: int, P: int) -> None:
    from sgconv.torch.distributed import ContextParallelSGConv, sync_gradients

    cp = ContextParallelSGConv(3, 32)
    u = torch.randn(1 + rank, 3, 10)                        # batch sizes differ by rank
    try:
        cp(u)
    except ValueError as exc:
        assert "different batch sizes" in str(exc), exc
    else:
        raise AssertionError("ranks with different batch sizes were not refused")
    # sync_gradients(average=True): the mean of the ranks' gradients
    cp(torch.randn(1, 3, 10 + rank)).pow(2).sum().backward()
    local = {n: p.grad.clone() for n, p in cp.named_parameters()}
    sync_gradients(cp, average=True)
    for n, p in cp.named_parameters():
        total = local[n].clone()
        dist.all_reduce(total)
        assert torch.equal(p.grad, total / P), f"average of d {n}"
    # a collective that one rank never joins: the other's wait ends in an error
    group = dist.new_group(timeout=datetime.timedelta(seconds=3))
    if rank == 0:
        start = time.monotonic()
        try:
            dist.all_reduce(torch.ones(1), group=group)
        except RuntimeError:
            waited = time.monotonic() - start
            assert waited < 30, waited
        else:
            raise AssertionError("a collective without its partner did not raise")
    dist.barrier()                                          # on the default group
    if rank == 0:
        print("PASS errors: batch sizes refused on every rank; gradients averaged; a lone "
              "collective timed out", flush=True)


def run_fail(rank: int, P: int) -> None:
    if rank == 1:
        raise RuntimeError("planted failure on rank 1")
    dist.barrier()                                          # rank 0 waits for rank 1 here


RUNS = {"context": run_context, "data": run_data, "errors": run_errors, "fail": run_fail}


def worker(rank: int, P: int, port: int, cases: list) -> None:
    torch.set_num_threads(1)                     # P processes share the machine's cores
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=P, timeout=datetime.timedelta(seconds=GROUP_TIMEOUT_S))
    try:
        for case in cases:
            if rank == 0:
                print(f"RUN {case} P={P}", flush=True)
            RUNS[case](rank, P)
    except BaseException:
        traceback.print_exc()
        raise
    finally:
        if case != "fail":
            dist.destroy_process_group()


def main(argv) -> None:
    P, cases = int(argv[0]), argv[1].split(",")
    unknown = [c for c in cases if c not in RUNS]
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; expected some of {sorted(RUNS)}")
    mp.spawn(worker, args=(P, free_port(), cases), nprocs=P, join=True)


if __name__ == "__main__":
    main(sys.argv[1:])
