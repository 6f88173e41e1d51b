"""A character-level SGConv language model that generates by step-by-step decoding.

Run from the repository root (13.5 CPU minutes, 9 of them training, on this project's
2-core machine; the README next to this file records a run)::

    python experiments/decoding/char_lm.py

It trains a small causal model on the Python standard library's own source files (they
ship with every Python: ``sysconfig.get_paths()["stdlib"]``), then generates text twice
from the same prompt with the same random draws:

- ``step``: ``prefill`` the prompt, then one ``SGConv.step`` per token and layer, O(P) per
  token and channel;
- ``recompute``: the whole model's forward over the prefix for every new token (the
  layers' FFTs over the growing prefix), the baseline a long-convolution model without a
  recurrent form needs;

checks that the two produced the same text and that the step logits equal the full
forward's at every generated position, and prints tokens per second of both.

The model is built from public layers only, as a user would build it::

    bytes -> Embedding(256, H)
          -> N x [ x + SGConv(LayerNorm(x)) ;  x + MLP(LayerNorm(x)) ]   (pre-norm residual)
          -> LayerNorm -> Linear(H, 256)                                 logits over bytes

and it steps because each block does: the SGConv layer keeps a decoding state, and the
norms, the MLP and the residual sums are pointwise in time.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import statistics
import sysconfig
import time

import torch
from torch import nn

from sgconv.torch import SGConv

VOCAB = 256                                                          # bytes


class Block(nn.Module):
    """x + SGConv(LayerNorm(x)), then x + MLP(LayerNorm(x)); (B, L, H) -> (B, L, H)."""

    def __init__(self, d_model: int, l_max: int, kernel_dim: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.conv = SGConv(d_model, l_max, kernel_dim=kernel_dim, transposed=False)
        self.mlp = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(),
                                 nn.Linear(2 * d_model, d_model))

    def forward(self, x):
        x = x + self.conv(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def prefill(self, x):
        """(output (B, T, H), decoding state) for a prompt x (B, T, H)."""
        y, state = self.conv.prefill(self.norm1(x))
        x = x + y
        return x + self.mlp(self.norm2(x)), state

    def step(self, x_t, state):
        """(output (B, H), next state) for one time step x_t (B, H)."""
        y, state = self.conv.step(self.norm1(x_t), state)
        x_t = x_t + y
        return x_t + self.mlp(self.norm2(x_t)), state


class CharLM(nn.Module):
    """Causal byte-level language model of SGConv blocks."""

    def __init__(self, d_model=128, n_layers=4, l_max=1024, kernel_dim=64):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d_model)
        self.blocks = nn.ModuleList(Block(d_model, l_max, kernel_dim) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB)

    def forward(self, tokens):
        """tokens (B, L) int64 -> logits (B, L, 256)."""
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    def prefill(self, tokens):
        """(logits (B, T, 256), per-block states) for a prompt (B, T)."""
        x, states = self.embed(tokens), []
        for block in self.blocks:
            x, state = block.prefill(x)
            states.append(state)
        return self.head(self.norm(x)), states

    def step(self, token, states):
        """(logits (B, 256), next states) for the next token (B,)."""
        x, new = self.embed(token), []
        for block, state in zip(self.blocks, states):
            x, state = block.step(x, state)
            new.append(state)
        return self.head(self.norm(x)), new


# --- data -----------------------------------------------------------------------------------

def stdlib_bytes(limit: int) -> bytes:
    """The standard library's top-level .py files, sorted by name, joined: ``limit`` bytes."""
    root = sysconfig.get_paths()["stdlib"]
    out = bytearray()
    for path in sorted(glob.glob(os.path.join(root, "*.py"))):
        with open(path, "rb") as f:
            out += f.read() + b"\n"
        if len(out) >= limit:
            break
    return bytes(out[:limit])


def batches(data: torch.Tensor, batch: int, length: int, generator: torch.Generator):
    """Random windows (B, L + 1) of the byte stream, forever."""
    while True:
        start = torch.randint(0, data.numel() - length - 1, (batch,), generator=generator)
        yield torch.stack([data[s:s + length + 1] for s in start.tolist()])


def train(model, data, steps, batch, length, lr, seed, log_every=50):
    """AdamW on next-byte cross entropy; returns the losses (mean per log_every steps)."""
    generator = torch.Generator().manual_seed(seed)
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=lr, total_steps=steps,
                                                pct_start=0.1)
    model.train()
    losses, window = [], []
    for i, chunk in zip(range(steps), batches(data, batch, length, generator)):
        logits = model(chunk[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), chunk[:, 1:].reshape(-1))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        window.append(loss.item())
        if (i + 1) % log_every == 0:
            losses.append(statistics.mean(window))
            print(f"  step {i + 1}/{steps}: loss {losses[-1]:.3f} nats/byte", flush=True)
            window = []
    return losses


