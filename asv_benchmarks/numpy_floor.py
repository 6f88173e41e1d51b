"""The NumPy backend's convolution against the bare scipy.fft floor (issue 2's benchmark).

    python asv_benchmarks/numpy_floor.py [--batch 8 --d-model 256 --length 16384 --repeat 15]

Both sides compute the same causal linear convolution of u (B, H, L) float32 with a kernel
k (1, H, L) float32 (C = 1, no skip term D), with FFTs of the same length
n = next_fast_len(2L - 1) (32768 for L = 16384) on every core (``workers``):

- ``sgconv.conv``: the public call, ``sgconv.conv(u, k)`` inside ``sgconv.using("numpy")``,
  as a user makes it: input checks, the FFT plan, the kernel spectrum rfft(k, n) (the public
  function takes the kernel in the time domain, so this is part of every call),
  rfft(u, n), the spectral product, irfft(., n) and the cut to [..., :L].
- ``floor``: what no implementation can skip, written with bare scipy.fft:
  ``rfft(u, n)``, multiplied in place by ``k_f``, ``irfft(., n)[..., :L]``, where
  ``k_f = rfft(k, n)`` is computed once before timing.

Also shown, to locate any gap: ``conv_with_spectrum``, sgconv's generic code given the same
precomputed ``k_f`` as the floor (so it does exactly the floor's work plus its own
overhead); ``floor + kernel FFT``, the floor that also transforms the kernel on every call
(the same work as the public ``sgconv.conv``); and ``transforms only`` (rfft + irfft, no
product). Each round runs every variant once, in a rotating order (``sgconv._measure``'s
interleaved rounds, as ``sgconv bench``), and the medians over rounds are reported, with
ratios to the floor: wall-clock time (the target, issue 2: sgconv.conv within 1.2x), then
CPU time of the process (all threads), which other processes sharing the cores disturb less.

The same measurements are asv benchmarks (class ``NumpyConvFloor``).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import scipy.fft

if __package__ in (None, ""):  # run as a script: make `common` importable
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import SMALLEST, sgconv
else:
    from .common import SMALLEST, sgconv

from sgconv import _ops  # noqa: E402  (the generic math, for conv_with_spectrum)
from sgconv._measure import cores, interleaved  # noqa: E402  (shared with sgconv bench)

TARGET = 1.2
SIZES = {"batch": 8, "d_model": 256, "length": 16384}


class Case:
    """The arrays and the FFT length of one comparison (u (B, H, L), k (1, H, L), float32)."""

    def __init__(self, batch: int, d_model: int, length: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.u = rng.standard_normal((batch, d_model, length), dtype=np.float32)  # (B, H, L)
        self.k = rng.standard_normal((1, d_model, length), dtype=np.float32)      # (1, H, L)
        self.length = length
        self.workers = cores()
        self.bk = sgconv.backend("numpy")
        # The plan sgconv picks for this call; the floor uses the same n.
        self.plan = _ops.plan_fft(self.bk, length, length, False, None)
        self.n = self.plan.n
        if self.n != scipy.fft.next_fast_len(2 * length - 1, real=True):
            raise RuntimeError(f"sgconv planned n={self.n} (block={self.plan.block}); the floor "
                               f"assumes one FFT of next_fast_len(2L-1)")
        self.k_f = scipy.fft.rfft(self.k, self.n, workers=self.workers)             # (1, H, F)
        self.k_f_sg = _ops.kernel_spectrum(self.bk, self.k, None, self.plan, False)  # (1, H, F)

    # The variants; each returns the (B, ..., L) result so that nothing is optimised away.

    def sgconv_conv(self):
        with sgconv.using("numpy"):
            return sgconv.conv(self.u, self.k)                                     # (B, 1, H, L)

    def conv_with_spectrum(self):
        with sgconv.using("numpy"):
            return _ops.conv_with_spectrum(self.bk, self.u, self.k_f_sg, self.plan)  # (B, 1, H, L)

    def floor(self):
        u_f = scipy.fft.rfft(self.u, self.n, workers=self.workers)                 # (B, H, F)
        u_f *= self.k_f[0]
        return scipy.fft.irfft(u_f, self.n, workers=self.workers)[..., :self.length]  # (B, H, L)

    def floor_with_kernel_fft(self):
        k_f = scipy.fft.rfft(self.k[0], self.n, workers=self.workers)              # (H, F)
        u_f = scipy.fft.rfft(self.u, self.n, workers=self.workers)                 # (B, H, F)
        u_f *= k_f
        return scipy.fft.irfft(u_f, self.n, workers=self.workers)[..., :self.length]  # (B, H, L)

    def transforms_only(self):
        u_f = scipy.fft.rfft(self.u, self.n, workers=self.workers)                 # (B, H, F)
        return scipy.fft.irfft(u_f, self.n, workers=self.workers)                  # (B, H, n)

    VARIANTS = ("sgconv_conv", "conv_with_spectrum", "floor", "floor_with_kernel_fft",
                "transforms_only")
    LABELS = {"sgconv_conv": "sgconv.conv (public call)",
              "conv_with_spectrum": "conv_with_spectrum (k_f given)",
              "floor": "floor: rfft, *k_f, irfft",
              "floor_with_kernel_fft": "floor + kernel FFT per call",
              "transforms_only": "transforms only (rfft+irfft)"}

    def check(self) -> float:
        """max |sgconv.conv - floor| / max |floor|: both sides compute the same numbers."""
        a, b = self.sgconv_conv()[:, 0], self.floor()
        return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def measure(case: Case, repeat: int, variants=Case.VARIANTS, progress=None) -> dict:
    """{variant: sgconv._measure.Samples} over ``repeat`` interleaved rounds (after one
    untimed warm-up call each: FFT plans, page faults; the order rotates per round).  Each
    holds wall seconds and the CPU seconds of this process (all its threads: steadier than
    wall time when other processes share the cores)."""
    return interleaved({v: getattr(case, v) for v in variants}, repeat, progress=progress)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Time the NumPy backend's sgconv.conv against the bare scipy.fft floor.")
    parser.add_argument("--batch", type=int, default=SIZES["batch"], help="B (default 8)")
    parser.add_argument("--d-model", type=int, default=SIZES["d_model"], help="H (default 256)")
    parser.add_argument("--length", type=int, default=SIZES["length"], help="L (default 16384)")
    parser.add_argument("--repeat", type=int, default=15, help="interleaved rounds (default 15)")
    args = parser.parse_args(argv)
    for name in ("batch", "d_model", "length", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    case = Case(args.batch, args.d_model, args.length)
    err = case.check()
    print(f"sgconv {sgconv.__version__}, numpy {np.__version__}, scipy {scipy.__version__}; "
          f"B={args.batch} H={args.d_model} L={args.length} float32, kernel (1, H, L), "
          f"n={case.n}, workers={case.workers}, {args.repeat} interleaved rounds")
    print(f"max |sgconv.conv - floor| / max |floor| = {err:.2e} (the same convolution)")
    samples = measure(case, args.repeat)
    wall = {v: s.median for v, s in samples.items()}
    cpu = {v: s.cpu_median for v, s in samples.items()}
    print(f"{'variant':34s} {'wall ms':>9s} {'x floor':>8s} {'CPU ms':>9s} {'x floor':>8s}")
    for v in Case.VARIANTS:
        print(f"{Case.LABELS[v]:34s} {1e3 * wall[v]:9.1f} {wall[v] / wall['floor']:8.2f} "
              f"{1e3 * cpu[v]:9.1f} {cpu[v] / cpu['floor']:8.2f}")
    ratio = wall["sgconv_conv"] / wall["floor"]
    verdict = "within" if ratio <= TARGET else "ABOVE"
    print(f"ratio sgconv.conv / floor = {ratio:.2f} wall-clock ({verdict} the {TARGET}x target), "
          f"{cpu['sgconv_conv'] / cpu['floor']:.2f} in CPU time")
    return 0


class NumpyConvFloor:
    """asv: the NumPy backend's convolution and the scipy.fft floor, B=8 H=256 L=16384 float32."""

    timeout = 300
    number = 1
    repeat = (3, 10, 20.0)  # (min, max, seconds): each call takes ~0.2-0.6 s on 2 cores

    def setup(self):
        sgconv.backend("numpy")
        # CI's smallest-size run (SGCONV_BENCH_SMALLEST=1) only checks that the rows work.
        self.case = Case(**({"batch": 1, "d_model": 16, "length": 1024} if SMALLEST else SIZES))

    def time_sgconv_conv(self):
        self.case.sgconv_conv()

    def time_conv_with_spectrum(self):
        self.case.conv_with_spectrum()

    def time_floor(self):
        self.case.floor()

    def time_floor_with_kernel_fft(self):
        self.case.floor_with_kernel_fft()

    def time_transforms_only(self):
        self.case.transforms_only()

    def track_ratio_to_floor(self):
        """Median time of sgconv.conv / median time of the floor, 5 interleaved rounds."""
        samples = measure(self.case, 5, ("sgconv_conv", "floor"))
        return samples["sgconv_conv"].median / samples["floor"].median

    track_ratio_to_floor.unit = "x floor"


if __name__ == "__main__":
    raise SystemExit(main())
