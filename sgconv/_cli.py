"""The ``sgconv`` command: what SGConv is, what this machine can run, and how fast.

    sgconv info                      version, backends, devices, threads
    sgconv kernel [--plot k.png]     the kernel of a configuration: scales, decay, parameters
    sgconv bench [--backend ...]     forward (+backward) time and peak memory vs the FFT floor
    sgconv check [--backend ...]     the conformance suite (pytest) with a summary
    sgconv demo                      build a layer, run a long sequence, check it in float64

Every subcommand has ``--help``.  Bad arguments give one line on stderr and exit status 2.
Only NumPy and SciPy are needed, except for ``kernel --plot`` (matplotlib) and ``check``
(pytest); frameworks are imported only for the backends a command uses.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

import numpy as np

__all__ = ["main"]

PROG = "sgconv"
#: The figure of ``kernel --plot``: size in inches and resolution (a 16:9 slide, 1920x1080).
FIGSIZE = (16.0, 9.0)
DPI = 120
_FLOATS = ("float32", "float64", "float16", "bfloat16")


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


# --- small helpers ------------------------------------------------------------------------

def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _split_names(values) -> list[str]:
    """['numpy,torch', 'jax'] -> ['numpy', 'torch', 'jax'] (order kept, duplicates dropped)."""
    out: list[str] = []
    for value in values or ():
        for part in value.split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


def _backend_names(values) -> list[str] | None:
    import sgconv

    names = _split_names(values)
    known = sgconv.known_backends()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CliError(f"unknown backend {unknown[0]!r}; expected one of {', '.join(known)}")
    return names or None


def _lengths(values) -> list[int]:
    out: list[int] = []
    for value in _split_names(values):
        try:
            length = int(value)
        except ValueError:
            raise CliError(f"--lengths expects integers >= 1 (e.g. 1024,4096), got {value!r}")
        if length < 1:
            raise CliError(f"--lengths expects integers >= 1, got {length}")
        out.append(length)
    return out


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _fmt_3(x: float) -> str:
    """x with at least 3 significant digits (up to 4 decimals): 1234, 123, 12.3, 0.0123."""
    decimals = 0 if x >= 100 else min(4, 2 - math.floor(math.log10(x))) if x > 0 else 1
    return f"{x:.{decimals}f}"


def _fmt_ms(seconds: float) -> str:
    return _fmt_3(1e3 * seconds)


def _table(header, rows, aligns=None) -> str:
    """A plain-text table; ``aligns``: '<' or '>' per column (numbers right-aligned)."""
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    aligns = aligns or ["<"] * len(header)
    lines = []
    for j, r in enumerate(cells):
        lines.append("  ".join(f"{c:{a}{w}}" for c, a, w in zip(r, aligns, widths)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths).rstrip())
    return "\n".join(lines)


class Progress:
    """A one-line progress bar on stderr, ``[#####.....] 3/12 label``; off when not a TTY."""

    def __init__(self, total: int, enabled: bool, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.total = max(total, 1)
        self.done = 0
        self.enabled = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self._width = 0

    def show(self, label: str) -> None:
        if not self.enabled:
            return
        columns = shutil.get_terminal_size((80, 20)).columns
        bar_width = 24
        filled = round(bar_width * self.done / self.total)
        text = (f"[{'#' * filled}{'.' * (bar_width - filled)}] {self.done}/{self.total} "
                f"{label}")[:max(columns - 1, 10)]
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def step(self, label: str = "") -> None:
        self.done += 1
        self.show(label)

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()


def _config(args):
    """SGConvConfig from the kernel/bench options; its ValueError/TypeError become CliError."""
    from ._config import SGConvConfig

    try:
        return SGConvConfig(d_model=args.d_model, l_max=args.l_max, channels=args.channels,
                            kernel_dim=args.kernel_dim, n_scales=args.n_scales,
                            decay_min=args.decay_min, decay_max=args.decay_max,
                            bidirectional=args.bidirectional, interpolation=args.interpolation)
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc)) from None


def _import_reference():
    """The float64 reference package ``reference/`` (a checkout's, next to the package or in
    the current directory), or CliError saying where it was looked for."""
    try:
        import reference
        return reference
    except ImportError:
        pass
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for root in dict.fromkeys([here, os.getcwd()]):
        init = os.path.join(root, "reference", "__init__.py")
        if os.path.exists(init):
            spec = importlib.util.spec_from_file_location(
                "reference", init, submodule_search_locations=[os.path.dirname(init)])
            module = importlib.util.module_from_spec(spec)
            sys.modules["reference"] = module
            spec.loader.exec_module(module)
            return module
    raise CliError("the float64 reference (reference/ in the sgconv repository) is not "
                   "importable; run from a clone of the repository")


# --- info -----------------------------------------------------------------------------------

