"""Everything a session with an NVIDIA GPU runs to verify sgconv there, in one script.

    python asv_benchmarks/gpu_check.py [--steps tests,conformance,bench] [--out DIR]
                                       [--lengths 4096,65536,1048576] [--timeout 300]

Steps (all by default, in this order):

1. ``header``: the device (nvidia-smi), Python, and ``sgconv.available_backends()``
   with each backend's version and device, or why it cannot run.
2. ``tests``: ``pytest tests`` (the package's tests, the CuPy and interop GPU tests
   included; they skip with a reason where CuPy cannot run).
3. ``conformance``: ``pytest conformance --backend NAME`` for cupy, torch_cuda (the torch
   backend with its inputs on CUDA, from ``gpu_plugins/sgconv_torch_cuda.py``) and jax
   (on JAX's default device: the GPU where JAX has one), each that can run here; the
   header shows each one's device.
4. ``bench``: the cases of ``asv_benchmarks/bench_gpu.py`` (conv and layer forward, every
   GPU backend, each L), each backend in its own subprocess so that one framework's
   memory pool cannot starve another's; then a table of times with the ratio of every
   backend to the fastest at that L.

Timing (``sgconv._measure.interleaved``, as ``sgconv bench``): after warm-up calls, each
sample runs enough calls back to back to last at least 20 ms, waiting for the device after
every call (as asv's ``time_`` does); the median of 3 to 7 samples (no more once they have
taken 3 s) is reported, with the spread.

With ``--out DIR`` (default: $OUT when set) the log, each pytest run's output and the
benchmark numbers (``gpu_bench.json``) are also written there.  JAX's preallocation of
most of the GPU's memory is turned off in every subprocess
(XLA_PYTHON_CLIENT_PREALLOCATE=false) so that frameworks can share the device.
The exit status is 1 when a pytest run failed or timed out, else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PLUGINS = os.path.join(HERE, "gpu_plugins")                       # sgconv_torch_cuda lives here
STEPS = ("header", "tests", "conformance", "bench")
#: torch_cuda: the torch backend with its inputs on CUDA (gpu_plugins/sgconv_torch_cuda.py);
#: jax runs on JAX's default device, the GPU where JAX has one.
CONFORMANCE_BACKENDS = ("cupy", "torch_cuda", "jax")
_PLUGIN_OF = {"torch_cuda": "sgconv_torch_cuda"}
_MARK = "GPU_CHECK_RESULT "


def _env() -> dict:
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, PLUGINS, env.get("PYTHONPATH")) if p)
    env.pop("SGCONV_BACKEND", None)
    return env


class Log:
    """print() to the terminal and, with an output folder, to gpu_check.log there."""

    def __init__(self, out_dir: str | None):
        self.out_dir = out_dir
        self.file = open(os.path.join(out_dir, "gpu_check.log"), "a") if out_dir else None

    def __call__(self, *parts):
        text = " ".join(str(p) for p in parts)
        print(text, flush=True)
        if self.file:
            self.file.write(text + "\n")
            self.file.flush()

    def save(self, name: str, text: str) -> None:
        if self.out_dir:
            with open(os.path.join(self.out_dir, name), "w") as f:
                f.write(text)


# --- 1. header ---------------------------------------------------------------------------------

def header(log: Log) -> dict:
    log("== device ==")
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=index,name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=60)
        log(smi.stdout.strip() or smi.stderr.strip())
    except (OSError, subprocess.TimeoutExpired) as exc:
        log(f"nvidia-smi unavailable: {exc}")
    log(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    code = ("import json, sgconv\n"
            "import sgconv_torch_cuda  # registers 'torch_cuda'\n"
            "rows = {n: i._asdict() for n, i in sgconv.available_backends().items()}\n"
            f"print({_MARK!r} + json.dumps(dict(version=sgconv.__version__, backends=rows)))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(), cwd=ROOT, timeout=300)
    info = _result(res.stdout)
    if info is None:
        log("sgconv.available_backends() failed:\n" + res.stderr[-3000:])
        return {}
    log(f"sgconv {info['version']}")
    for name, row in info["backends"].items():
        if row["usable"]:
            log(f"  {name:6s} usable   {row['version']}  on  {row['device']}")
        else:
            log(f"  {name:6s} unusable {row['reason']}")
    return info["backends"]


def _result(stdout: str):
    for line in reversed(stdout.splitlines()):
        if line.startswith(_MARK):
            return json.loads(line[len(_MARK):])
    return None


# --- 2-3. pytest runs ------------------------------------------------------------------------

def pytest_run(log: Log, label: str, args: list, timeout: int) -> bool:
    """Run pytest with ``args``; log its summary; True when it passed (or only skipped)."""
    cmd = [sys.executable, "-m", "pytest", *args, "-q", "-rs", "-p", "no:cacheprovider"]
    log(f"== {label}: {' '.join(cmd[1:])} ==")
    start = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT,
                             timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) \
            else (exc.stdout or "")
        log(f"TIMED OUT after {timeout} s; last output:\n{out[-2000:]}")
        log.save(f"{label}.log", out)
        return False
    text = res.stdout + res.stderr
    log.save(f"{label}.log", text)
    lines = text.strip().splitlines()
    summary = [ln for ln in lines if ln.startswith(("FAILED", "ERROR", "SKIPPED"))][:40]
    for line in summary + lines[-3:]:
        log("  " + line)
    log(f"  exit status {res.returncode} in {time.perf_counter() - start:.0f} s")
    return res.returncode in (0, 5)                                # 5: nothing collected


# --- 4. benchmarks -----------------------------------------------------------------------------

def measure(case, min_sample_s: float = 0.02) -> dict:
    """Median seconds per call of a warmed-up case, each call waited for (the case
    synchronises the device): ``sgconv._measure.interleaved``, the timing of ``sgconv bench``,
    with 3 to 7 samples, no more once they have taken 3 s."""
    from sgconv._measure import interleaved

    s = interleaved({"case": case}, (3, 7, 3.0), min_sample_s=min_sample_s)["case"]
    return dict(median=s.median, min=s.best, max=s.worst, number=s.number,
                repeats=len(s.wall))


def worker(backend: str, lengths: list) -> None:
    """Run every case of one backend in this process; print the results as one JSON line."""
    sys.path.insert(0, HERE)
    import bench_gpu
    results = []
    for L in lengths:                                              # L outer: host arrays reused
        for what in ("conv", "layer"):
            row = dict(backend=backend, what=what, L=L)
            try:
                case = bench_gpu.prepare(backend, L, what)
                row.update(measure(case), device=case.device)
                del case
            except NotImplementedError as exc:
                row["skipped"] = str(exc)
            except Exception as exc:  # report and go on: one failure must not hide the rest
                row["error"] = f"{type(exc).__name__}: {exc}"
            _free(backend)
            results.append(row)
            print(f"  {backend} {what} L={L}: " + (
                f"{row['median'] * 1e3:.3f} ms" if "median" in row
                else row.get("skipped") or row.get("error")), file=sys.stderr, flush=True)
    print(_MARK + json.dumps(results), flush=True)


def _free(backend: str) -> None:
    """Give cached device memory back between cases (the next L needs more)."""
    import gc
    gc.collect()
    if backend.startswith("cupy") and "cupy" in sys.modules:
        sys.modules["cupy"].get_default_memory_pool().free_all_blocks()
    elif backend == "torch-cuda" and "torch" in sys.modules:
        sys.modules["torch"].cuda.empty_cache()


def bench(log: Log, lengths: list, backends: list, timeout: int) -> list:
    sys.path.insert(0, HERE)
    import bench_gpu
    backends = backends or list(bench_gpu.BACKENDS)
    log(f"== bench: {', '.join(backends)} at L = {lengths}; B={bench_gpu.SIZES['B']}, "
        f"H={bench_gpu.SIZES['H']}, C={bench_gpu.SIZES['C']}, d={bench_gpu.SIZES['kernel_dim']}, "
        f"float32 ==")
    rows = []
    cache = tempfile.mkdtemp(prefix="sgconv_gpu_bench_")           # parameters, shared by workers
    env = {**_env(), bench_gpu.CACHE_ENV: cache}
    try:
        for backend in backends:
            rows.extend(_bench_backend(log, backend, lengths, env, timeout))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    log.save("gpu_bench.json", json.dumps(rows, indent=1))
    table(log, rows, backends, lengths)
    return rows


def _bench_backend(log: Log, backend: str, lengths: list, env: dict, timeout: int) -> list:
    """Run one backend's cases in a worker subprocess; its rows (errors as rows too)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", backend,
           "--lengths", ",".join(map(str, lengths))]
    start = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"  {backend}: worker timed out after {timeout} s")
        return [dict(backend=backend, what=w, L=L, error="timed out")
                for w in ("conv", "layer") for L in lengths]
    got = _result(res.stdout)
    if got is None:
        log(f"  {backend}: worker failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
        return [dict(backend=backend, what=w, L=L, error=f"worker exit {res.returncode}")
                for w in ("conv", "layer") for L in lengths]
    for line in res.stderr.strip().splitlines()[-2 * len(lengths):]:
        log("  " + line.strip())
    log(f"  ({backend}: {time.perf_counter() - start:.0f} s with setup)")
    return got


def table(log: Log, rows: list, backends: list, lengths: list) -> None:
    """Times per (what, L) and backend, then the ratios: each / fastest."""
    by = {(r["what"], r["L"], r["backend"]): r for r in rows}
    devices = sorted({r["device"] for r in rows if "device" in r})
    log("devices: " + "; ".join(devices))
    width = max(12, *(len(b) + 2 for b in backends))
    head = f"{'':6s}{'L':>9s}" + "".join(f"{b:>{width}s}" for b in backends)
    log("\nmedian time per call, ms (spread min..max over samples in the JSON)")
    log(head)
    for what in ("conv", "layer"):
        for L in lengths:
            cells = []
            for b in backends:
                r = by.get((what, L, b), {})
                cells.append(f"{r['median'] * 1e3:.3f}" if "median" in r
                             else "skip" if "skipped" in r else "error")
            log(f"{what:6s}{L:>9d}" + "".join(f"{c:>{width}s}" for c in cells))
    log("\nratio to the fastest backend at that L (1.00 = fastest)")
    log(head)
    for what in ("conv", "layer"):
        for L in lengths:
            times = {b: by[(what, L, b)]["median"] for b in backends
                     if "median" in by.get((what, L, b), {})}
            best = min(times.values()) if times else None
            cells = [f"{times[b] / best:.2f}" if b in times else "-" for b in backends]
            log(f"{what:6s}{L:>9d}" + "".join(f"{c:>{width}s}" for c in cells))


# --- main ------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default=",".join(STEPS),
                        help=f"comma-separated, from {STEPS} (default: all)")
    parser.add_argument("--out", default=os.environ.get("OUT") or None,
                        help="folder for the log, pytest outputs and gpu_bench.json ($OUT)")
    parser.add_argument("--lengths", default="4096,65536,1048576",
                        help="sequence lengths L for the benchmarks")
    parser.add_argument("--backends", default="",
                        help="benchmark only these (comma-separated; default: all of bench_gpu)")
    parser.add_argument("--timeout", type=int, default=300,
                        help="seconds allowed per pytest run and per benchmark backend")
    parser.add_argument("--conformance-backends", default=",".join(CONFORMANCE_BACKENDS),
                        help="which backends' conformance to run (default: cupy,torch_cuda,jax)")
    parser.add_argument("--conformance-args", default="",
                        help="extra arguments for each conformance run, e.g. a device option")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--lengths must be comma-separated integers, got {args.lengths!r}")
    if args.worker:
        worker(args.worker, lengths)
        return 0
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown step(s) {unknown}; expected names from {STEPS}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    log = Log(args.out)
    ok = True
    backends_info = header(log) if "header" in steps or "conformance" in steps else {}
    if "tests" in steps:
        ok &= pytest_run(log, "tests", ["tests"], args.timeout)
    if "conformance" in steps:
        if not os.path.isdir(os.path.join(ROOT, "conformance")):
            log("== conformance: no conformance/ folder in this checkout ==")
        for name in [b.strip() for b in args.conformance_backends.split(",") if b.strip()]:
            row = backends_info.get(name, {})
            if not row.get("usable"):
                log(f"== conformance {name}: skipped, {row.get('reason', 'unknown backend')} ==")
                continue
            log(f"(conformance {name} runs on {row['device']})")
            extra = args.conformance_args.split()
            if name in _PLUGIN_OF:
                extra = ["--backend-plugin", _PLUGIN_OF[name], *extra]
            ok &= pytest_run(log, f"conformance_{name}",
                             ["conformance", "--backend", name, *extra], args.timeout)
    if "bench" in steps:
        chosen = [b.strip() for b in args.backends.split(",") if b.strip()]
        bench(log, lengths, chosen, args.timeout)
    log(f"== gpu_check: {'all pytest runs passed' if ok else 'SOME PYTEST RUNS FAILED'} ==")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
