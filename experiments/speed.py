"""Training throughput of one block: SGConv vs S4D vs a Transformer layer, same width, same run.

Forward + backward (of the sum of the output) of ``sgconv.torch.build_blocks`` for one
layer of each kind, in training mode, at L in {1024, 4096, 16384} with B * L = 16384
tokens per call, H = 64, bidirectional, float32, 2 threads.  Reported as tokens per
second (median of the timed calls after one warm-up) and as the ratio to SGConv.  The
Transformer layer is an attention block (F.scaled_dot_product_attention, 4 heads) and
a feed-forward block.  The same rows are in asv: ``asv_benchmarks/bench_models.py``.

    python experiments/speed.py [--lengths 1024 4096 16384] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from sgconv import ModelConfig
from sgconv.torch import build_blocks

KINDS = {"sgconv": dict(layer="sgconv", kernel_dim=64),
         "s4d": dict(layer="s4d", d_state=64),
         "transformer": dict(layer="attention", n_heads=4, ffn_mult=1)}
TOKENS = 16384
WIDTH = 64


def block(kind: str, length: int, width: int = WIDTH) -> torch.nn.Module:
    """One layer of ``kind`` ('sgconv', 's4d', 'transformer') as a module (B, H, L) -> (B, H, L)."""
    config = ModelConfig(d_model=width, n_layers=1, l_max=length, bidirectional=True,
                         norm="batch", prenorm=False, postact="glu", d_input=1,
                         **KINDS[kind])
    return torch.nn.Sequential(*build_blocks(config))


def throughput(kind: str, length: int, repeat: int = 3, tokens: int = TOKENS) -> dict:
    """Median forward+backward tokens/s of one block of ``kind`` at ``length``."""
    torch.manual_seed(0)
    batch = max(1, tokens // length)
    module = block(kind, length).train()
    x = torch.randn(batch, WIDTH, length, requires_grad=True)
    times = []
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        module(x).sum().backward()
        if i:                                   # the first call warms up (FFT plans, caches)
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"kind": kind, "length": length, "batch": batch, "width": WIDTH,
            "seconds": median, "tokens_per_s": batch * length / median,
            "num_parameters": sum(p.numel() for p in module.parameters())}


def lengths_for(mode: str) -> tuple[int, ...]:
    return {"full": (1024, 4096, 16384), "quick": (1024, 4096), "smoke": (256,)}[mode]


def run(mode: str, out: str, out_of_time=lambda: False) -> int:
    """Measure every length of ``mode`` not yet on disk (one file per length: resumable)."""
    torch.set_num_threads(2)
    os.makedirs(os.path.join(out, "speed"), exist_ok=True)
    for length in lengths_for(mode):
        path = os.path.join(out, "speed", f"L{length}.json")
        if os.path.exists(path):
            continue
        if out_of_time():
            return 3
        print(f"speed: L={length}", flush=True)
        smoke = mode == "smoke"                         # seconds: only that the rows run
        rows = [throughput(kind, length, repeat=1 if smoke else 3,
                           tokens=1024 if smoke else TOKENS) for kind in KINDS]
        with open(path + ".tmp", "w") as f:
            json.dump(rows, f, indent=1)
        os.replace(path + ".tmp", path)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    for length in args.lengths:
        rows = [throughput(kind, length, args.repeat) for kind in KINDS]
        base = rows[0]["tokens_per_s"]
        for r in rows:
            print(f"L={length:6d} B={r['batch']:3d} {r['kind']:12s} "
                  f"{r['tokens_per_s']:10.0f} tokens/s  x{r['tokens_per_s'] / base:5.2f} of SGConv",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
