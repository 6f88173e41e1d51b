"""Train and test one model on the Pathfinder-style task; resumable, one result file per run.

    python experiments/pathfinder/run.py --model sgconv2d --seed 0     # one run
    python experiments/pathfinder/run.py --table                       # the results table

A run whose result file (results/<model>-seed<seed>.json) exists with the same settings is
skipped (with other settings it is an error: pass --results DIR), so the commands in
README.md can be re-run after an interruption.  Every generator option is an argument
too (--size, --paths, --length, --turn, --gap, --min-apart, --max-apart).  The
data (generator.py) are made once per split and cached in data/ (not in git) under a
name holding every generator option: train, validation and test use
their own generator seeds (1, 2, 3), the same for every model and run; the run's seed sets
the initial weights and the order of the training batches.

Training: AdamW (lr 2e-3, weight decay 0.05 on matrices and convolution filters, none on
SGConv's sub-kernels, D, norms and biases), batch 64, a linear warm-up over the first
epoch then a cosine decay, cross-entropy.  After every epoch the validation accuracy is
measured; the test accuracy is reported for the weights of the best validation epoch (the
only choice made, and it is made on validation).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(HERE))]

import torch  # noqa: E402

from generator import DEFAULTS, make_split  # noqa: E402
from models import SPATIAL, Net  # noqa: E402

SPLITS = {"train": 1, "val": 2, "test": 3}                  # generator seed of each split


def data(split: str, n: int, task: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's images (n, 1, size, size) and labels (n,), generated once and cached
    under a name that holds every generator option."""
    os.makedirs(os.path.join(HERE, "data"), exist_ok=True)
    opts = "-".join(f"{k}{'_'.join(map(str, v)) if isinstance(v, tuple) else v}"
                    for k, v in sorted(task.items()))
    path = os.path.join(HERE, "data", f"pathfinder-{opts}-{split}-{n}-seed{SPLITS[split]}.npz")
    if not os.path.exists(path):
        images, labels = make_split(n, seed=SPLITS[split], **task)
        np.savez_compressed(path + ".tmp.npz", images=images.astype(np.uint8), labels=labels)
        os.replace(path + ".tmp.npz", path)
    with np.load(path) as f:
        return torch.from_numpy(f["images"].astype(np.float32))[:, None], \
            torch.from_numpy(f["labels"])


def task_options(args) -> dict:
    """The generator's options (generator.DEFAULTS) as this run sets them."""
    return {"size": args.size, "paths": args.paths, "length": tuple(args.length),
            "turn": args.turn, "gap": args.gap, "min_apart": args.min_apart,
            "max_apart": args.max_apart}


def _no_decay(name: str, p: torch.Tensor) -> bool:
    return p.ndim <= 1 or "kernel_list" in name or name.endswith(".D")


def accuracy(model, images, labels, batch: int = 256) -> float:
    model.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(labels), batch):
            right += (model(images[i:i + batch]).argmax(-1) == labels[i:i + batch]).sum().item()
    return right / len(labels)


