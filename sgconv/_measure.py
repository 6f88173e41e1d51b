"""Timing and peak memory of calls: the one helper behind ``sgconv bench`` and the scripts in
``asv_benchmarks/`` (``compare_torch.py``, ``compare_jax_torch.py``, ``numpy_floor.py``,
``gpu_check.py``, and the layer callables of ``common.py``).

Timing (:func:`interleaved`): every callable is called once untimed (a warm-up that also
sizes its samples), then in each round each callable takes one sample, in an order that
rotates by one per round, so that a load spike or a cache state hits all of them alike; the
median over rounds is what noise on a shared machine affects least.  A sample is one call,
or as many back-to-back calls as make it last ``min_sample_s`` (as ``timeit`` does for short
calls).  Wall time and the process's CPU time (all threads) are both recorded.

Peak memory (:func:`host_peak_mib`): the rise of the process's resident set during one call.
On Linux the kernel's high-water mark is reset first (writing 5 to /proc/self/clear_refs)
and read back (VmHWM), which is exact; where the reset is refused, ``ru_maxrss`` (the peak
since the process started) is used and the result is only an upper bound.

Not imported by ``import sgconv``.  Internal: the API may change with the CLI and the
benchmarks that use it.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import resource
import statistics
import sys
import time
from typing import Any, Callable, Mapping

__all__ = ["Samples", "interleaved", "cpu_seconds", "rss_peak_reset", "rss_kib", "hwm_kib",
           "host_peak_mib", "exact_rss_accounting", "release_free_memory", "TRAINABLE",
           "split_trainable", "compiled", "forward_fn", "forward_backward_fn", "cores"]


# --- time -----------------------------------------------------------------------------------

@dataclasses.dataclass
class Samples:
    """The samples of one callable: seconds per call, one entry per round."""

    wall: list = dataclasses.field(default_factory=list)
    cpu: list = dataclasses.field(default_factory=list)
    number: int = 1          # calls per sample
    first: float = 0.0       # seconds of the untimed warm-up call

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def best(self) -> float:
        return min(self.wall)

    @property
    def worst(self) -> float:
        return max(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


def cpu_seconds() -> float:
    """CPU time of this process (all threads), user + system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def interleaved(calls: Mapping[str, Callable[[], Any]], repeat, *, min_sample_s: float = 0.0,
                progress: Callable[[int, int], None] | None = None) -> dict:
    """Time each of ``calls`` (name -> no-argument callable) in interleaved rounds.

    repeat: the number of rounds, or ``(least, most, seconds)``: at least ``least`` rounds,
    then more up to ``most`` while the rounds so far took under ``seconds`` (for calls that may
    take seconds each).  min_sample_s: a sample lasts at least this long (back-to-back calls,
    1 to 1000).  progress: called as ``progress(rounds_done, rounds_planned)`` after each round.
    Returns {name: :class:`Samples`}, in the order of ``calls``.
    """
    least, most, budget = ((repeat, repeat, math.inf) if isinstance(repeat, int)
                           else (int(repeat[0]), int(repeat[1]), float(repeat[2])))
    if not 1 <= least <= most:
        raise ValueError(f"repeat must be >= 1 (or (least, most, seconds) with "
                         f"1 <= least <= most), got {repeat!r}")
    names = list(calls)
    out = {name: Samples() for name in names}
    for name in names:                                   # warm-up: plans, caches, page faults
        t0 = time.perf_counter()
        calls[name]()
        once = time.perf_counter() - t0
        out[name].first = once
        if min_sample_s > 0:
            out[name].number = max(1, min(1000, math.ceil(min_sample_s / max(once, 1e-9))))
    start = time.perf_counter()
    for r in range(most):
        if r >= least and time.perf_counter() - start >= budget:
            break
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, s = calls[name], out[name]
            c0, t0 = cpu_seconds(), time.perf_counter()
            for _ in range(s.number):
                fn()
            s.wall.append((time.perf_counter() - t0) / s.number)
            s.cpu.append((cpu_seconds() - c0) / s.number)
        if progress is not None:
            progress(r + 1, most)
    return out


# --- memory ---------------------------------------------------------------------------------

def rss_peak_reset() -> bool:
    """Reset this process's peak resident set (Linux /proc/self/clear_refs); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_kib() -> int | None:
    """This process's resident set now, KiB (None without /proc)."""
    return _status_kib("VmRSS")


def hwm_kib() -> int | None:
    """This process's peak resident set since the last reset, KiB (None without /proc)."""
    return _status_kib("VmHWM")


def host_peak_mib(fn: Callable[[], Any]) -> tuple:
    """(MiB, exact): how far one call of ``fn`` raised the process's resident memory above its
    level just before the call.  exact: the high-water mark was reset before the call; else
    the peak since the process started (``ru_maxrss``) was used, an upper bound.  (None, False)
    where the resident set cannot be read (no /proc)."""
    exact = rss_peak_reset()
    before = rss_kib()
    fn()
    peak = hwm_kib() if exact else maxrss_kib()
    if before is None or peak is None:
        return None, False
    return max(peak - before, 0) / 1024, exact


