"""Context-parallel SGConv on P processes against the single-process layer: per-rank peak
memory, time and bytes sent per layer.

Run from the repository root::

    python asv_benchmarks/scale_context_parallel.py                       # L = 2^20, 2^22
    python asv_benchmarks/scale_context_parallel.py --lengths 1048576 --parts 1 2 4 \\
        --modes forward train --repeats 3 --json scale.json

For each L, mode and P a fresh set of processes runs: P = 1 is the single-process layer
(``sgconv.torch.SGConv``, with the whole machine's threads), P > 1 is
``sgconv.torch.distributed.ContextParallelSGConv`` on P processes joined by gloo on
127.0.0.1, each rank holding its time slice (B, H, L/P) and 1/P of the machine's threads
(at least one).  The layer: H = 64, B = 1, l_max = L (a global kernel), float32.
Modes: ``forward`` is evaluation under torch.no_grad() (the kernel spectrum is cached, as a
server would run it); ``train`` is forward and backward from a random output gradient,
the input requiring grad as in a stack, with :func:`sync_gradients` (the parameters'
gradients summed over the ranks) included.

Memory (per rank, MiB): after importing torch and sgconv and running a tiny layer once
(which loads the FFT and BLAS libraries) the process's resident memory is read
(``runtime``: the interpreter and libraries, the same for every P); after one
warm-up call the kernel's high-water mark of resident memory is reset (writing 5 to
/proc/self/clear_refs, as compare_torch.py does) and the timed calls run; ``peak`` is the
high-water mark (VmHWM) after them minus ``runtime``: everything the rank holds for the
layer at its worst moment (weights, its input slice, the cached spectrum, the
all-to-all buffers, work buffers, the output).  The table's ratio is the largest rank's
peak over the single process's.  The processes run with MALLOC_MMAP_THRESHOLD_=65536, so
that glibc maps every buffer over 64 KiB and resident memory follows the live tensors
(its adaptive threshold would otherwise keep freed buffers of up to 32 MiB resident,
which counts against the small buffers of many ranks).  (Without clear_refs, ru_maxrss is used: an upper bound
that also counts the warm-up; the output says which.)

Bytes sent: counted in the processes by wrapping torch.distributed.all_to_all_single for
the timed calls (what each rank's pieces for the other ranks hold), per layer call, next
to the formula of sgconv._parallel.communication_volume (the all-gather of the ranks'
lengths, 16 bytes per rank, is not counted).

Time: each repeat starts after a barrier; a rank times its own call (the collectives make
the ranks wait for each other), the slowest rank's time counts, and the median over the
repeats is reported, with its ratio to the single process.  On a machine with fewer
cores than P the processes share them, so times cannot scale: they are reported as
measured.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

H_DEFAULT, B_DEFAULT = 64, 1
LENGTHS_DEFAULT = (2 ** 20, 2 ** 22)
PARTS_DEFAULT = (1, 2, 4)


# --- one rank --------------------------------------------------------------------------------

def child(rank: int, parts: int, port: int, L: int, H: int, B: int, mode: str, repeats: int,
          threads: int) -> dict:
    """Build the layer on this rank, warm up, measure; returns this rank's numbers."""
    try:
        import sgconv  # noqa: F401  (the installed one, in asv's environments)
    except ImportError:
        sys.path.insert(0, ROOT)                    # else this checkout's
    import torch
    import torch.distributed as dist
    from sgconv import _measure                     # the memory probes of every benchmark

    import sgconv.torch as sgt
    from sgconv.torch.distributed import (ContextParallelSGConv, communication_volume,
                                          split_sizes, sync_gradients)

    torch.set_num_threads(threads)
    tiny = sgt.SGConv(4, 64)                        # load and initialise the libraries
    tiny(torch.randn(1, 4, 64, requires_grad=True)).sum().backward()
    del tiny
    runtime_kib = _measure.rss_kib()
    sent = [0]
    if parts > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=parts, timeout=datetime.timedelta(seconds=900))
        plain = dist.all_to_all_single

        def counting(output, input, output_split_sizes=None, input_split_sizes=None, **kw):
            sizes = input_split_sizes or [input.numel() // parts] * parts
            sent[0] += (sum(sizes) - sizes[rank]) * input.element_size()
            return plain(output, input, output_split_sizes, input_split_sizes, **kw)

        dist.all_to_all_single = counting
        layer = ContextParallelSGConv(H, L)
    else:
        layer = sgt.SGConv(H, L)
    length = split_sizes(L, parts)[rank]
    gen = torch.Generator().manual_seed(rank)
    u = torch.randn(B, H, length, generator=gen)
    if mode == "forward":
        layer.eval()

        def call():
            with torch.no_grad():
                return layer(u)
    else:
        layer.train()
        u.requires_grad_(True)
        grad = torch.randn(B, H, length, generator=gen)

        def call():
            u.grad = None
            layer.zero_grad(set_to_none=True)
            layer(u).backward(grad)
            if parts > 1:
                sync_gradients(layer)

    call()                                          # warm-up: FFT plans, the spectrum cache
    u.grad = None
    layer.zero_grad(set_to_none=True)
    barrier = dist.barrier if parts > 1 else (lambda: None)
    exact = _measure.rss_peak_reset()
    sent[0] = 0
    times = []
    for _ in range(repeats):
        barrier()
        start = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - start)
        del out
    peak_kib = _measure.hwm_kib() if exact else _measure.maxrss_kib()
    formula = communication_volume(B, H, L, parts) if parts > 1 else {"total": 0}
    result = {"rank": rank, "times": times, "runtime_mib": runtime_kib / 1024,
              "peak_mib": (peak_kib - runtime_kib) / 1024, "exact": exact,
              "sent_bytes": sent[0] / repeats, "formula_bytes": formula["total"] *
              (2 if mode == "train" else 1), "input_mib": u.numel() * 4 / 2 ** 20}
    if parts > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


