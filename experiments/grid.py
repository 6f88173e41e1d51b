"""What the experiments run: tasks, models, seeds and ablations for each mode.

A run is (task, model, seed) with its training options; its id names its result file.
``full`` is the paper-scale table (63 runs of 50-95 s each on a 2-core CPU), ``quick`` the
same grid on smaller data and fewer steps (60 runs of 10-80 s), ``smoke`` a seconds-long
pass through the whole pipeline (CI runs it).
"""

from __future__ import annotations

import copy

# --- models ----------------------------------------------------------------------------------
#
# One backbone for all (the authors' LRA backbone: post-norm, batch norm, GLU output linear,
# dropout 0, bidirectional), width H and depth set per task; only the sequence mixer changes.
# Parameter counts are printed in the table.

def models(task: str, H: int, l_max: int, kernel_dim: int, local_width: int) -> dict:
    """model name -> ModelConfig fields (the encoder/decoder come from the task)."""
    backbone = dict(d_model=H, l_max=l_max, bidirectional=True, norm="batch", prenorm=False,
                    dropout=0.0, postact="glu")
    return {
        "sgconv": dict(backbone, layer="sgconv", kernel_dim=kernel_dim, decay_min=2.0,
                       decay_max=2.0),
        "local": dict(backbone, layer="local", local_width=local_width),
        "s4d": dict(backbone, layer="s4d", d_state=64),
        "dense": dict(backbone, layer="dense"),
        # a Transformer: attention + feed-forward (width 1x: close to SGConv's block in size)
        "transformer": dict(backbone, layer="attention", n_heads=4, ffn_mult=1),
    }


# --- modes ---------------------------------------------------------------------------------

def _optim(steps: int, eval_every: int, batch_size: int, kernel_lr: float) -> dict:
    return dict(steps=steps, eval_every=eval_every, batch_size=batch_size, lr=0.01,
                weight_decay=0.05, kernel_lr=kernel_lr, kernel_weight_decay=None,
                warmup=0.1)


def _settings(mode: str) -> dict:
    """Per mode: split sizes, sequence length L, width H, depth, training steps per task."""
    if mode == "full":
        return dict(n=(16000, 1000, 1000), L=512, H=64, layers=4,
                    steps={"listops": 800, "adding": 400, "far_match": 400, "ablation": 400})
    if mode == "quick":
        return dict(n=(3000, 300, 300), L=256, H=32, layers=2,
                    steps={"listops": 150, "adding": 100, "far_match": 100, "ablation": 100})
    if mode == "smoke":
        return dict(n=(160, 64, 64), L=32, H=16, layers=2,
                    steps={"listops": 12, "adding": 12, "far_match": 12, "ablation": 12})
    raise ValueError(f"unknown mode {mode!r}; expected 'full', 'quick' or 'smoke'")


def long_listops(seeds: int | None = None) -> list[dict]:
    """The investigation of ListOps (mode 'long'): the full grid's ListOps models trained
    five times longer (4000 steps, about 8 epochs), one seed unless asked for more."""
    out = []
    for run in runs("full", seeds or 1):
        if run["group"] == "main" and run["task"]["name"] == "listops" \
                and run["model"] in ("sgconv", "local", "s4d"):
            run["train_options"] = _optim(4000, 250, 32, 0.001)
            out.append(run)
    return out


def runs(mode: str, seeds: int | None = None) -> list[dict]:
    """Every run of ``mode``: dicts with id, group, task (spec), model, model_options,
    train_options, seed (and ablation=(what, value) for the ablations)."""
    if mode == "long":
        return long_listops(seeds)
    s = _settings(mode)
    n_train, n_val, n_test = s["n"]
    L, H = s["L"], s["H"]
    seeds = (1 if mode == "smoke" else 3) if seeds is None else seeds
    batch = 8 if mode == "smoke" else 32

    def optim(key):
        steps = s["steps"][key]
        return _optim(steps, max(1, steps // 8), batch, 0.001)

    task_specs = {
        # ListOps at CPU scale: LRA's generator with lengths in (L/5, L) instead of (500, 2000)
        "listops": dict(name="listops", n_train=n_train, n_val=n_val, n_test=n_test,
                        min_length=L // 5, max_length=L, seed=0),
        "adding": dict(name="adding", n_train=n_train, n_val=n_val, n_test=n_test, length=L,
                       seed=0),
        # the key is the first L/16 tokens (32 at L = 512)
        "far_match": dict(name="far_match", n_train=n_train, n_val=n_val, n_test=n_test,
                          length=L, seed=0),
    }
    # sub-kernel length d: the authors' d = 1 on ListOps; 16 on the synthetic tasks.  Local
    # width L/16 (32 at L = 512): 4 layers reach 4 x 31 = 124 steps, far from the key.
    kernel_dim = {"listops": 1, "adding": 16, "far_match": 16}
    width = max(2, L // 16)
    out = []
    for task, spec in task_specs.items():
        kd = kernel_dim[task] if mode != "smoke" else min(kernel_dim[task], 4)
        table = models(task, H, L, kd, width)
        if task != "listops":                 # the Transformer runs on the shorter task only
            table.pop("transformer")
        for name, options in table.items():
            options = dict(options, n_layers=s["layers"])
            for seed in range(seeds):
                out.append(dict(id=f"{task}--{name}--s{seed}", group="main", task=spec,
                                model=name, model_options=options, train_options=optim(task),
                                seed=seed))
    # Ablations (the paper's two knobs) on a harder far match: a key of L/64 tokens (8 at
    # L = 512), which SGConv with the default decay does not find within the budget.
    hard = dict(task_specs["far_match"], key_length=max(1, L // 64))
    base = dict(models("far_match", H, L, 16 if mode != "smoke" else 4, width)["sgconv"],
                n_layers=s["layers"])
    variants = [("decay", m, dict(decay_min=m, decay_max=m)) for m in (1.0, 1.5, 2.0, 3.0)]
    variants += [("d", d, dict(kernel_dim=d)) for d in (1, 4, 64)]   # d = 16: decay 2's row
    for what, value, change in variants:
        if mode == "smoke" and (what, value) not in (("decay", 1.0), ("d", 1)):
            continue
        options = dict(base, **change)
        for seed in range(seeds):
            out.append(dict(id=f"ablation-{what}{value:g}--s{seed}", group=f"ablation-{what}",
                            task=hard, model="sgconv", model_options=options,
                            ablation=(what, value), train_options=optim("ablation"),
                            seed=seed))
    return copy.deepcopy(out)
