"""One training run: a task from sgconv.tasks, a model from sgconv.torch, AdamW, cosine schedule.

Public API only: ``sgconv.tasks`` (data), ``sgconv.torch.SequenceModel`` and
``sgconv.torch.make_optimizer`` (model and the kernels' parameter group),
``sgconv.torch.functional.kernel`` / the layers' ``kernel`` methods (learned-kernel pictures).

The model is selected on the validation split (the checkpoint with the best validation
score is the one tested); the test split is read once, at the end.
"""

from __future__ import annotations

import math
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import sgconv.torch.functional as SF
from sgconv import tasks
from sgconv.torch import SGConv, SequenceModel, make_optimizer
from sgconv.torch.baselines import KernelConv


class Progress:
    """A one-line progress bar on stderr (no dependency): ``with Progress(n, 'label') as p: p.update()``."""

    def __init__(self, total: int, label: str, stream=sys.stderr, every: float | None = None):
        tty = hasattr(stream, "isatty") and stream.isatty()
        # on a terminal the line is redrawn in place; in a log file, a line every 20 s
        self.end = "\r" if tty else ""
        every = (0.5 if tty else 20.0) if every is None else every
        self.total, self.label, self.stream, self.every = max(int(total), 1), label, stream, every
        self.done, self.start, self.last, self.note = 0, time.perf_counter(), 0.0, ""

    def __enter__(self):
        return self

    def update(self, n: int = 1, note: str | None = None) -> None:
        self.done += n
        if note is not None:
            self.note = note
        now = time.perf_counter()
        if now - self.last >= self.every or self.done >= self.total:
            self.last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = min(self.done / self.total, 1.0)
        elapsed = now - self.start
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        bar = "#" * int(24 * frac) + "." * (24 - int(24 * frac))
        self.stream.write(f"{self.end}{self.label} [{bar}] {self.done}/{self.total} "
                          f"{elapsed:5.0f}s eta {eta:4.0f}s {self.note}   "
                          + ("" if self.end else "\n"))
        self.stream.flush()

    def __exit__(self, *exc):
        self._draw(time.perf_counter())
        if self.end:
            self.stream.write("\n")
        self.stream.flush()


