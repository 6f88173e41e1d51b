"""Per-token latency of step-by-step decoding against its two baselines, side by side.

Run from the repository root::

    python asv_benchmarks/compare_decode.py                     # every backend and size below
    python asv_benchmarks/compare_decode.py --backends numpy --lengths 4096 65536 --batches 1
    python asv_benchmarks/compare_decode.py --out decode.json   # resumable: finished rows kept

For context L in {4096, 16384, 65536} (B = 1 and B = 8) and 2^20 (B = 1), H = 256,
float32, a causal layer with l_max = L (d = 64, so P = 2d + (N-2)(d+1) runs: 453, 583,
713 and 973), each backend times the three ways of computing the next token's output
(asv_benchmarks/decode_cases.py): ``step`` (sgconv's decoder, from the state a prefill of
L inputs left), ``recompute`` (the layer over the last L inputs by FFT, kernel spectrum
prepared once) and ``dot`` (the cached kernel dotted with the history, BLAS).  Each
(backend, L, B) runs in its own subprocess, one method after the other, each on the same
weights and inputs; the first outputs of the three are checked to agree.  Reported:
median milliseconds per token, the ratios recompute/step and dot/step, the step's time
per run (median / P: about constant when the cost grows with P = O(d log L), not with
L), and the decoding state's memory.  torch runs with ``--threads`` threads (2).

Not an asv benchmark module: asv finds no timed names here (see bench_decode.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SIZES = [(4096, 1), (4096, 8), (16384, 1), (16384, 8), (65536, 1), (65536, 8), (2 ** 20, 1)]
#: calls timed per method: the step is fast, the baselines are not
CALLS = {"step": 200, "dot": 30, "recompute": 8}


def _measure(backend: str, L: int, B: int, H: int, calls: dict, threads: int) -> dict:
    """One row: every method in this process, one after the other."""
    sys.path[:0] = [ROOT]
    import numpy as np
    if backend == "torch":
        import torch
        torch.set_num_threads(threads)
    from asv_benchmarks.decode_cases import METHODS, make_case

    row = {"backend": backend, "L": L, "B": B, "H": H, "threads": threads}
    first = {}
    for method in ("step", "dot", "recompute"):
        case, inputs = make_case(backend, method, L, B, H)
        first[method] = case.call(inputs[0])
        warm = 2 if method == "recompute" else 5
        for i in range(1, warm):
            case.call(inputs[i])
        times = []
        for i in range(warm, warm + calls[method]):
            t0 = time.perf_counter()
            case.call(inputs[i])
            times.append(time.perf_counter() - t0)
        row[method + "_ms"] = 1e3 * statistics.median(times)
        if method == "step":
            row["P"] = case.runs
            row["state_MiB"] = case.state_bytes / 2 ** 20
        del case
    scale = float(np.abs(first["recompute"]).max())
    row["agree"] = max(float(np.abs(first[m] - first["step"]).max()) / scale
                       for m in METHODS)
    row["recompute_over_step"] = row["recompute_ms"] / row["step_ms"]
    row["dot_over_step"] = row["dot_ms"] / row["step_ms"]
    row["step_us_per_run"] = 1e3 * row["step_ms"] / row["P"]
    return row


def _table(rows: list) -> str:
    head = ("| backend | L | B | P | step ms | step us/run | recompute ms | dot ms | "
            "recompute/step | dot/step | state MiB |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['L']} | {r['B']} | {r['P']} | {r['step_ms']:.3f} | "
                     f"{r['step_us_per_run']:.2f} | {r['recompute_ms']:.1f} | "
                     f"{r['dot_ms']:.2f} | {r['recompute_over_step']:.0f}x | "
                     f"{r['dot_over_step']:.1f}x | {r['state_MiB']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["numpy", "torch", "jax"])
    parser.add_argument("--lengths", nargs="+", type=int, default=None,
                        help="context lengths L (default: 4096 16384 65536 1048576)")
    parser.add_argument("--batches", nargs="+", type=int, default=None,
                        help="batch sizes (default: 1 and 8, only 1 at L = 2^20)")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--calls", type=float, default=1.0, help="scale the timed calls")
    parser.add_argument("--out", default=None, help="JSON file: rows are appended; rows "
                        "already in it are skipped (resumable)")
    parser.add_argument("--row", default=None, help=argparse.SUPPRESS)  # the subprocess
    args = parser.parse_args(argv)
    calls = {k: max(3, int(v * args.calls)) for k, v in CALLS.items()}
    if args.row:
        backend, L, B = args.row.split(",")
        row = _measure(backend, int(L), int(B), args.d_model, calls, args.threads)
        print("ROW " + json.dumps(row))
        return 0
    sizes = [(L, B) for L, B in SIZES
             if (args.lengths is None or L in args.lengths)
             and (args.batches is None or B in args.batches)]
    if args.lengths and args.batches:
        sizes = [(L, B) for L in args.lengths for B in args.batches]
    done = []
    if args.out and os.path.exists(args.out):
        done = json.load(open(args.out))
    key = lambda r: (r["backend"], r["L"], r["B"], r["H"])  # noqa: E731
    have = {key(r) for r in done}
    rows = list(done)
    for backend in args.backends:
        for L, B in sizes:
            if (backend, L, B, args.d_model) in have:
                continue
            cmd = [sys.executable, os.path.abspath(__file__), "--row", f"{backend},{L},{B}",
                   "--d-model", str(args.d_model), "--threads", str(args.threads),
                   "--calls", str(args.calls)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            found = [line for line in proc.stdout.splitlines() if line.startswith("ROW ")]
            if proc.returncode != 0 or not found:
                reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                print(f"{backend} L={L} B={B}: skipped ({reason})", file=sys.stderr)
                continue
            row = json.loads(found[-1][4:])
            rows.append(row)
            print(f"{backend} L={L} B={B}: step {row['step_ms']:.3f} ms, recompute/step "
                  f"{row['recompute_over_step']:.0f}x, dot/step {row['dot_over_step']:.1f}x",
                  flush=True)
            if args.out:
                with open(args.out, "w") as f:
                    json.dump(rows, f, indent=1)
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
