"""Run the experiments: models x tasks x seeds, ablations, speed; then the table and plots.

    python experiments/run.py                 # the full grid (~90 min on a quiet 2-core CPU)
    python experiments/run.py --quick         # the same grid, small (~10 min)
    python experiments/run.py --smoke         # seconds: the pipeline runs and the loss falls
    python experiments/run.py --long          # ListOps 5x longer: SGConv, local, S4D
    python experiments/run.py --report        # only rebuild the table and plots from results

Every run writes its own result file (``results/<mode>/runs/<id>.json``) and is skipped
when that file exists, so an interrupted grid resumes where it stopped.  ``--max-minutes M``
starts no new run after M minutes and exits with status 3 if runs remain (to run the grid
in pieces, e.g. one lock-holding piece at a time).  Each run trains in a fresh subprocess,
so that its peak memory is its own (smoke runs train in this process: one seed, seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import grid  # noqa: E402

MORE_TO_DO = 3


def _result_path(out: str, run_id: str) -> str:
    return os.path.join(out, "runs", run_id + ".json")


def worker(spec_path: str) -> None:
    """Train one run (spec in a JSON file) and write its result file (and kernel .npz)."""
    with open(spec_path) as f:
        spec = json.load(f)
    train_one(spec)


def train_one(spec: dict) -> None:
    """Train the run ``spec`` (a grid run plus 'out') and write its result files."""
    import numpy as np

    import training

    out = spec["out"]
    task = training.load_task(spec["task"], os.path.join(out, "data"))
    start = time.perf_counter()
    record = training.train(task, spec["model_options"], spec["train_options"], spec["seed"],
                            label=spec["id"])
    kernel = record.pop("kernel")
    if kernel is not None:
        np.savez_compressed(os.path.join(out, "runs", spec["id"] + ".kernel.npz"), kernel=kernel)
    record.update({k: spec[k] for k in ("id", "group", "model", "model_options",
                                        "train_options", "seed", "task")})
    record["ablation"] = spec.get("ablation")
    record["task_kind"] = task.kind
    record["wall_s"] = time.perf_counter() - start
    path = _result_path(out, spec["id"])
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(path + ".tmp", path)


def machine() -> str:
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} on "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="the small grid (60 short runs)")
    group.add_argument("--smoke", action="store_true", help="a seconds-long pipeline check")
    group.add_argument("--long", action="store_true",
                       help="ListOps trained 5x longer (SGConv, local, S4D; ~30 minutes)")
    parser.add_argument("--out", default=None,
                        help="results folder (default experiments/results/<mode>)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell (default 3)")
    parser.add_argument("--only", default=None,
                        help="run only ids containing this text (e.g. 'listops--' or 'ablation')")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="start no new run after this many minutes; exit 3 if runs remain")
    parser.add_argument("--no-speed", action="store_true", help="skip the throughput rows")
    parser.add_argument("--report", action="store_true",
                        help="only rebuild the table and plots from the results on disk")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    mode = "quick" if args.quick else "smoke" if args.smoke else "long" if args.long else "full"
    out = os.path.abspath(args.out or os.path.join(HERE, "results", mode))
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    started = time.perf_counter()

    def out_of_time() -> bool:
        return args.max_minutes is not None and \
            time.perf_counter() - started > 60 * args.max_minutes

    if not args.report:
        todo = [r for r in grid.runs(mode, args.seeds)
                if not os.path.exists(_result_path(out, r["id"]))
                and (args.only is None or args.only in r["id"])]
        print(f"{mode}: {len(todo)} runs to do, results in {out}", flush=True)
        for i, run in enumerate(todo):
            if out_of_time():
                print(f"stopping after {args.max_minutes} minutes; {len(todo) - i} runs remain")
                return MORE_TO_DO
            print(f"[{i + 1}/{len(todo)}] {run['id']}", flush=True)
            if mode == "smoke":             # seconds per run: no interpreter start-up each
                train_one(dict(run, out=out))
                continue
            spec_path = os.path.join(out, "runs", run["id"] + ".spec.json")
            with open(spec_path, "w") as f:
                json.dump(dict(run, out=out), f)
            subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", spec_path],
                           check=True)
            os.remove(spec_path)
        if not args.no_speed and args.only is None and mode != "long":
            import speed
            status = speed.run(mode, out, out_of_time)
            if status == MORE_TO_DO:
                return MORE_TO_DO
    import report
    report.write(mode, out, machine(), command=" ".join(["python experiments/run.py"]
                                                       + (argv if argv is not None
                                                          else sys.argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