def _threads(name: str, info) -> str:
    """The CPU threads a backend computes with, where it says (GPU backends: '-')."""
    import sgconv

    device = (info.device or "").lower()
    if not device.startswith("cpu"):
        return "-"
    if name == "numpy":
        return str(getattr(sgconv.backend("numpy"), "workers", None) or _cores())
    if name == "torch" and "torch" in sys.modules:
        return str(sys.modules["torch"].get_num_threads())
    if name == "jax":
        return f"{_cores()} (XLA pool)"
    return "?"


def cmd_info(args) -> int:
    import scipy

    import sgconv

    print(f"sgconv {sgconv.__version__} (python {platform.python_version()}, numpy "
          f"{np.__version__}, scipy {scipy.__version__}) on {platform.system()} "
          f"{platform.machine()}, {_cores()} CPU cores available to this process")
    source = ("from SGCONV_BACKEND" if os.environ.get("SGCONV_BACKEND")
              else "the default; set SGCONV_BACKEND or call sgconv.use() to change it")
    print(f"active backend: {sgconv.get_backend()} ({source})")
    rows = []
    infos = sgconv.available_backends()
    for name, info in infos.items():
        if info.usable:
            rows.append([name, "ok", info.version, info.device, _threads(name, info)])
        else:
            rows.append([name, "unavailable", "-", "-", "-"])
    print(_table(["backend", "status", "version", "device", "threads"], rows))
    for name, info in infos.items():
        if not info.usable:
            print(f"{name}: {info.reason}")
    return 0


# --- kernel ---------------------------------------------------------------------------------

def _kernel_arrays(config, seed: int, length: int):
    """(k (C', H, length) float64, Z (C', H), m (H,)) from parameters drawn with ``seed``."""
    import sgconv

    with sgconv.using("numpy"):
        params = sgconv.init(config, seed=seed, dtype="float64", backend="numpy")
        k = sgconv.kernel(params, length)                          # (C', H, L)
    return np.asarray(k), np.asarray(params.kernel_norm), np.asarray(params.multiplier)


def _scale_table(config, length: int, Z, m, channel: int):
    N = config.num_scales
    rows, start = [], 0
    for i, (s, size) in enumerate(zip(config.scale_factors, config.scale_lengths)):
        decay = m ** (N - 1 - i)                                   # (H,)
        dec = (f"{decay.min():.4g}" if np.ptp(decay) == 0
               else f"{decay.min():.4g}..{decay.max():.4g}")
        weight = decay[channel] / Z[0, channel]
        note = "" if start < length else "beyond L"
        rows.append([i, s, _fmt_int(size), f"[{_fmt_int(start)}, {_fmt_int(start + size)})",
                     dec, f"{weight:.4g}", note])
        start += size
    return rows


