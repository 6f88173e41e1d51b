"""The results table (Markdown) and plots from the result files of a mode's runs."""

from __future__ import annotations

import glob
import json
import os
import statistics
from collections import defaultdict

import numpy as np

MODEL_ORDER = ("sgconv", "local", "s4d", "dense", "transformer")
TASK_ORDER = ("listops", "adding", "far_match")
REFERENCE = {"listops": "majority class of the test split",
             "adding": "predicting the mean: MSE 1/6 = 0.1667",
             "far_match": "chance: 50%; a local model scores this exactly"}


def load(out: str) -> list[dict]:
    records = []
    for path in sorted(glob.glob(os.path.join(out, "runs", "*.json"))):
        if path.endswith(".spec.json"):
            continue
        with open(path) as f:
            records.append(json.load(f))
    return records


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _score_text(kind: str, values: list[float]) -> str:
    if kind == "classification":
        m, s = _mean_std([100 * v for v in values])
        return f"{m:.1f} ± {s:.1f}"
    m, s = _mean_std(values)
    return f"{m:.4f} ± {s:.4f}"


def _metric(record: dict) -> float:
    test = record["test"]
    return test["accuracy"] if "accuracy" in test else test["mse"]


def _majority(out: str, spec: dict) -> str:
    import training
    task = training.load_task(spec, os.path.join(out, "data"))
    counts = np.bincount(task.test.y)
    return f"{100 * counts.max() / counts.sum():.1f}%"


def _load(records: list[dict]) -> str:
    """The 5-minute load average at the end of the runs (2 = both cores busy): tokens/s
    measured on a shared machine are only comparable at similar load."""
    loads = [r["load_average"] for r in records if "load_average" in r]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "n/a"


