"""sgconv.torch on several processes: DDP, FSDP2 and context parallelism, each equal to one
process within the tolerance rule (tests/distributed_torch_check.py says which bound and why).

Every case runs in a subprocess (P processes joined by gloo on 127.0.0.1) with a time limit,
and the process group has a timeout: a rank that fails, or a collective that waits for a
rank that never comes, fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TIMEOUT = 240

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="this PyTorch build has no gloo backend")


def _run(P: int, cases: str, timeout: int = TIMEOUT):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, os.path.join(HERE, "distributed_torch_check.py"),
                           str(P), cases], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


def _assert_passed(res, expected: int) -> None:
    lines = res.stdout.splitlines()
    passed = [line for line in lines if line.startswith("PASS")]
    running = [line for line in lines if line.startswith("RUN")]
    assert res.returncode == 0 and len(passed) == expected, (
        f"exit {res.returncode} in {running[-1] if running else '?'}; {len(passed)} of "
        f"{expected} cases passed\n--- stdout\n{res.stdout[-3000:]}\n--- stderr\n"
        f"{res.stderr[-5000:]}")


def test_two_ranks_data_parallel_context_parallel_and_errors():
    """P=2: DDP and FSDP2 training equal one process; context parallel (3 cases) equals the
    reference and the single-device layer; mismatched batches and a lone collective raise."""
    _assert_passed(_run(2, "data,context,errors"), expected=2 + 3 + 1)


def test_four_ranks_context_parallel():
    """P=4: context parallel (3 cases, one with H < P) equals the reference and one device."""
    _assert_passed(_run(4, "context"), expected=3)


def test_failing_rank_surfaces_as_an_error():
    """Rank 1 raises while rank 0 waits in a collective: the run ends, non-zero, at once."""
    start = time.monotonic()
    res = _run(2, "fail", timeout=120)
    took = time.monotonic() - start
    assert res.returncode != 0, res.stdout
    assert "planted failure on rank 1" in res.stderr, res.stderr[-3000:]
    assert took < 60, f"the failure took {took:.0f} s to surface"
