"""``sgconv bench``: layer forward (and forward+backward) time and peak memory per backend and
length, as ratios to the bare scipy.fft floor of the same convolution timed in the same rounds.

Timing and memory come from :mod:`sgconv._measure`, the helper the asv benchmarks use too.
"""

from __future__ import annotations

import sys

import numpy as np

from .. import _measure
from ._common import (CliError, Progress, backend_names, cores, fmt_3, fmt_int, fmt_ms,
                      int_at_least, split_names, table)

__all__ = ["add_parser", "run"]

_FLOATS = ("float32", "float64", "float16", "bfloat16")
_LENGTHS = (1024, 4096, 16384, 65536)
#: A timing sample lasts at least this long (several back-to-back calls for short ones).
_MIN_SAMPLE_S = 0.02


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="forward/backward time and memory per backend",
                       description="Time the SGConv layer per backend and length against the "
                       "bare scipy.fft floor of the same convolution, measured in the same "
                       "rounds; report peak memory.  Shows a progress bar on a terminal.")
    p.add_argument("--backend", action="append", metavar="NAME",
                   help="backend(s) to time (repeatable or comma-separated; default: every "
                   "usable one)")
    p.add_argument("--lengths", nargs="+", metavar="L",
                   help="sequence lengths (default 1024 4096 16384 65536; commas allowed)")
    p.add_argument("--batch", type=int_at_least(1), default=2, help="B (default 2)")
    p.add_argument("--d-model", type=int_at_least(1), default=32, help="H (default 32)")
    p.add_argument("--dtype", choices=_FLOATS, default="float32", help="default float32")
    p.add_argument("--repeat", type=int_at_least(1), default=5,
                   help="timing rounds, median reported (default 5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _lengths(values) -> list[int]:
    out: list[int] = []
    for value in split_names(values):
        try:
            length = int(value)
        except ValueError:
            raise CliError(f"--lengths expects integers >= 1 (e.g. 1024,4096), got {value!r}")
        if length < 1:
            raise CliError(f"--lengths expects integers >= 1, got {length}")
        out.append(length)
    return out


def _peak_memory_mb(name: str, bk, fn) -> str:
    """Peak extra memory of one call of ``fn``: device memory for a torch CUDA backend; for
    jitted JAX, XLA's analysis of the compiled program (temporaries + output); else the rise
    of the process's peak resident set (host RSS) over its level before the call."""
    if name == "torch" and "cuda" in (bk.device_description() or "").lower():
        torch = sys.modules["torch"]
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        return f"{fmt_3((torch.cuda.max_memory_allocated() - before) / 2 ** 20)} (gpu)"
    if hasattr(fn, "xla_bytes"):  # XLA pools its buffers: its own analysis says more
        try:
            return f"{fmt_3(fn.xla_bytes() / 2 ** 20)} (XLA)"
        except Exception:  # memory_analysis is not offered by every XLA backend
            return "n/a"
    if "cpu" not in (bk.device_description() or "cpu").lower():
        return "n/a (gpu)"
    _measure.release_free_memory()
    mib, exact = _measure.host_peak_mib(fn)
    if mib is None:
        return "n/a"
    return fmt_3(mib) + ("" if exact else " (bound)")


def _floor_callable(u: np.ndarray, length: int):
    """The bare scipy.fft floor of the layer's convolution: rfft(u, n) * k_f -> irfft,
    n = next_fast_len(2L - 1), every core, k_f of a random (H, L) kernel computed here."""
    import scipy.fft

    n = scipy.fft.next_fast_len(2 * length - 1, real=True)
    workers = cores()
    k = np.random.default_rng(1).standard_normal(u.shape[1:]).astype(u.dtype)  # (H, L)
    k_f = scipy.fft.rfft(k, n, workers=workers)                     # (H, F)

    def floor():
        u_f = scipy.fft.rfft(u, n, workers=workers)                 # (B, H, F)
        u_f *= k_f
        return scipy.fft.irfft(u_f, n, workers=workers)[..., :length]  # (B, H, L)

    return floor


class _BenchCase:
    """One (backend, L) row: the layer callables, the floor, and what was measured."""

    def __init__(self, name, bk, length, args):
        import sgconv

        self.name, self.bk, self.length = name, bk, length
        dtype = args.dtype
        if name == "jax" and dtype == "float64" and not bk.x64_enabled():
            raise CliError("jax float64 needs jax_enable_x64 (sgconv never turns it on)")
        config = sgconv.SGConvConfig(d_model=args.d_model, l_max=length)
        with sgconv.using(name):
            params = sgconv.init(config, seed=0, dtype=dtype, backend=name)
            u_np = np.random.default_rng(0).standard_normal((args.batch, args.d_model, length))
            u = bk.asarray(u_np, dtype=dtype)                      # (B, H, L)
        forward = _measure.forward_fn(name, params)
        self.forward = lambda: forward(u)
        if hasattr(forward, "xla_bytes"):
            self.forward.xla_bytes = lambda: forward.xla_bytes(u)
        try:
            forward_backward = _measure.forward_backward_fn(name, params)
        except NotImplementedError:                                # no autodiff (numpy, cupy)
            self.forward_backward = None
        else:
            self.forward_backward = lambda: forward_backward(u)
        self.forward()                                             # compile (jax), warm up
        if self.forward_backward is not None:
            self.forward_backward()
        self.floor = _floor_callable(u_np.astype("float64" if dtype == "float64"
                                                 else "float32"), length)
        self.floor()
        self.times = None
        self.memory = "n/a"

    def time(self, repeat: int) -> None:
        fns = {"fwd": self.forward, "floor": self.floor}
        if self.forward_backward is not None:
            fns["bwd"] = self.forward_backward
        samples = _measure.interleaved(fns, repeat, min_sample_s=_MIN_SAMPLE_S)
        self.times = {key: s.median for key, s in samples.items()}

    def row(self, dtype: str) -> list:
        t = self.times
        bwd = t.get("bwd")
        return [self.name, dtype, fmt_int(self.length), fmt_ms(t["fwd"]),
                f"{t['fwd'] / t['floor']:.2f}", "-" if bwd is None else fmt_ms(bwd),
                "-" if bwd is None else f"{bwd / t['floor']:.2f}", fmt_ms(t["floor"]),
                self.memory]


def run(args) -> int:
    import sgconv

    names = backend_names(args.backend)
    lengths = _lengths(args.lengths) if args.lengths else list(_LENGTHS)
    infos = sgconv.available_backends()
    if names is None:
        names = [n for n, info in infos.items() if info.usable]
    print(f"sgconv {sgconv.__version__} bench: layer forward (and forward+backward for autodiff "
          f"backends), B={args.batch}, H={args.d_model}, C=1, d=64, l_max=L, {args.dtype}; "
          f"median of {args.repeat} interleaved rounds; {cores()} CPU cores")
    print("baseline: the bare scipy.fft floor of the same convolution (rfft(u, n) * k_f -> "
          "irfft, n = next_fast_len(2L-1), kernel spectrum precomputed, every core), timed "
          "in the same rounds; '/floor' = time / floor time")
    rows, cases, failures = [], [], 0
    usable = [n for n in names if infos[n].usable]
    progress = Progress(2 * len(usable) * len(lengths), enabled=not args.no_progress)
    exact = False
    try:
        # 1. timings, every row with the allocator as it normally runs
        for name in names:
            info = infos[name]
            if not info.usable:
                rows.append(([name, "-", "-", "-", "-", "-", "-", "-",
                              f"unavailable: {info.reason.split(';')[0]}"], None))
                continue
            bk = sgconv.backend(name)
            for length in lengths:
                progress.show(f"{name} L={length}: time")
                try:
                    case = _BenchCase(name, bk, length, args)
                    case.time(args.repeat)
                except CliError as exc:
                    rows.append(([name, args.dtype, fmt_int(length)] + ["-"] * 5
                                 + [f"skipped: {exc}"], None))
                except Exception as exc:  # report the row, keep going, exit 1 at the end
                    failures += 1
                    first = str(exc).splitlines()[0] if str(exc) else ""
                    rows.append(([name, args.dtype, fmt_int(length)] + ["-"] * 5
                                 + [f"error: {type(exc).__name__}: {first}"], None))
                else:
                    rows.append((None, case))
                    cases.append(case)
                progress.step(f"{name} L={length}: time")
        # 2. peak memory of one forward call per row, with exact RSS accounting
        exact = _measure.exact_rss_accounting()
        for case in cases:
            progress.show(f"{case.name} L={case.length}: memory")
            case.memory = _peak_memory_mb(case.name, case.bk, case.forward)
            progress.step(f"{case.name} L={case.length}: memory")
    finally:
        progress.close()
    print(table(["backend", "dtype", "L", "fwd ms", "/floor", "fwd+bwd ms", "/floor",
                 "floor ms", "peak MB (fwd)"],
                [row if case is None else case.row(args.dtype) for row, case in rows],
                ["<", "<", ">", ">", ">", ">", ">", ">", ">"]))
    print("peak MB: the rise of this process's peak resident memory during one forward call"
          + ("" if exact else " (approximate: freed memory may be reused unseen)")
          + "; (bound): an upper bound where the peak could not be reset; (XLA): temporaries "
          "+ output of the compiled JAX program; device memory for CUDA torch")
    return 1 if failures or not usable else 0