def main_table(records: list[dict], out: str) -> list[str]:
    cells = defaultdict(list)
    for r in records:
        if r["group"] == "main":
            cells[(r["task"]["name"], r["model"])].append(r)
    lines = ["| task | model | test score (mean ± std) | seeds | parameters | train tokens/s "
             "| peak memory (MiB) | train time (s) | machine load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for task in TASK_ORDER:
        models = [m for m in MODEL_ORDER if (task, m) in cells]
        if not models:
            continue
        kind = cells[(task, models[0])][0]["task_kind"]
        unit = "accuracy %" if kind == "classification" else "MSE"
        ref = REFERENCE[task]
        if task == "listops":
            ref = f"majority class {_majority(out, cells[(task, models[0])][0]['task'])}"
        for model in models:
            rs = cells[(task, model)]
            lines.append(
                f"| {task} ({unit}; {ref}) | {model} | {_score_text(kind, [_metric(r) for r in rs])} "
                f"| {len(rs)} | {rs[0]['num_parameters']:,} "
                f"| {statistics.fmean(r['train_tokens_per_s'] for r in rs):,.0f} "
                f"| {statistics.fmean(r['peak_mem_mib'] for r in rs):,.0f} "
                f"| {statistics.fmean(r['train_time_s'] for r in rs):,.0f} "
                f"| {_load(rs)} |")
    return lines


def ablation_table(records: list[dict]) -> list[str]:
    cells = defaultdict(list)
    for r in records:
        if r["group"].startswith("ablation"):
            what, value = r["ablation"]
            cells[(what, value)].append(r)
            if what == "decay" and value == 2.0:        # the default: also the d ablation's row
                cells[("d", r["model_options"]["kernel_dim"])].append(r)
    if not cells:
        return []
    key = next(iter(cells.values()))[0]["task"]
    lines = [f"| ablation (SGConv on far match, L = {key['length']}, key of "
             f"{key.get('key_length')} tokens) | value | test accuracy % (mean ± std) | seeds "
             "| parameters | scales N |", "|---|---|---|---|---|---|"]
    for (what, value), rs in sorted(cells.items()):
        label = "decay multiplier m (alpha = 1/m)" if what == "decay" else "sub-kernel length d"
        opts = rs[0]["model_options"]
        n_scales = 1 + max(0, int(np.ceil(np.log2(opts["l_max"] / opts["kernel_dim"]))))
        lines.append(f"| {label} | {value:g} | {_score_text('classification', [_metric(r) for r in rs])} "
                     f"| {len(rs)} | {rs[0]['num_parameters']:,} | {n_scales} |")
    return lines


def speed_table(out: str) -> list[str]:
    paths = sorted(glob.glob(os.path.join(out, "speed", "L*.json")),
                   key=lambda p: int(os.path.basename(p)[1:-5]))
    if not paths:
        return []
    lines = ["| L | batch | SGConv tokens/s | S4D tokens/s | Transformer tokens/s "
             "| S4D / SGConv | Transformer / SGConv |", "|---|---|---|---|---|---|---|"]
    for path in paths:
        with open(path) as f:
            rows = {r["kind"]: r for r in json.load(f)}
        sg, s4, tf = (rows[k]["tokens_per_s"] for k in ("sgconv", "s4d", "transformer"))
        lines.append(f"| {rows['sgconv']['length']} | {rows['sgconv']['batch']} | {sg:,.0f} "
                     f"| {s4:,.0f} | {tf:,.0f} | {s4 / sg:.2f} | {tf / sg:.2f} |")
    return lines


def plots(records: list[dict], out: str) -> list[str]:
    """Learning curves per task, learned kernels per task, the ablations; returns file names."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install 'sgconv[plot]')")
        return []
    made = []
    by_task = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["group"] == "main":
            by_task[r["task"]["name"]][r["model"]].append(r)
    for task, models in by_task.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for model in MODEL_ORDER:
            if model not in models:
                continue
            curves = [r["curve"] for r in models[model]]
            n = min(len(c["step"]) for c in curves)
            steps = curves[0]["step"][:n]
            values = np.array([c["val_score"][:n] for c in curves])
            if models[model][0]["task_kind"] == "regression":
                values = -values
            ax.plot(steps, values.mean(0), label=model)
            ax.fill_between(steps, values.min(0), values.max(0), alpha=0.2)
        kind = next(iter(models.values()))[0]["task_kind"]
        ax.set_xlabel("training step")
        ax.set_ylabel("validation accuracy" if kind == "classification" else "validation MSE")
        ax.set_title(f"{task}: mean over seeds (band: min-max)")
        ax.legend()
        name = f"curves_{task}.png"
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=110)
        plt.close(fig)
        made.append(name)

        shown = [m for m in MODEL_ORDER
                 if m in models and os.path.exists(_kernel_path(out, models[m][0]))]
        if shown:
            fig, axes = plt.subplots(len(shown), 1, figsize=(7, 1.9 * len(shown)), squeeze=False)
            for ax, model in zip(axes[:, 0], shown):
                k = np.load(_kernel_path(out, models[model][0]))["kernel"]   # (C', H, L)
                for h in range(min(4, k.shape[1])):
                    ax.plot(k[0, h], lw=0.8)
                ax.set_title(f"{model}: learned causal kernel, block 1, channels 0-3 (seed 0)",
                             fontsize=9)
                ax.set_xlim(0, k.shape[-1])
            axes[-1, 0].set_xlabel("lag")
            name = f"kernels_{task}.png"
            fig.tight_layout()
            fig.savefig(os.path.join(out, name), dpi=110)
            plt.close(fig)
            made.append(name)
    return made


def _kernel_path(out: str, record: dict) -> str:
    return os.path.join(out, "runs", record["id"] + ".kernel.npz")


def write(mode: str, out: str, machine: str, command: str) -> str:
    """results.md (tables, command, machine) and the plots, in ``out``; returns the Markdown."""
    records = load(out)
    seeds = sorted({r["seed"] for r in records})
    wall = sum(r["wall_s"] for r in records)
    parts = [f"# Results ({mode})", "",
             f"Command: `{command}`  ", f"Machine: {machine}  ",
             f"Seeds: {seeds}; {len(records)} runs, {wall / 60:.1f} minutes of training runs "
             f"(wall time of the runs, without start-up and the speed rows).", "",
             "## Models x tasks", ""]
    parts += main_table(records, out)
    ablation = ablation_table(records)
    if ablation:
        parts += ["", "## Ablations", ""] + ablation
    speed = speed_table(out)
    if speed:
        parts += ["", "## Training throughput of one block (forward + backward, H = 64, "
                  "B x L = 16384 tokens)", ""] + speed
    figures = plots(records, out)
    if figures:
        parts += ["", "## Plots", ""] + [f"![{f}]({f})" for f in figures]
    text = "\n".join(parts) + "\n"
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    print(text)
    return text