@torch.no_grad()
def evaluate(model, data, length, windows=64):
    """Mean next-byte cross entropy on up to ``windows`` consecutive windows of held-out data."""
    model.eval()
    windows = min(windows, data.numel() // (length + 1))
    chunks = data[: windows * (length + 1)].reshape(windows, length + 1)
    logits = model(chunks[:, :-1])
    return nn.functional.cross_entropy(logits.reshape(-1, VOCAB),
                                       chunks[:, 1:].reshape(-1)).item()


# --- generation -------------------------------------------------------------------------------

def _sample(logits, uniform, temperature):
    """Inverse-CDF sampling with a given uniform draw per stream: (B, 256) -> (B,)."""
    probs = torch.softmax(logits / temperature, dim=-1)
    cdf = probs.cumsum(-1)
    token = torch.searchsorted(cdf, (uniform * cdf[:, -1:]).contiguous())
    return token.clamp_(max=VOCAB - 1)[:, 0]


@torch.inference_mode()
def generate_step(model, prompt, n, uniforms, temperature):
    """Prefill the prompt, then one step per token.  Returns (tokens (B, n), logits list)."""
    logits, states = model.prefill(prompt)
    last, out, seen = logits[:, -1], [], []
    for i in range(n):
        seen.append(last)
        token = _sample(last, uniforms[i], temperature)
        out.append(token)
        last, states = model.step(token, states)
    return torch.stack(out, 1), seen


@torch.inference_mode()
def generate_recompute(model, prompt, n, uniforms, temperature):
    """The whole forward over the prefix for every new token."""
    tokens, out = prompt, []
    for i in range(n):
        last = model(tokens)[:, -1]
        token = _sample(last, uniforms[i], temperature)
        out.append(token)
        tokens = torch.cat([tokens, token[:, None]], 1)
    return torch.stack(out, 1)


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--l-max", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=600, help="training steps")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=256, help="training window")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--data-mb", type=float, default=4.0, help="MB of stdlib source")
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--generate", type=int, default=512, help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--repeats", type=int, default=3, help="timed generations per method")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    raw = stdlib_bytes(int(args.data_mb * 1e6))
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
    split = int(0.95 * data.numel())
    train_data, val_data = data[:split], data[split:]
    model = CharLM(args.d_model, args.layers, args.l_max)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params} parameters; {data.numel()} bytes of stdlib source "
          f"({split} train, {data.numel() - split} held out)")
    t0 = time.perf_counter()
    losses = train(model, train_data, args.steps, args.batch, args.length, args.lr, args.seed)
    train_s = time.perf_counter() - t0
    val = evaluate(model, val_data, args.length)
    print(f"trained in {train_s:.0f} s; held-out loss {val:.3f} nats/byte "
          f"({val / math.log(2):.3f} bits/byte)")

    model.eval()
    start = int(torch.randint(0, val_data.numel() - args.prompt_len, (1,),
                              generator=torch.Generator().manual_seed(args.seed + 1)))
    prompt = val_data[start:start + args.prompt_len][None]           # (1, T)
    uniforms = torch.rand(args.generate, 1, 1, generator=torch.Generator().manual_seed(args.seed))
    step_times, recompute_times = [], []
    for _ in range(args.repeats):
        (tokens, seen), dt = timed(generate_step, model, prompt, args.generate, uniforms,
                                   args.temperature)
        step_times.append(dt)
        again, dt = timed(generate_recompute, model, prompt, args.generate, uniforms,
                          args.temperature)
        recompute_times.append(dt)
    same = bool(torch.equal(tokens, again))
    with torch.inference_mode():                                      # logits: step vs forward
        full = model(torch.cat([prompt, tokens], 1))[:, args.prompt_len - 1:-1]
    stepped = torch.stack(seen, 1)
    logit_err = float((stepped - full).abs().max() / full.abs().max())

    tps_step = [args.generate / t for t in step_times]
    tps_re = [args.generate / t for t in recompute_times]
    ratio = [a / b for a, b in zip(tps_step, tps_re)]

    def ms(xs):
        return f"{statistics.mean(xs):.1f} +- {statistics.stdev(xs) if len(xs) > 1 else 0:.1f}"

    text = bytes(tokens[0].tolist()).decode("utf-8", errors="replace")
    prompt_text = bytes(prompt[0].tolist()).decode("utf-8", errors="replace")
    print("\n--- prompt (held-out stdlib source) ---\n" + prompt_text)
    print("--- generated with SGConv.step ---\n" + text)
    print("---")
    print(f"step logits vs full forward logits, max |diff| / max |logit|: {logit_err:.2e}")
    print(f"same text from step and from recomputing: {same}")
    print(f"tokens/s, step: {ms(tps_step)}; recompute the prefix: {ms(tps_re)}; "
          f"ratio {ms(ratio)} (mean +- std of {args.repeats} generations of {args.generate} "
          f"tokens after a {args.prompt_len}-byte prompt)")
    result = dict(vars(args), parameters=n_params, train_seconds=train_s, losses=losses,
                  held_out_nats_per_byte=val, logit_rel_err=logit_err, same_text=same,
                  tokens_per_s_step=tps_step, tokens_per_s_recompute=tps_re, ratio=ratio,
                  prompt=prompt_text, generated=text, machine=platform.processor() or
                  platform.machine(), torch=torch.__version__)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
