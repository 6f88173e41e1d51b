"""Per-token latency of step-by-step decoding beside its baselines (asv rows).

``DecodeToken.time_token``: one new token's output at context L (H = 256, float32,
l_max = L, d = 64) by the three methods of decode_cases.py, on each backend:
``step`` (the decoder's O(P) update), ``recompute`` (the layer over the last L inputs by
FFT, kernel spectrum prepared) and ``dot`` (the cached kernel dotted with the history).
``DecodeToken.peakmem_state`` is the process's peak memory with the method set up (the
decoding state, or the baselines' buffers).  asv reports the rows; the ratios of one run
are printed by ``python asv_benchmarks/compare_decode.py``, which also covers L = 2^20.

Grid: L in {4096, 65536} x B in {1, 8}; ``SGCONV_BENCH_SMALLEST=1`` (CI) runs L = 1024,
B = 1 only.  A backend that cannot run here is skipped in setup.
"""

from __future__ import annotations

from .common import BACKENDS, SMALLEST
from .decode_cases import METHODS, make_case

LENGTHS = (1024,) if SMALLEST else (4096, 65536)
BATCHES = (1,) if SMALLEST else (1, 8)


class DecodeToken:
    """One token at context L: step vs recompute vs dot, per backend."""

    params = [list(BACKENDS), list(METHODS), list(LENGTHS), list(BATCHES)]
    param_names = ["backend", "method", "length", "batch"]
    timeout = 900
    number = 1
    repeat = (3, 10, 60.0)
    warmup_time = 0.0

    def setup(self, backend, method, length, batch):
        if backend == "torch":
            import torch
            torch.set_num_threads(2)
        self.case, self.inputs = make_case(backend, method, length, batch)
        self.i = 0
        for _ in range(2):                           # compile (JAX), caches, FFT plans
            self.time_token(backend, method, length, batch)

    def time_token(self, backend, method, length, batch):
        self.case.call(self.inputs[self.i % len(self.inputs)])
        self.i += 1

    def peakmem_state(self, backend, method, length, batch):
        self.time_token(backend, method, length, batch)