# --- the driver ------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(L: int, parts: int, mode: str, H: int, B: int, repeats: int, cores: int,
            timeout: float) -> dict:
    """Run P fresh processes; return the summary of their numbers."""
    port, threads = _free_port(), max(1, cores // parts)
    # every buffer over 64 KiB is mmap'ed, so resident memory follows the live tensors
    # (glibc's adaptive threshold would keep freed buffers under 32 MiB in the heap)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    procs = [subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--child", str(rank), str(parts), str(port),
         str(L), str(H), str(B), mode, str(repeats), str(threads)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        for rank in range(parts)]
    results, errors = [], []
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise RuntimeError(f"L={L} P={parts} {mode}: no result within {timeout:.0f} s")
        if p.returncode != 0:
            errors.append(err[-3000:])
        else:
            results.append(json.loads(out.strip().splitlines()[-1]))
    if errors:
        raise RuntimeError(f"L={L} P={parts} {mode} failed:\n" + "\n".join(errors))
    slowest = [max(r["times"][i] for r in results) for i in range(repeats)]
    return {"L": L, "P": parts, "mode": mode, "H": H, "B": B, "threads_per_rank": threads,
            "time_s": statistics.median(slowest),
            "peak_mib": max(r["peak_mib"] for r in results),
            "runtime_mib": max(r["runtime_mib"] for r in results),
            "exact": all(r["exact"] for r in results),
            "sent_bytes": max(r["sent_bytes"] for r in results),
            "formula_bytes": max(r["formula_bytes"] for r in results),
            "input_mib": max(r["input_mib"] for r in results)}


def table(rows: list) -> str:
    """The Markdown table, ratios against the P=1 row of the same L and mode."""
    base = {(r["L"], r["mode"]): r for r in rows if r["P"] == 1}
    lines = ["| L | mode | P | per-rank peak MiB | peak / single | time s | time / single "
             "| sent per rank per layer MiB (formula) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["L"], r["mode"], r["P"])):
        b = base.get((r["L"], r["mode"]))
        mem = f"{r['peak_mib'] / b['peak_mib']:.2f}" if b else "-"
        tim = f"{r['time_s'] / b['time_s']:.2f}" if b else "-"
        sent = (f"{r['sent_bytes'] / 2 ** 20:.0f} ({r['formula_bytes'] / 2 ** 20:.0f})"
                if r["P"] > 1 else "0")
        lines.append(f"| 2^{r['L'].bit_length() - 1} | {r['mode']} | {r['P']} | "
                     f"{r['peak_mib']:.0f} | {mem} | {r['time_s']:.2f} | {tim} | {sent} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS_DEFAULT))
    ap.add_argument("--parts", type=int, nargs="+", default=list(PARTS_DEFAULT))
    ap.add_argument("--modes", nargs="+", default=["forward", "train"],
                    choices=["forward", "train"])
    ap.add_argument("--H", type=int, default=H_DEFAULT)
    ap.add_argument("--B", type=int, default=B_DEFAULT)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                    help="threads shared out among the ranks (default: this machine's cores)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", help="results file: finished rows are kept and skipped")
    args = ap.parse_args(argv)
    rows = []
    if args.json and os.path.exists(args.json):
        with open(args.json) as f:
            rows = json.load(f)
    for L in args.lengths:
        for mode in args.modes:
            for parts in args.parts:
                if any(r["L"] == L and r["P"] == parts and r["mode"] == mode
                       and r["H"] == args.H and r["B"] == args.B for r in rows):
                    continue
                row = measure(L, parts, mode, args.H, args.B, args.repeats, args.cores,
                              args.timeout)
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.json:
                    with open(args.json, "w") as f:
                        json.dump(rows, f, indent=1)
    print(f"\nH={args.H}, B={args.B}, float32, l_max=L, {args.cores} cores shared by the "
          f"ranks; peak: VmHWM minus the runtime's resident memory"
          f"{'' if all(r['exact'] for r in rows) else ' (ru_maxrss: upper bound)'}")
    print(table(rows))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        rank, parts, port, L, H, B = (int(x) for x in sys.argv[2:8])
        mode, repeats, threads = sys.argv[8], int(sys.argv[9]), int(sys.argv[10])
        print(json.dumps(child(rank, parts, port, L, H, B, mode, repeats, threads)))
    else:
        main()
