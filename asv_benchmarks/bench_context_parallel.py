"""Context-parallel SGConv (sgconv.torch.distributed) on P gloo processes against the
single-process layer: per-rank peak memory and time as ratios, bytes sent per rank.

Each number comes from scale_context_parallel.py's ``measure`` (fresh processes per row;
its docstring says how memory and time are read), computed once per environment in
``setup_cache``: H=64, B=1, L=l_max=2^20 (with ``SGCONV_BENCH_SMALLEST=1``, as CI runs:
H=8, L=4096), forward in evaluation and forward+backward.  The full table at 2^20 and
2^22: ``python asv_benchmarks/scale_context_parallel.py`` (README, "Distributed").
"""

from __future__ import annotations

import os

from .common import SMALLEST


def _torch_distributed() -> bool:
    try:
        import torch.distributed as dist
    except ImportError:
        return False
    return dist.is_available() and dist.is_gloo_available()


class ContextParallel:
    """Ratios of a rank's numbers to one process's, per number of ranks P and mode."""

    params = [[2, 4], ["forward", "train"]]
    param_names = ["ranks", "mode"]
    timeout = 1800
    number = 1
    repeat = 1

    def setup_cache(self):
        if not _torch_distributed():
            return None
        from .scale_context_parallel import measure
        L, H = (4096, 8) if SMALLEST else (2 ** 20, 64)
        rows = {}
        for mode in ("forward", "train"):
            for parts in (1, 2, 4):
                rows[f"{parts}-{mode}"] = measure(L, parts, mode, H, 1, repeats=2,
                                                  cores=os.cpu_count() or 1, timeout=1200)
        return rows

    def setup(self, rows, ranks, mode):
        if rows is None:
            raise NotImplementedError("PyTorch with the gloo backend is not available")

    def track_peak_memory_ratio(self, rows, ranks, mode):
        """Largest rank's peak memory over the single process's (target at P=4: <= 0.4)."""
        return rows[f"{ranks}-{mode}"]["peak_mib"] / rows[f"1-{mode}"]["peak_mib"]

    track_peak_memory_ratio.unit = "ratio"

    def track_time_ratio(self, rows, ranks, mode):
        """Slowest rank's time over the single process's (ranks share this machine's cores)."""
        return rows[f"{ranks}-{mode}"]["time_s"] / rows[f"1-{mode}"]["time_s"]

    track_time_ratio.unit = "ratio"

    def track_sent_mib(self, rows, ranks, mode):
        """MiB one rank sends per layer call, counted at torch.distributed.all_to_all_single."""
        return rows[f"{ranks}-{mode}"]["sent_bytes"] / 2 ** 20

    track_sent_mib.unit = "MiB"
