"""sgconv.torch.SGConv against the straightforward PyTorch SGConv, side by side in one run.

Run from the repository root::

    python asv_benchmarks/compare_torch.py                 # B=8, H=256, L=16384, 2 threads
    python asv_benchmarks/compare_torch.py --repeats 9 --threads 2 --long

Time: both modules hold the same weights and see the same input; each repeat times the
two one after the other, alternating which goes first, and the medians are reported
(the machine is shared and noisy; the median of interleaved runs is what that noise
affects least).  "forward" is evaluation mode under torch.no_grad() (sgconv then reuses
its cached kernel spectrum, which is the point of caching); "forward+backward" is
training mode, input requiring grad as in a stack of layers, backward from a fixed
random output gradient.

Peak memory: each (implementation, mode) runs in a fresh subprocess.  After one warm-up
call (so lazily built FFT plans and the kernel cache exist), the kernel's high-water mark
of resident memory is reset (writing 5 to /proc/self/clear_refs), one call runs, and the
reported peak is VmHWM minus the resident memory at the reset: the extra memory that one
call needed on top of the module, its input and the output gradient.  tracemalloc
cannot see PyTorch's CPU allocations, and on CPU torch has no allocator statistics;
large tensors are mmap'ed by glibc and returned on free, so resident memory follows what
is live.  Where clear_refs is unavailable, ru_maxrss minus the resident memory before
the call is used (an upper bound; the script says which).

Not an asv benchmark module: asv finds no timed names here (see bench_torch_layer.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _setup_paths():
    for path in (ROOT, HERE):
        if path not in sys.path:
            sys.path.insert(0, path)


def _make(impl: str, B: int, H: int, L: int, seed: int = 0, channel_chunk=None):
    """(module, u): SGConv's initial weights (seed), copied into the baseline for its row."""
    import torch
    from torch_straightforward import StraightforwardSGConv
    from sgconv.torch import SGConv

    torch.manual_seed(seed)
    module = SGConv(H, L, channel_chunk=channel_chunk)
    if impl == "straightforward":
        base = StraightforwardSGConv(H, L)
        state = dict(module.state_dict())
        del state["kernel_norm_initialized"]              # the baseline has no such flag
        base.load_state_dict(state, strict=True)
        module = base
    u = torch.randn(B, H, L, generator=torch.Generator().manual_seed(seed + 1))
    return module, u


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _hwm_kib() -> int | None:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _child(impl: str, mode: str, B: int, H: int, L: int, threads: int, chunk) -> dict:
    """One measured call in this (fresh) process; returns peak extra memory in MiB."""
    import torch

    torch.set_num_threads(threads)
    module, u = _make(impl, B, H, L, channel_chunk=chunk)
    if mode == "forward":
        module.eval()

        def call():
            with torch.no_grad():
                return module(u)
    else:
        module.train()
        u.requires_grad_(True)
        grad = torch.randn(B, H, L)

        def call():
            u.grad = None
            module.zero_grad(set_to_none=True)
            module(u).backward(grad)

    out = call()                                   # warm-up: FFT plans, kernel cache
    del out
    u.grad = None
    module.zero_grad(set_to_none=True)
    exact = _reset_hwm()
    before = _rss_kib()
    t0 = time.perf_counter()
    call()                                         # its output is part of what it needed
    seconds = time.perf_counter() - t0
    if exact:
        peak = _hwm_kib()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mib": (peak - before) / 1024, "exact": exact, "seconds": seconds,
            "input_mib": u.numel() * u.element_size() / 2 ** 20}