def train(args) -> dict:
    torch.manual_seed(args.seed)
    task = task_options(args)
    x_train, y_train = data("train", args.train, task)
    x_val, y_val = data("val", args.val, task)
    x_test, y_test = data("test", args.test, task)
    model = Net(args.model, width=args.width, depth=args.depth, size=args.size)
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if not _no_decay(n, p)], "weight_decay": 0.05},
              {"params": [p for n, p in named if _no_decay(n, p)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=args.lr)
    steps_per_epoch = math.ceil(args.train / args.batch)
    total = args.epochs * steps_per_epoch

    def lr_at(step):                                   # warm-up over one epoch, then cosine
        if step < steps_per_epoch:
            return (step + 1) / steps_per_epoch
        return 0.5 * (1 + math.cos(math.pi * (step - steps_per_epoch) /
                                   max(1, total - steps_per_epoch)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(args.seed)
    history, best, best_state = [], -1.0, None
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(args.train, generator=gen)
        losses = []
        for i in range(0, args.train, args.batch):
            idx = order[i:i + args.batch]
            loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        val = accuracy(model, x_val, y_val)
        history.append({"epoch": epoch + 1, "train_loss": statistics.fmean(losses),
                        "val_acc": val, "seconds": time.time() - start})
        print(f"{args.model} seed {args.seed} epoch {epoch + 1}: loss "
              f"{history[-1]['train_loss']:.4f}, val {val:.4f} ({time.time() - start:.0f} s)",
              flush=True)
        if val > best:
            best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return {"model": args.model, "seed": args.seed, "test_acc": accuracy(model, x_test, y_test),
            "val_acc": best, "best_epoch": max(history, key=lambda h: h["val_acc"])["epoch"],
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds": time.time() - start, "history": history,
            "config": {k: v for k, v in vars(args).items() if k != "table"},
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def table(results_dir: str) -> str:
    rows = []
    for name in sorted(os.listdir(results_dir)):
        if name.endswith(".json"):
            with open(os.path.join(results_dir, name)) as f:
                rows.append(json.load(f))
    out = ["| model | parameters | test accuracy (mean +- std) | validation accuracy | "
           "seeds | minutes per run |", "|---|---|---|---|---|---|"]
    for kind in SPATIAL:
        got = [r for r in rows if r["model"] == kind]
        if not got:
            continue
        test = [100 * r["test_acc"] for r in got]
        val = [100 * r["val_acc"] for r in got]
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else float("nan")  # noqa: E731
        out.append(f"| {kind} | {got[0]['parameters']:,} | {statistics.fmean(test):.1f} +- "
                   f"{sd(test):.1f} | {statistics.fmean(val):.1f} +- {sd(val):.1f} | "
                   f"{', '.join(str(r['seed']) for r in got)} | "
                   f"{statistics.fmean(r['train_seconds'] for r in got) / 60:.1f} |")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=SPATIAL)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train", type=int, default=8000)
    ap.add_argument("--val", type=int, default=1000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--size", type=int, default=32, help="image side (generator option)")
    ap.add_argument("--paths", type=int, default=DEFAULTS["paths"],
                    help="curves per image (generator option)")
    ap.add_argument("--length", type=int, nargs=2, default=list(DEFAULTS["length"]),
                    help="shortest and longest curve in pixels (generator option)")
    ap.add_argument("--turn", type=float, default=DEFAULTS["turn"],
                    help="radians a curve turns per step, about (generator option)")
    ap.add_argument("--gap", type=int, default=DEFAULTS["gap"],
                    help="least distance between two curves (generator option)")
    ap.add_argument("--min-apart", type=int, default=DEFAULTS["min_apart"],
                    help="least distance between the two marks (generator option)")
    ap.add_argument("--max-apart", type=int, default=DEFAULTS["max_apart"],
                    help="largest distance between the two marks (generator option)")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--table", action="store_true", help="print the results table and exit")
    args = ap.parse_args(argv)
    if args.table:
        print(table(args.results))
        return
    if args.model is None:
        ap.error("--model is required (or --table)")
    torch.set_num_threads(args.threads)
    os.makedirs(args.results, exist_ok=True)
    path = os.path.join(args.results, f"{args.model}-seed{args.seed}.json")
    if os.path.exists(path):
        with open(path) as f:
            done = json.load(f)["config"]
        wanted = {k: v for k, v in vars(args).items() if k != "table"}
        differ = sorted(k for k in wanted.keys() | done.keys()
                        if k not in ("results", "threads") and done.get(k) != wanted.get(k))
        if differ:
            raise SystemExit(f"{path} holds a run with other settings ("
                             + ", ".join(f"{k}: {done.get(k)!r} there, {wanted.get(k)!r} now"
                                         for k in differ)
                             + "); pass --results DIR to keep runs of different settings apart")
        print(f"{path} exists with these settings: skipped")
        return
    result = train(args)
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(path + ".tmp", path)
    print(f"{args.model} seed {args.seed}: test accuracy {result['test_acc']:.4f} "
          f"(best validation {result['val_acc']:.4f} at epoch {result['best_epoch']})")


if __name__ == "__main__":
    main()