def cmd_kernel(args) -> int:
    config = _config(args)
    length = args.length if args.length is not None else config.l_max
    if not 0 <= args.channel < config.d_model:
        raise CliError(f"--channel must be in 0..{config.d_model - 1} (d_model={config.d_model}), "
                       f"got {args.channel}")
    if args.plot is not None:
        plt = _pyplot()                                            # fail before the work
    k, Z, m = _kernel_arrays(config, args.seed, length)
    N, d, H, Cp = config.num_scales, config.kernel_dim, config.d_model, config.kernel_rows
    K = config.kernel_length
    kind = "bidirectional (C'=2C rows)" if config.bidirectional else "causal"
    print(f"SGConv kernel: H={H} channels, C={config.channels} head(s), {kind}, d={d}, "
          f"l_max={_fmt_int(config.l_max)}, {config.interpolation} upsampling, seed {args.seed}")
    print(f"N = {N} scales; scale i is w_i (length d) upsampled by s_i = 2^max(0, i-1) and "
          f"weighted by m^(N-1-i); kernel length K = d*2^(N-1) = {_fmt_int(K)}; shown for "
          f"L = {_fmt_int(length)}" + (" (zero-padded beyond K)" if length > K else ""))
    print(f"decay multiplier m = linspace({config.decay_min:g}, {config.decay_max:g}, H): each "
          f"farther scale weighs 1/m as much; Z = ||k_raw|| per row "
          f"(min {Z.min():.4g}, max {Z.max():.4g})")
    print()
    print(_table(["scale", "s_i", "length", "lags [start, end)", "m^(N-1-i)",
                  f"m^(N-1-i)/Z (h={args.channel})", ""],
                 _scale_table(config, length, Z, m, args.channel),
                 [">", ">", ">", ">", ">", ">", "<"]))
    print()
    from ._config import SGConvConfig
    rows = []
    for p in range(10, 21, 2):
        L = 2 ** p
        c = SGConvConfig(d_model=H, l_max=L, channels=config.channels, kernel_dim=d,
                         bidirectional=config.bidirectional)
        dense = Cp * H * L
        rows.append([_fmt_int(L), c.num_scales, _fmt_int(c.num_kernel_parameters),
                     _fmt_int(dense), f"{dense / c.num_kernel_parameters:,.0f}x"])
    print(f"kernel parameters vs L (H={H}, C'={Cp}, d={d}): each doubling of L adds one scale, "
          f"C'*H*d = {_fmt_int(Cp * H * d)} weights: O(log L), while a dense kernel grows as L")
    print(_table(["L", "N", "SGConv N*C'*H*d", "dense C'*H*L", "dense / SGConv"], rows,
                 [">"] * 5))
    print(f"this configuration: {_fmt_int(config.num_kernel_parameters)} kernel weights, "
          f"{_fmt_int(config.num_parameters)} parameters in the whole layer (with D and the "
          f"{config.channels * H}->{H} mixing)")
    if args.plot is not None:
        _plot_kernel(plt, config, k, Z, m, args.channel, length, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise CliError("--plot needs matplotlib, which is not installed: "
                       "pip install 'sgconv[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _plot_kernel(plt, config, k, Z, m, channel: int, length: int, path: str) -> None:
    """The figure: the kernel with its scales, |k| against the decay envelope, the spectrum."""
    N, d = config.num_scales, config.kernel_dim
    row = k[0, channel]                                            # (L,) causal row 0
    t = np.arange(length)
    starts = np.cumsum((0,) + config.scale_lengths)  # scale i: [starts[i], starts[i+1])
    env = np.zeros(length)                                         # m^(N-1-i)/Z on scale i's lags
    for i in range(N):
        a, b = min(starts[i], length), min(starts[i + 1], length)
        env[a:b] = m[channel] ** (N - 1 - i) / Z[0, channel]
    shown = [i for i in range(N) if starts[i] < length]
    x_max = length - 1 if length > 1 else 1

    fig = plt.figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=(1.1, 1.0))
    ax_k = fig.add_subplot(grid[0, :])
    ax_env = fig.add_subplot(grid[1, 0])
    ax_f = fig.add_subplot(grid[1, 1])
    colors = ("#dbe9f6", "#fbe5d6")

    def mark_scales(ax, label_y=None):
        for j, i in enumerate(shown):
            a, b = starts[i], min(starts[i + 1], x_max)
            ax.axvspan(a, max(b, a + 0.5), color=colors[j % 2], zorder=0, lw=0)
            if i > 0:
                ax.axvline(a, color="0.55", lw=0.8, ls=":", zorder=1)
            if label_y is not None:
                centre = (a + 1) * 2 ** 0.5 if i > 0 else d / 2
                ax.text(min(centre, x_max), label_y, f"scale {i}", ha="center", va="top",
                        fontsize=10, color="0.3", transform=ax.get_xaxis_transform())

    def lag_axis(ax):
        # symlog base 2, linear below d: every scale after the first spans one octave.
        ax.set_xscale("symlog", base=2, linthresh=d, linscale=1.0)
        ax.set_xlim(0, x_max)
        ax.set_xlabel(f"lag $t$ (samples; linear below d={d}, log2 above: one scale per "
                      f"octave)", fontsize=12)

    mark_scales(ax_k, label_y=0.98)
    ax_k.plot(t, row, color="#1f4e79", lw=0.9, label=f"kernel $k[t]$, channel $h={channel}$")
    # w_i ~ N(0, 1), so about 95% of the taps of scale i lie within +-2 m^(N-1-i)/Z.
    ax_k.plot(t, 2 * env, color="#c0504d", lw=1.6, ls="--", drawstyle="steps-post",
              label=r"decay envelope $\pm 2\,m^{N-1-i}/Z$ (weights $w_i \sim N(0,1)$)")
    ax_k.plot(t, -2 * env, color="#c0504d", lw=1.6, ls="--", drawstyle="steps-post")
    lag_axis(ax_k)
    ax_k.set_ylabel("$k[t]$", fontsize=13)
    half = " (causal half)" if config.bidirectional else ""
    ax_k.set_title(f"The kernel{half}: {len(shown)} scales (shaded), each a sub-kernel of "
                   f"d={d} taps "
                   r"upsampled $\times$1, 1, 2, 4, ... and weighted by $m^{N-1-i}$",
                   fontsize=14)
    ax_k.legend(loc="lower right", fontsize=11, framealpha=0.95)
    ax_k.grid(alpha=0.25, axis="y")

    mark_scales(ax_env)
    ax_env.plot(t, np.abs(row), color="#1f4e79", lw=0.6, alpha=0.8, label="$|k[t]|$")
    ax_env.plot(t, env, color="#c0504d", lw=2.0, drawstyle="steps-post", label="$m^{N-1-i}/Z$")
    lag_axis(ax_env)
    ax_env.set_yscale("log")
    positive = np.abs(row)[np.abs(row) > 0]
    if positive.size:
        ax_env.set_ylim(max(positive.min(), env[env > 0].min() * 1e-3), env.max() * 10)
    ax_env.set_ylabel("$|k[t]|$ (log scale)", fontsize=13)
    ax_env.set_title(f"Decay: each farther scale weighs $1/m$ = {1 / m[channel]:.3g} as much",
                     fontsize=14)
    ax_env.legend(loc="upper right", fontsize=11, framealpha=0.95)
    ax_env.grid(alpha=0.25, which="major")

    n = 2 * length                                                 # linear-convolution length
    spec = np.abs(np.fft.rfft(k[0], n))                           # (H, n//2+1)
    f = np.fft.rfftfreq(n)
    keep = f > 0
    db = lambda x: 20 * np.log10(np.maximum(x, 1e-300))           # noqa: E731
    ax_f.plot(f[keep], db(spec[channel, keep]), color="#1f4e79", lw=0.7,
              label=f"$|K(f)|$, channel $h={channel}$")
    rms = np.sqrt((spec ** 2).mean(axis=0))
    ax_f.plot(f[keep], db(rms[keep]), color="#e46c0a", lw=1.8,
              label=f"RMS over all H={config.d_model} channels")
    ax_f.set_xscale("log")
    ax_f.set_xlim(f[keep][0], 0.5)
    ax_f.set_xlabel("frequency f (cycles per sample, log scale)", fontsize=12)
    ax_f.set_ylabel("magnitude (dB)", fontsize=12)
    ax_f.set_title(f"Magnitude spectrum (FFT of length 2L = {2 * length:,})", fontsize=14)
    ax_f.legend(loc="lower left", fontsize=11, framealpha=0.95)
    ax_f.grid(alpha=0.3, which="both")

    for ax in (ax_k, ax_env, ax_f):
        ax.tick_params(labelsize=10)
    m_text = (f"m={m.min():g}" if np.ptp(m) == 0 else f"m={m.min():g}..{m.max():g}")
    fig.suptitle(f"SGConv kernel, L = {length:,}: H={config.d_model}, N={N} scales of d={d}, "
                 f"{m_text}: {config.num_kernel_parameters:,} learned weights "
                 f"(a dense kernel: {config.kernel_rows * config.d_model * length:,})",
                 fontsize=15, fontweight="bold")
    try:
        fig.savefig(path, dpi=DPI)
    except OSError as exc:
        raise CliError(f"cannot write the figure to {path!r}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


# --- bench ----------------------------------------------------------------------------------

def _rss_peak_reset() -> bool:
    """Reset this process's peak RSS (Linux /proc/self/clear_refs); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


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
        return f"{_fmt_3((torch.cuda.max_memory_allocated() - before) / 2 ** 20)} (gpu)"
    if hasattr(fn, "xla_memory"):  # XLA pools its buffers: its own analysis says more
        try:
            return f"{_fmt_3(fn.xla_memory() / 2 ** 20)} (XLA)"
        except Exception:  # memory_analysis is not offered by every XLA backend
            return "n/a"
    if "cpu" not in (bk.device_description() or "cpu").lower():
        return "n/a (gpu)"
    _release_free_memory()
    if not _rss_peak_reset():
        return "n/a"
    before = _rss_kib("VmRSS")
    fn()
    peak = _rss_kib("VmHWM")
    if before is None or peak is None:
        return "n/a"
    return _fmt_3(max(peak - before, 0) / 1024)


def _layer_callables(name: str, bk, params, u):
    """(forward, forward_backward or None): each runs under sgconv.using(name), synchronised.
    JAX functions are jitted (compile by calling once before timing)."""
    import sgconv

    arrays = params.arrays()
    trained = {k: v for k, v in arrays.items()
               if k in ("kernels", "D", "out_weight", "out_bias", "decay") and v is not None}
    fixed = {k: v for k, v in arrays.items() if k not in trained}

    if name == "jax":
        import jax

        def layer(tr, fx, x):
            return sgconv.apply(params.replace(**tr, **fx), x)

        fwd_jit = jax.jit(layer)
        grad_jit = jax.jit(jax.grad(lambda tr, fx, x: layer(tr, fx, x).sum(), argnums=(0, 2)))

        def forward():
            with sgconv.using("jax"):
                return jax.block_until_ready(fwd_jit(trained, fixed, u))

        def xla_memory():
            """Bytes the compiled forward allocates besides its arguments (XLA's analysis)."""
            with sgconv.using("jax"):
                stats = fwd_jit.lower(trained, fixed, u).compile().memory_analysis()
            return stats.temp_size_in_bytes + stats.output_size_in_bytes

        forward.xla_memory = xla_memory

        def forward_backward():
            with sgconv.using("jax"):
                return jax.block_until_ready(grad_jit(trained, fixed, u))

        return forward, forward_backward

    def forward():
        with sgconv.using(name):
            y = sgconv.apply(params, u)
            bk.synchronize()
        return y

    if name != "torch":
        return forward, None
    import torch

    leaves = {k: (tuple(w.detach().clone().requires_grad_(True) for w in v) if k == "kernels"
                  else v.detach().clone().requires_grad_(True)) for k, v in trained.items()}
    inputs = [x for k, v in leaves.items() for x in (v if k == "kernels" else (v,))]
    leaf_params = params.replace(**leaves)

    def forward_no_grad():
        with torch.no_grad():
            return forward()

    def forward_backward():
        x = u.detach().requires_grad_(True)
        with sgconv.using("torch"):
            grads = torch.autograd.grad(sgconv.apply(leaf_params, x).sum(), inputs + [x])
            bk.synchronize()
        return grads

    return forward_no_grad, forward_backward


def _floor_callable(u: np.ndarray, length: int):
    """The bare scipy.fft floor of the layer's convolution: rfft(u, n) * k_f -> irfft,
    n = next_fast_len(2L - 1), every core, k_f of a random (H, L) kernel computed here."""
    import scipy.fft

    n = scipy.fft.next_fast_len(2 * length - 1, real=True)
    workers = _cores()
    k = np.random.default_rng(1).standard_normal(u.shape[1:]).astype(u.dtype)  # (H, L)
    k_f = scipy.fft.rfft(k, n, workers=workers)                     # (H, F)

    def floor():
        u_f = scipy.fft.rfft(u, n, workers=workers)                 # (B, H, F)
        u_f *= k_f
        return scipy.fft.irfft(u_f, n, workers=workers)[..., :length]  # (B, H, L)

    return floor


def _calls_per_sample(fn, minimum: float = 0.02) -> int:
    """How many back-to-back calls make one timing sample last >= ``minimum`` s (as timeit)."""
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    return max(1, min(1000, math.ceil(minimum / max(once, 1e-9))))


def _median_times(fns: dict, repeat: int) -> dict:
    """Median seconds per call over ``repeat`` rounds; in each round every callable takes one
    sample (several calls when one is shorter than 20 ms), so a load spike hits all alike."""
    numbers = {key: _calls_per_sample(fn) for key, fn in fns.items()}
    times = {key: [] for key in fns}
    for _ in range(repeat):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(numbers[key]):
                fn()
            times[key].append((time.perf_counter() - t0) / numbers[key])
    return {key: statistics.median(ts) for key, ts in times.items()}


def _glibc():
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim                            # noqa: B018 (glibc only)
        return libc
    except (OSError, AttributeError):
        return None


def _exact_rss_accounting() -> bool:
    """Make freed large blocks leave the resident set (glibc: a fixed mmap threshold of
    128 KiB, and the heap's free pages returned), so that the rise of the peak RSS over one
    call is that call's peak memory.  Only in this command's own process; False if not glibc."""
    libc = _glibc()
    if libc is None or not libc.mallopt(-3, 128 * 1024):          # M_MMAP_THRESHOLD
        return False
    libc.malloc_trim(0)
    return True


def _release_free_memory() -> None:
    """Return the heap's free pages to the system before a memory measurement (glibc)."""
    import gc

    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


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
        self.forward, self.forward_backward = _layer_callables(name, bk, params, u)
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
        self.times = _median_times(fns, repeat)

    def row(self, dtype: str) -> list:
        t = self.times
        bwd = t.get("bwd")
        return [self.name, dtype, _fmt_int(self.length), _fmt_ms(t["fwd"]),
                f"{t['fwd'] / t['floor']:.2f}", "-" if bwd is None else _fmt_ms(bwd),
                "-" if bwd is None else f"{bwd / t['floor']:.2f}", _fmt_ms(t["floor"]),
                self.memory]


def cmd_bench(args) -> int:
    import sgconv

    names = _backend_names(args.backend)
    lengths = _lengths(args.lengths) if args.lengths else [1024, 4096, 16384, 65536]
    infos = sgconv.available_backends()
    if names is None:
        names = [n for n, info in infos.items() if info.usable]
    print(f"sgconv {sgconv.__version__} bench: layer forward (and forward+backward for autodiff "
          f"backends), B={args.batch}, H={args.d_model}, C=1, d=64, l_max=L, {args.dtype}; "
          f"median of {args.repeat} interleaved rounds; {_cores()} CPU cores")
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
                    rows.append(([name, args.dtype, _fmt_int(length)] + ["-"] * 5
                                 + [f"skipped: {exc}"], None))
                except Exception as exc:  # report the row, keep going, exit 1 at the end
                    failures += 1
                    first = str(exc).splitlines()[0] if str(exc) else ""
                    rows.append(([name, args.dtype, _fmt_int(length)] + ["-"] * 5
                                 + [f"error: {type(exc).__name__}: {first}"], None))
                else:
                    rows.append((None, case))
                    cases.append(case)
                progress.step(f"{name} L={length}: time")
        # 2. peak memory of one forward call per row, with exact RSS accounting
        exact = _exact_rss_accounting()
        for case in cases:
            progress.show(f"{case.name} L={case.length}: memory")
            case.memory = _peak_memory_mb(case.name, case.bk, case.forward)
            progress.step(f"{case.name} L={case.length}: memory")
    finally:
        progress.close()
    print(_table(["backend", "dtype", "L", "fwd ms", "/floor", "fwd+bwd ms", "/floor",
                  "floor ms", "peak MB (fwd)"],
                 [row if case is None else case.row(args.dtype) for row, case in rows],
                 ["<", "<", ">", ">", ">", ">", ">", ">", ">"]))
    print("peak MB: the rise of this process's peak resident memory during one forward call"
          + ("" if exact else " (approximate: freed memory may be reused unseen)")
          + "; (XLA): temporaries + output of the compiled JAX program; device memory for "
          "CUDA torch")
    return 1 if failures or not usable else 0


# --- check ----------------------------------------------------------------------------------

def _conformance_dir(path: str | None) -> str:
    if path is not None:
        if not os.path.isdir(path):
            raise CliError(f"--path {path!r} is not a directory")
        return os.path.abspath(path)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for root in dict.fromkeys([here, os.getcwd()]):
        candidate = os.path.join(root, "conformance")
        if os.path.isdir(candidate):
            return candidate
    raise CliError("the conformance suite (conformance/ in the sgconv repository) was not "
                   "found next to the package or in the current directory; run from a clone "
                   "or pass --path DIR")


def _junit_counts(path: str, names) -> dict:
    """Per-backend outcome counts from pytest's JUnit XML (the backend read from the test id;
    tests without one, such as the suite's meta-tests of its own helpers, counted apart)."""
    counts = {}
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return counts
    for case in root.iter("testcase"):
        test_id = case.get("name", "")
        params = test_id[test_id.find("[") + 1:-1] if "[" in test_id else ""
        tokens = set(re.split(r"[-,\[\] ]", params))
        owner = next((n for n in names if n in tokens), "(suite self-tests)")
        kinds = {child.tag for child in case}
        outcome = ("failed" if "failure" in kinds else "error" if "error" in kinds
                   else "skipped" if "skipped" in kinds else "passed")
        row = counts.setdefault(owner, {"passed": 0, "failed": 0, "error": 0, "skipped": 0})
        row[outcome] += 1
    return counts


def cmd_check(args) -> int:
    import sgconv

    names = _backend_names(args.backend)
    if importlib.util.find_spec("pytest") is None:
        raise CliError("sgconv check needs pytest, which is not installed: "
                       "pip install 'sgconv[test]'")
    suite = _conformance_dir(args.path)
    with tempfile.TemporaryDirectory() as tmp:
        junit = os.path.join(tmp, "junit.xml")
        cmd = [sys.executable, "-m", "pytest", suite, "-q", "-p", "no:cacheprovider",
               f"--junitxml={junit}", "-o", "junit_family=xunit2"]
        if names:
            cmd += ["--backend", ",".join(names)]
        cmd += list(args.pytest_args)
        print("running: " + " ".join(cmd[2:]), flush=True)
        t0 = time.perf_counter()
        env = dict(os.environ)
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        code = subprocess.call(cmd, env=env, cwd=os.path.dirname(suite))
        elapsed = time.perf_counter() - t0
        counts = _junit_counts(junit, names or list(sgconv.known_backends()))
    print()
    if counts:
        rows = [[owner, c["passed"], c["failed"], c["error"], c["skipped"]]
                for owner, c in counts.items()]
        print(_table(["backend", "passed", "failed", "errors", "skipped"], rows,
                     ["<", ">", ">", ">", ">"]))
    verdict = {0: "all passed", 1: "some tests FAILED", 5: "no tests were collected"}.get(
        code, f"pytest exited with status {code}")
    print(f"conformance suite {suite}: {verdict} ({elapsed:.1f} s); exit status {code}")
    return code


# --- demo -----------------------------------------------------------------------------------

def _layer_at(ref, state, u64, positions):
    """The layer's float64 output at the given times by direct sums (no FFT):

        y[b, c, h, t] = sum_{s=0..t} k[c, h, s] u[b, h, t-s] + D[c, h] u[b, h, t]
        out[b, :, t]  = W gelu(y[b, :, :, t].reshape(C*H)) + bias

    with k = reference.kernel(state, L) (C, H, L).  Returns (B, H, len(positions)).
    """
    D = state["D"]                                                 # (C, H)
    C, H = D.shape
    B, _, L = u64.shape
    k = ref.kernel(state, L)                                       # (C, H, L)
    W, bias = state["output_linear.weight"], state["output_linear.bias"]
    out = np.empty((B, H, len(positions)))
    for j, t in enumerate(positions):
        past = u64[:, :, t::-1]                                    # (B, H, t+1): u[t-s], s=0..t
        y = np.einsum("chs,bhs->bch", k[:, :, :t + 1], past)       # (B, C, H)
        y = y + D[None] * u64[:, None, :, t]                       # skip term D u
        out[:, :, j] = ref.gelu(y.reshape(B, C * H)) @ W.T + bias  # (B, H)
    return out


def cmd_demo(args) -> int:
    import scipy

    import sgconv

    ref = _import_reference()
    B, H, L, T = args.batch, args.d_model, args.length, min(args.check_length, args.length)
    try:
        config = sgconv.SGConvConfig(d_model=H, l_max=L)
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc)) from None
    with sgconv.using("numpy") as bk:
        print(f"sgconv {sgconv.__version__} demo on the numpy backend (numpy {np.__version__}, "
              f"scipy {scipy.__version__}; {bk.device_description()})")
        params = sgconv.init(config, seed=args.seed, dtype="float32")
        dense = config.kernel_rows * H * L
        first = ", ".join(map(str, config.scale_lengths[:4]))
        print(f"layer: SGConv d_model H={H}, l_max={_fmt_int(L)}, d={config.kernel_dim}, "
              f"N={config.num_scales} scales (lengths {first}, ..., "
              f"{_fmt_int(config.scale_lengths[-1])}), causal, float32, seed {args.seed}")
        print(f"  {_fmt_int(config.num_kernel_parameters)} learned kernel weights (N*H*d) where a "
              f"dense kernel of length L needs {_fmt_int(dense)} "
              f"({dense / config.num_kernel_parameters:,.0f}x more); "
              f"{_fmt_int(config.num_parameters)} parameters in the whole layer")
        u = np.random.default_rng(args.seed + 1).standard_normal((B, H, L), dtype=np.float32)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            y = sgconv.apply(params, u)                            # (B, H, L)
            times.append(time.perf_counter() - t0)
    n = bk.next_fast_len(2 * L - 1)
    print(f"run: u (B={B}, H={H}, L={_fmt_int(L)}) float32 ~ N(0, 1) -> sgconv.apply -> "
          f"{tuple(y.shape)} {y.dtype} in {1e3 * statistics.median(times):.1f} ms "
          f"(median of 3; one FFT of length {_fmt_int(n)})")

    # Float32 FFT convolution: error ~ eps*log2(n) relative to the output's scale (SPEC,
    # "Precision"); +1 for the rounding of the result itself, and the factor 8 covers the
    # float32 kernel build, the GELU and the C*H-term mixing sum.  A wrong kernel, lag or
    # mixing gives errors of order 1.
    eps = float(np.finfo(np.float32).eps)
    tol = 8 * eps * (math.log2(n) + 1)
    state = {k: np.asarray(v, dtype=np.float64) for k, v in sgconv.to_state_dict(params).items()}
    u64 = u.astype(np.float64)                                     # the exact float32 input
    scale = float(np.max(np.abs(y)))
    checks = []

    # 1. Causality: outputs 0..T-1 depend only on inputs 0..T-1, so the long run's first T
    #    outputs must equal the reference layer (direct O(T^2) sums) on the first T inputs.
    prefix = ref.layer(state, u64[:, :, :T])                       # (B, H, T)
    err = float(np.max(np.abs(y[:, :, :T] - prefix)) / np.max(np.abs(prefix)))
    checks.append((f"first {_fmt_int(T)} outputs vs reference.layer (float64 direct sums) on "
                   f"the first {_fmt_int(T)} inputs", err))

    # 2. The far end of the long run: outputs at spread-out times up to t = L-1, each a
    #    float64 direct sum over its whole past with the reference's kernel (no FFT).
    rng = np.random.default_rng(args.seed + 2)
    low = T if T < L else 0                                        # past the prefix if any
    positions = np.unique(np.concatenate([
        [L - 1, L // 2, low], rng.integers(low, L, size=max(args.positions - 3, 0))]))
    direct = _layer_at(ref, state, u64, positions)                 # (B, H, P)
    err = float(np.max(np.abs(y[:, :, positions] - direct)) / scale)
    checks.append((f"{len(positions)} outputs spread over t = {_fmt_int(int(positions.min()))}.."
                   f"{_fmt_int(L - 1)} vs float64 direct sums over the whole past", err))

    ok = True
    print(f"checks (max |error| / max |output|; tolerance 8 eps32 (log2(n) + 1) = {tol:.1e}):")
    for what, err in checks:
        passed = err <= tol
        ok &= passed
        print(f"  {'PASS' if passed else 'FAIL'}  {err:.1e}  {what}")
    print("result: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


# --- the parser -----------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, with errors as one line (plus the usage line) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="SGConv (Structured Global Convolution): inspect "
                     "kernels, see the backends, benchmark, check and demo.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"sgconv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser,
                                required=True)

    p = sub.add_parser("info", help="version, backends, devices and threads",
                       description="Print the sgconv version and, for each backend, its "
                       "framework version, device and thread count, or why it is unavailable.")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("kernel", help="the kernel of a configuration (and a figure of it)",
                       description="Summarise the SGConv kernel of a configuration: scales, "
                       "their lengths and offsets, the decay, the parameter count vs L; with "
                       "--plot, draw it (needs matplotlib: pip install 'sgconv[plot]').")
    p.add_argument("--d-model", type=_int_at_least(1), default=4, help="H (default 4)")
    p.add_argument("--l-max", type=_int_at_least(1), default=4096, help="l_max (default 4096)")
    p.add_argument("--channels", type=_int_at_least(1), default=1, help="C (default 1)")
    p.add_argument("--kernel-dim", type=_int_at_least(1), default=64, help="d (default 64)")
    p.add_argument("--n-scales", type=_int_at_least(1), default=None,
                   help="N (default 1 + ceil(log2(l_max / d)))")
    p.add_argument("--decay-min", type=_positive_float, default=2.0, help="default 2")
    p.add_argument("--decay-max", type=_positive_float, default=2.0, help="default 2")
    p.add_argument("--bidirectional", action="store_true", help="add the anti-causal half")
    p.add_argument("--interpolation", choices=("linear", "nearest"), default="linear")
    p.add_argument("--length", type=_int_at_least(1), default=None,
                   help="L to show the kernel for (default l_max)")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="initialisation seed")
    p.add_argument("--channel", type=_int_at_least(0), default=0,
                   help="which channel h to plot and weigh (default 0)")
    p.add_argument("--plot", metavar="PNG", default=None, help="write a figure to this file")
    p.set_defaults(func=cmd_kernel)

    p = sub.add_parser("bench", help="forward/backward time and memory per backend",
                       description="Time the SGConv layer per backend and length against the "
                       "bare scipy.fft floor of the same convolution, measured in the same "
                       "rounds; report peak memory.  Shows a progress bar on a terminal.")
    p.add_argument("--backend", action="append", metavar="NAME",
                   help="backend(s) to time (repeatable or comma-separated; default: every "
                   "usable one)")
    p.add_argument("--lengths", nargs="+", metavar="L",
                   help="sequence lengths (default 1024 4096 16384 65536; commas allowed)")
    p.add_argument("--batch", type=_int_at_least(1), default=2, help="B (default 2)")
    p.add_argument("--d-model", type=_int_at_least(1), default=32, help="H (default 32)")
    p.add_argument("--dtype", choices=_FLOATS, default="float32", help="default float32")
    p.add_argument("--repeat", type=_int_at_least(1), default=5,
                   help="timing rounds, median reported (default 5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("check", help="run the conformance suite",
                       description="Run the conformance suite (pytest, in a subprocess) for "
                       "the given backends and print a summary; the exit status is pytest's. "
                       "Arguments after '--' go to pytest.")
    p.add_argument("--backend", action="append", metavar="NAME",
                   help="backend(s) to check (repeatable or comma-separated; default: all)")
    p.add_argument("--path", default=None, metavar="DIR",
                   help="the conformance suite directory (default: the repository's)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("demo", help="the main job: a long sequence, checked in float64",
                       description="Build an SGConv layer on the NumPy backend, run a long "
                       "sequence through it, and check the output against the float64 "
                       "reference: the first --check-length outputs against the reference "
                       "layer's direct sums (causality makes them independent of the rest), and "
                       "outputs spread over the whole sequence against float64 direct sums. "
                       "Exit status 1 if a check fails.")
    p.add_argument("--length", type=_int_at_least(1), default=65536, help="L (default 65536)")
    p.add_argument("--batch", type=_int_at_least(1), default=2, help="B (default 2)")
    p.add_argument("--d-model", type=_int_at_least(1), default=32, help="H (default 32)")
    p.add_argument("--check-length", type=_int_at_least(1), default=2048,
                   help="prefix checked against the reference layer (default 2048)")
    p.add_argument("--positions", type=_int_at_least(1), default=64,
                   help="outputs checked by direct sums (default 64)")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="seed (default 0)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    """Run the ``sgconv`` command with ``argv`` (default sys.argv[1:]); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    if extra and args.command != "check":
        parser.exit(2, f"{PROG}: error: only 'check' passes arguments after '--' on "
                       f"(to pytest)\n")
    args.pytest_args = extra
    try:
        return args.func(args)
    except CliError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `sgconv kernel | head`: stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