def _peak(impl: str, mode: str, B: int, H: int, L: int, threads: int, chunk=None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", impl, mode,
           "--B", str(B), "--H", str(H), "--L", str(L), "--threads", str(threads)]
    if chunk is not None:
        cmd += ["--chunk", str(chunk)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"memory child {impl} {mode} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _time(B: int, H: int, L: int, threads: int, repeats: int, input_grad: bool = True) -> dict:
    import torch

    torch.set_num_threads(threads)
    modules = {}
    for impl in ("straightforward", "sgconv"):
        modules[impl], u = _make(impl, B, H, L)
    ug = u.clone().requires_grad_(input_grad)
    grad = torch.randn(B, H, L)

    def forward(m):
        m.eval()
        with torch.no_grad():
            m(u)

    def train(m):
        m.train()
        ug.grad = None
        m.zero_grad(set_to_none=True)
        m(ug).backward(grad)

    times = {}
    for name, fn in (("forward", forward), ("forward+backward", train)):
        for m in modules.values():
            fn(m)                                  # warm-up
        samples = {impl: [] for impl in modules}
        for r in range(repeats):
            order = list(modules) if r % 2 == 0 else list(reversed(modules))
            for impl in order:
                t0 = time.perf_counter()
                fn(modules[impl])
                samples[impl].append(time.perf_counter() - t0)
        times[name] = {impl: statistics.median(s) for impl, s in samples.items()}
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--B", type=int, default=8)
    parser.add_argument("--H", type=int, default=256)
    parser.add_argument("--L", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--long", action="store_true",
                        help="also the long-sequence case B=1, H=64, L=2**20, forward "
                             "(evaluation) and forward+backward: the default (channel chunk "
                             "from the memory budget) against no chunks and channel_chunk=8, "
                             "time and peak memory")
    parser.add_argument("--long-repeats", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true", help="timings only")
    parser.add_argument("--no-input-grad", action="store_true",
                        help="forward+backward without the input's gradient (a first layer); "
                             "by default u requires grad, as for any layer inside a network")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _setup_paths()
    if args.child:
        print(json.dumps(_child(*args.child, args.B, args.H, args.L, args.threads, args.chunk)))
        return 0

    import torch
    print(f"torch {torch.__version__}, {args.threads} threads, float32, "
          f"B={args.B} H={args.H} L={args.L}, median of {args.repeats} interleaved repeats, "
          f"input {'without' if args.no_input_grad else 'with'} gradient")
    times = _time(args.B, args.H, args.L, args.threads, args.repeats,
                  input_grad=not args.no_input_grad)
    print(f"{'':18s} {'straightforward':>16s} {'sgconv':>10s} {'speed-up':>9s}")
    for name, t in times.items():
        print(f"{name:18s} {t['straightforward']:15.3f}s {t['sgconv']:9.3f}s "
              f"{t['straightforward'] / t['sgconv']:8.2f}x")
    if not args.no_memory:
        print("peak memory of one call above module + input (fresh subprocess each):")
        for mode in ("forward", "forward+backward"):
            a = _peak("straightforward", mode, args.B, args.H, args.L, args.threads)
            b = _peak("sgconv", mode, args.B, args.H, args.L, args.threads)
            how = "VmHWM" if a["exact"] and b["exact"] else "ru_maxrss (upper bound)"
            print(f"{mode:18s} {a['peak_mib']:14.0f}MiB {b['peak_mib']:8.0f}MiB "
                  f"{b['peak_mib'] / a['peak_mib']:8.2f}x  (sgconv/straightforward, {how})")
    if args.long:
        B, H, L = 1, 64, 2 ** 20
        print(f"long sequence B={B} H={H} L={L}: one call after a warm-up, fresh subprocess "
              f"each, interleaved, median of {args.long_repeats}; peak above module + input:")
        variants = {"default (automatic chunk)": None, f"no chunks (channel_chunk={H})": H,
                    "channel_chunk=8": 8}
        for mode in ("forward", "forward+backward"):
            runs = {name: [] for name in variants}
            for r in range(args.long_repeats):
                order = list(variants) if r % 2 == 0 else list(reversed(variants))
                for name in order:
                    runs[name].append(_peak("sgconv", mode, B, H, L, args.threads,
                                            variants[name]))
            base = statistics.median(x["seconds"] for x in runs[f"no chunks (channel_chunk={H})"])
            print(f"  {mode}" + (" (evaluation, cached spectrum)" if mode == "forward" else ""))
            for name, rs in runs.items():
                t = statistics.median(x["seconds"] for x in rs)
                peak = statistics.median(x["peak_mib"] for x in rs)
                print(f"    {name:28s} {t:6.2f}s ({t / base:.2f}x)  peak {peak:6.0f} MiB = "
                      f"{peak / rs[0]['input_mib']:.2f}x the input ({rs[0]['input_mib']:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