def rss_mib() -> float:
    """The process's resident memory now (MiB), from /proc (Linux)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except OSError:
        return float("nan")


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (MiB; ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- data -----------------------------------------------------------------------------------

def load_task(spec: dict, cache_dir: str | None) -> tasks.Task:
    """The task ``spec`` = {'name', 'n_train', 'n_val', 'n_test', **options}, generated once
    and cached as .npz (ListOps generation is a Python loop)."""
    spec = dict(spec)
    name = spec.pop("name")
    sizes = [spec.pop(k) for k in ("n_train", "n_val", "n_test")]
    key = "_".join([name] + [str(s) for s in sizes] + [f"{k}{v}" for k, v in sorted(spec.items())])
    path = None if cache_dir is None else os.path.join(cache_dir, key + ".npz")
    if path is not None and os.path.exists(path):
        with np.load(path, allow_pickle=False) as z:
            meta = {k: z[k].item() for k in ("kind", "d_output", "vocab_size", "d_input", "pool")}
            splits = [tasks.Split(z[f"{s}_x"], z[f"{s}_lengths"], z[f"{s}_y"])
                      for s in ("train", "val", "test")]
        vocab = None if meta["vocab_size"] < 0 else int(meta["vocab_size"])
        d_input = None if meta["d_input"] < 0 else int(meta["d_input"])
        return tasks.Task(name, *splits, kind=str(meta["kind"]), d_output=int(meta["d_output"]),
                          vocab_size=vocab, d_input=d_input, pool=str(meta["pool"]), info=spec)
    task = tasks.make(name, *sizes, **spec)
    if path is not None:
        os.makedirs(cache_dir, exist_ok=True)
        arrays = {f"{s}_{a}": getattr(getattr(task, s), a)
                  for s in ("train", "val", "test") for a in ("x", "lengths", "y")}
        tmp = path + f".{os.getpid()}.tmp.npz"
        np.savez(tmp, kind=task.kind, d_output=task.d_output,
                 vocab_size=-1 if task.vocab_size is None else task.vocab_size,
                 d_input=-1 if task.d_input is None else task.d_input, pool=task.pool, **arrays)
        os.replace(tmp, path)
    return task


def batches(split: tasks.Split, batch_size: int, rng: np.random.Generator | None):
    """Batches (x, mask, y) as tensors, cut to the longest sequence in the batch.

    Training (rng given): shuffled, then sorted by length within windows of 50 batches,
    so that a batch holds sequences of similar length (less padding).  Evaluation: in order.
    """
    n = len(split)
    order = np.arange(n) if rng is None else rng.permutation(n)
    if rng is not None:
        window = 50 * batch_size
        order = np.concatenate([o[np.argsort(split.lengths[o], kind="stable")]
                                for o in np.array_split(order, max(1, n // window))])
        cuts = list(range(0, n, batch_size))
        rng.shuffle(cuts)
    else:
        cuts = list(range(0, n, batch_size))
    for start in cuts:
        idx = order[start:start + batch_size]
        lengths = split.lengths[idx]
        L = int(lengths.max())
        x = torch.from_numpy(np.ascontiguousarray(split.x[idx, :L]))
        mask = torch.from_numpy(np.arange(L)[None, :] < lengths[:, None])
        y = torch.from_numpy(split.y[idx])
        yield x, mask, y


# --- model and evaluation ------------------------------------------------------------------

def build_model(task: tasks.Task, model_options: dict, seed: int) -> SequenceModel:
    torch.manual_seed(seed)
    io = dict(vocab_size=task.vocab_size, d_input=task.d_input, d_output=task.d_output,
              pool=task.pool)
    return SequenceModel(**{**io, **model_options})


def loss_fn(task: tasks.Task, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if task.kind == "classification":
        return F.cross_entropy(out, y)
    return F.mse_loss(out[:, 0], y)


@torch.no_grad()
def evaluate(model: SequenceModel, task: tasks.Task, split: tasks.Split,
             batch_size: int) -> dict:
    """{'loss', 'accuracy' or 'mse'} on a split, in evaluation mode."""
    model.eval()
    total, loss_sum, correct, sq = 0, 0.0, 0, 0.0
    for x, mask, y in batches(split, batch_size, None):
        out = model(x, mask)
        loss_sum += float(loss_fn(task, out, y)) * len(y)
        if task.kind == "classification":
            correct += int((out.argmax(-1) == y).sum())
        else:
            sq += float(((out[:, 0] - y) ** 2).sum())
        total += len(y)
    model.train()
    result = {"loss": loss_sum / total}
    if task.kind == "classification":
        result["accuracy"] = correct / total
    else:
        result["mse"] = sq / total
    return result


def score(task: tasks.Task, metrics: dict) -> float:
    """Higher is better: accuracy, or -MSE."""
    return metrics["accuracy"] if task.kind == "classification" else -metrics["mse"]


def learned_kernels(model: SequenceModel, length: int) -> np.ndarray | None:
    """The first block's convolution kernel after training: (C', H, L) (None for attention).

    SGConv: ``sgconv.torch.functional.kernel`` of the layer's sub-kernels, multiplier and Z;
    baselines: their ``kernel(L)``.
    """
    layer = model.blocks[0].layer
    with torch.no_grad():
        if isinstance(layer, SGConv):
            k = SF.kernel(list(layer.kernel_list), layer.multiplier, layer.kernel_norm, length,
                          decay=layer.decay)
        elif isinstance(layer, KernelConv):
            k = layer.kernel(length)
        else:
            return None
    return k.detach().float().numpy()


# --- training ---------------------------------------------------------------------------------

def train(task: tasks.Task, model_options: dict, train_options: dict, seed: int,
          label: str = "") -> dict:
    """Train on ``task`` and return the record of the run (curves, scores, speed, memory).

    train_options: steps, batch_size, lr, weight_decay, kernel_lr, kernel_weight_decay,
    warmup (fraction of steps), eval_every (steps), eval_batch_size.
    """
    torch.set_num_threads(train_options.get("threads", 2))
    model = build_model(task, model_options, seed)
    optimizer = make_optimizer(model, lr=train_options["lr"],
                               weight_decay=train_options["weight_decay"],
                               kernel_lr=train_options.get("kernel_lr"),
                               kernel_weight_decay=train_options.get("kernel_weight_decay"))
    steps = int(train_options["steps"])
    warmup = max(1, int(train_options.get("warmup", 0.1) * steps))

    def schedule(step: int) -> float:                # linear warm-up, then cosine to 0
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    rng = np.random.default_rng(seed)
    batch_size = int(train_options["batch_size"])
    eval_bs = int(train_options.get("eval_batch_size", 2 * batch_size))
    eval_every = int(train_options["eval_every"])
    curve = {"step": [], "train_loss": [], "val_loss": [], "val_score": []}
    best = {"score": -float("inf"), "state": None, "step": 0}
    rss_start = rss_mib()
    train_time, tokens, step, running, seen = 0.0, 0, 0, 0.0, 0
    first_losses: list[float] = []
    model.train()
    with Progress(steps, label) as bar:
        while step < steps:
            for x, mask, y in batches(task.train, batch_size, rng):
                t0 = time.perf_counter()
                loss = loss_fn(task, model(x, mask), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                train_time += time.perf_counter() - t0
                tokens += int(mask.sum())
                step += 1
                value = loss.item()
                if not math.isfinite(value):
                    raise FloatingPointError(f"{label}: the training loss is {value} at step "
                                             f"{step}")
                if len(first_losses) < 10:
                    first_losses.append(value)
                running, seen = running + value, seen + 1
                if step % eval_every == 0 or step == steps:
                    metrics = evaluate(model, task, task.val, eval_bs)
                    curve["step"].append(step)
                    curve["train_loss"].append(running / seen)
                    curve["val_loss"].append(metrics["loss"])
                    curve["val_score"].append(score(task, metrics))
                    running, seen = 0.0, 0
                    if score(task, metrics) > best["score"]:
                        best = {"score": score(task, metrics), "step": step,
                                "state": {k: v.detach().clone()
                                          for k, v in model.state_dict().items()}}
                    bar.update(0, note=f"loss {curve['train_loss'][-1]:.3f} "
                                       f"val {curve['val_score'][-1]:.3f}")
                bar.update()
                if step >= steps:
                    break
    model.load_state_dict(best["state"])
    test = evaluate(model, task, task.test, eval_bs)
    val = evaluate(model, task, task.val, eval_bs)
    L = int(task.train.lengths.max())
    return {
        "test": test, "val": val, "best_step": best["step"], "curve": curve,
        "first_losses": first_losses,
        "num_parameters": model.num_parameters(),
        "train_tokens_per_s": tokens / train_time,
        "train_time_s": train_time,
        "peak_mem_mib": peak_rss_mib() - rss_start,
        "load_average": os.getloadavg()[1],     # the machine's 5-minute load at the end
        "kernel": learned_kernels(model, L),
    }