def maxrss_kib() -> int | None:
    """The process's peak resident set since it started, KiB (None where unavailable)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak     # bytes on macOS, KiB on Linux


def _glibc():
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim                            # noqa: B018 (glibc only)
        return libc
    except (OSError, AttributeError):
        return None


def exact_rss_accounting() -> bool:
    """Make freed large blocks leave the resident set (glibc: a fixed mmap threshold of
    128 KiB, and the heap's free pages returned), so that the rise of the peak over one call
    is that call's peak memory.  Changes this process's allocator: call it only in a process
    that measures (``sgconv bench``).  False where the C library is not glibc."""
    libc = _glibc()
    if libc is None or not libc.mallopt(-3, 128 * 1024):          # M_MMAP_THRESHOLD
        return False
    libc.malloc_trim(0)
    return True


def release_free_memory() -> None:
    """Collect garbage and return the heap's free pages to the system (glibc) before a
    memory measurement."""
    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


# --- the layer as a timed call --------------------------------------------------------------

#: The arrays the released module trains (multiplier and Z are buffers, not parameters).
TRAINABLE = ("kernels", "D", "out_weight", "out_bias", "decay")


def split_trainable(params) -> tuple:
    """(trained, fixed): the parameter arrays as two dicts (pytrees for JAX)."""
    arrays = params.arrays()
    trained = {k: v for k, v in arrays.items() if k in TRAINABLE and v is not None}
    fixed = {k: v for k, v in arrays.items() if k not in trained}
    return trained, fixed


def compiled(name: str, fn):
    """``fn(*arrays)`` run inside ``sgconv.using(name)`` and synchronised before returning.

    JAX: ``fn`` is ``jax.jit``-compiled (array arguments may be pytrees); call the result
    once before timing so that tracing and compilation happen outside the timed region.  The
    JAX callable also has ``xla_bytes(*args)``: the temporaries and output that XLA's memory
    analysis gives for the compiled program (JAX pools its buffers, so the process's resident
    memory says little).
    """
    import sgconv

    if name == "jax":
        import jax

        jitted = jax.jit(fn)

        def call_jax(*args):
            with sgconv.using("jax"):
                return jax.block_until_ready(jitted(*args))

        def xla_bytes(*args):
            with sgconv.using("jax"):
                stats = jitted.lower(*args).compile().memory_analysis()
            return stats.temp_size_in_bytes + stats.output_size_in_bytes

        call_jax.xla_bytes = xla_bytes
        return call_jax

    def call(*args):
        with sgconv.using(name):
            out = fn(*args)
            sgconv.backend(name).synchronize()
        return out

    return call


def forward_fn(name: str, params):
    """A callable u -> the layer's output ``sgconv.apply(params, u)`` on backend ``name``
    (see :func:`compiled`); torch runs it under ``torch.no_grad()`` (no graph is recorded).
    On JAX it has ``xla_bytes(u)`` (see :func:`compiled`)."""
    import sgconv

    trained, fixed = split_trainable(params)

    def layer(trained, fixed, u):
        return sgconv.apply(params.replace(**trained, **fixed), u)

    call = compiled(name, layer)
    if name == "torch":
        import torch

        def forward_torch(u):
            with torch.no_grad():
                return call(trained, fixed, u)

        return forward_torch

    def forward(u):
        return call(trained, fixed, u)

    if hasattr(call, "xla_bytes"):
        forward.xla_bytes = lambda u: call.xla_bytes(trained, fixed, u)
    return forward


def forward_backward_fn(name: str, params):
    """A callable u -> gradients of sum(layer(u)) w.r.t. the trained parameters and u.

    Trained: the sub-kernels, D, the mixing weight and bias (and the decay in learnable
    mode), as in the released module.  torch: ``torch.autograd.grad`` through
    ``sgconv.apply`` with leaf tensors (nothing accumulates between calls).  jax:
    ``jax.jit(jax.grad(...))``; call once before timing to compile.  Other backends have no
    autodiff: NotImplementedError.
    """
    import sgconv

    if name == "torch":
        import torch

        def leaf(x):
            return x.detach().clone().requires_grad_(True)

        trained, _ = split_trainable(params)
        leaves = {k: (tuple(leaf(w) for w in v) if k == "kernels" else leaf(v))
                  for k, v in trained.items()}
        inputs = [t for k, v in leaves.items() for t in (v if k == "kernels" else (v,))]
        leaf_params = params.replace(**leaves)

        def forward_backward(u):
            u = u.detach().requires_grad_(True)
            with sgconv.using("torch"):
                y = sgconv.apply(leaf_params, u)
                grads = torch.autograd.grad(y.sum(), inputs + [u])
                sgconv.backend("torch").synchronize()
            return grads

        return forward_backward
    if name == "jax":
        import jax

        trained, fixed = split_trainable(params)

        def loss(trained, fixed, u):
            return sgconv.apply(params.replace(**trained, **fixed), u).sum()

        call = compiled("jax", jax.grad(loss, argnums=(0, 2)))
        return lambda u: call(trained, fixed, u)
    raise NotImplementedError(f"backend {name!r} has no autodiff: no forward+backward to time")


def cores() -> int:
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
