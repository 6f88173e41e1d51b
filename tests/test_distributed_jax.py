"""sgconv.jax on several devices: a sharded batch and context parallelism (shard_map and
lax.all_to_all), each equal to one device within the tolerance rule
(tests/distributed_jax_check.py says which bound and why).

JAX fixes its device count when it starts, so the cases run in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=4 and a time limit.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("jax")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CASES = 2 + 5 + 1          # data parallel on 2 and 4 devices; context_apply; the shard function


def test_data_and_context_parallel_on_four_cpu_devices():
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                          " --xla_force_host_platform_device_count=4").strip())
    res = subprocess.run([sys.executable, os.path.join(HERE, "distributed_jax_check.py")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    passed = [line for line in res.stdout.splitlines() if line.startswith("PASS")]
    assert res.returncode == 0 and len(passed) == CASES, (
        f"exit {res.returncode}; {len(passed)} of {CASES} cases passed\n--- stdout\n"
        f"{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-5000:]}")
