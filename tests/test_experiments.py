"""experiments/run.py --smoke: the whole pipeline (tasks, every model, training, evaluation,
ablations, speed rows, table, plots) runs in well under a minute, and the loss falls.

Run in a subprocess with a time bound, as CI runs it; the results go to a temporary folder.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "run.py"),
                           "--smoke", "--out", str(out)], capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def _records(out):
    paths = [p for p in glob.glob(os.path.join(out, "runs", "*.json"))]
    return [json.load(open(p)) for p in paths]


def test_smoke_runs_every_cell_and_writes_the_table(smoke):
    out, stdout = smoke
    records = _records(out)
    cells = {(r["task"]["name"], r["model"]) for r in records if r["group"] == "main"}
    assert cells == {("listops", m) for m in ("sgconv", "local", "s4d", "dense", "transformer")} \
        | {(t, m) for t in ("adding", "far_match") for m in ("sgconv", "local", "s4d", "dense")}
    assert {tuple(r["ablation"]) for r in records if r["ablation"]} == {("decay", 1.0), ("d", 1)}
    text = open(os.path.join(out, "results.md")).read()
    assert "| listops" in text and "## Ablations" in text and "S4D / SGConv" in text
    assert os.path.exists(os.path.join(out, "speed", "L256.json"))
    assert text in stdout
    for r in records:
        assert r["num_parameters"] > 0 and r["train_tokens_per_s"] > 0
        assert all(map(lambda v: v == v, r["curve"]["train_loss"]))         # no NaN
    # the pipeline resumes: a second call finds every run done and only rebuilds the table
    again = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "run.py"),
                            "--smoke", "--out", str(out), "--no-speed"], capture_output=True,
                           text=True, timeout=300, cwd=REPO)
    assert again.returncode == 0 and "0 runs to do" in again.stdout


def test_smoke_loss_falls(smoke):
    """The regression task starts far from its targets (sums near 1, outputs near 0): every
    model's training loss must fall within the smoke run's 12 steps."""
    out, _ = smoke
    for r in _records(out):
        if r["task"]["name"] == "adding":
            losses = r["curve"]["train_loss"]
            assert sum(losses[-4:]) / 4 < sum(losses[:2]) / 2, (r["id"], losses)
