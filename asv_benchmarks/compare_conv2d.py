"""SGConv2d against a depthwise 7x7 nn.Conv2d and a dense global FFT kernel, in one run.

Run from the repository root (2 threads, float32, CPU)::

    python asv_benchmarks/compare_conv2d.py                      # every size and width
    python asv_benchmarks/compare_conv2d.py --sizes 56 --widths 96 --repeats 7
    python asv_benchmarks/compare_conv2d.py --out results.json   # resumable: done rows skipped

The three layers (asv_benchmarks/conv2d_baselines.py) differ only in the spatial operator
(the skip term, GELU and mixing are the same code), hold their own weights and see the
same input.  Each repeat times every implementation once, in a rotating order, and the
medians are reported (the machine is shared; the median of interleaved runs is what that
noise affects least).  Modes:

* ``forward``: training mode with gradients enabled, the kernel rebuilt (what a training
  step's forward costs);
* ``forward+backward``: that, then backward from a fixed random output gradient, the
  input requiring grad as inside a network;
* ``inference``: evaluation under torch.no_grad(), after a warm-up call (SGConv2d and the
  dense FFT layer then reuse their cached kernel spectra).

Batch sizes default to 32 at 14 x 14, 8 at 56 x 56 and 2 at 224 x 224 (``--batch`` sets
one for all).  The table lists the spatial operator's weights per layer: (N_x + N_y) 2 H d
for SGConv2d, 49 H for the 7x7 convolution, X Y H for the dense kernel.

Not an asv benchmark module (asv finds no timed names here); bench_conv2d.py has the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from conv2d_baselines import IMPLEMENTATIONS, make_layer, spatial_parameters  # noqa: E402

MODES = ("forward", "forward+backward", "inference")
DEFAULT_BATCH = {14: 32, 56: 8, 224: 2}


def _call(torch, module, u, g, mode: str):
    if mode == "inference":
        module.eval()
        with torch.no_grad():
            return module(u)
    module.train()
    if mode == "forward":
        return module(u)
    for p in module.parameters():
        p.grad = None
    u.grad = None
    module(u).backward(g)
    return None


def measure(size: int, H: int, B: int, kernel_dim: int, repeats: int, modes) -> list[dict]:
    """Median seconds per call of each implementation and mode at (B, H, size, size)."""
    import torch
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(B, H, size, size, generator=gen).requires_grad_(True)
    g = torch.randn(B, H, size, size, generator=gen)
    layers = {impl: make_layer(impl, H, size, size, kernel_dim) for impl in IMPLEMENTATIONS}
    rows = []
    for mode in modes:
        times = {impl: [] for impl in IMPLEMENTATIONS}
        for impl, module in layers.items():                        # warm-up: plans, caches
            _call(torch, module, u, g, mode)
        for r in range(repeats):
            order = IMPLEMENTATIONS[r % 3:] + IMPLEMENTATIONS[:r % 3]
            for impl in order:
                t0 = time.perf_counter()
                _call(torch, layers[impl], u, g, mode)
                times[impl].append(time.perf_counter() - t0)
        for impl in IMPLEMENTATIONS:
            rows.append({"size": size, "H": H, "B": B, "mode": mode, "impl": impl,
                         "kernel_dim": kernel_dim, "repeats": repeats,
                         "median_s": statistics.median(times[impl]),
                         "spatial_params": spatial_parameters(impl, H, size, size, kernel_dim),
                         "total_params": sum(p.numel() for p in layers[impl].parameters())})
    return rows


def table(rows: list[dict]) -> str:
    """A markdown table: per size, width and mode, each implementation's median and its
    ratio to the dense FFT layer and to the 7x7 convolution."""
    out = ["| X = Y | H | B | mode | SGConv2d | 7x7 conv | dense FFT | SGConv2d / dense | "
           "SGConv2d / 7x7 | spatial weights: SGConv2d / 7x7 / dense |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["size"], r["H"], r["B"], r["mode"]) for r in rows},
                  key=lambda k: (k[0], k[1], MODES.index(k[3])))
    for size, H, B, mode in keys:
        got = {r["impl"]: r for r in rows if (r["size"], r["H"], r["B"], r["mode"]) ==
               (size, H, B, mode)}
        if set(got) != set(IMPLEMENTATIONS):
            continue
        ms = {k: 1e3 * v["median_s"] for k, v in got.items()}
        params = " / ".join(f"{got[k]['spatial_params']:,}" for k in IMPLEMENTATIONS)
        out.append(f"| {size} | {H} | {B} | {mode} | {ms['sgconv']:.1f} ms | "
                   f"{ms['conv7x7']:.1f} ms | {ms['dense_fft']:.1f} ms | "
                   f"{ms['sgconv'] / ms['dense_fft']:.2f} | {ms['sgconv'] / ms['conv7x7']:.2f} | "
                   f"{params} |")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[14, 56, 224])
    ap.add_argument("--widths", type=int, nargs="+", default=[96, 384])
    ap.add_argument("--batch", type=int, default=None, help="B for every size (default: "
                    "32 at 14, 8 at 56, 2 at 224)")
    ap.add_argument("--kernel-dim", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--out", default=None, help="JSON file of results: rows already there are "
                    "kept and their configurations skipped (resumable)")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    rows = []
    if args.out and os.path.exists(args.out):
        with open(args.out) as f:
            rows = json.load(f)
    done = {(r["size"], r["H"], r["B"], r["mode"]) for r in rows}
    for size in args.sizes:
        B = args.batch or DEFAULT_BATCH.get(size, 4)
        for H in args.widths:
            modes = [m for m in args.modes if (size, H, B, m) not in done]
            if not modes:
                continue
            new = measure(size, H, B, args.kernel_dim, args.repeats, modes)
            rows.extend(new)
            print(table(new), flush=True)
            if args.out:
                with open(args.out, "w") as f:
                    json.dump(rows, f, indent=1)
    print(f"\n{torch.__version__}, {args.threads} threads, float32, kernel_dim={args.kernel_dim}, "
          f"median of {args.repeats} interleaved repeats\n")
    print(table(rows))


if __name__ == "__main__":
    main()
