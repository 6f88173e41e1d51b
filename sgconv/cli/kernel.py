"""``sgconv kernel``: the kernel of a configuration, or of a trained checkpoint, and a figure.

The kernel comes from freshly initialised parameters (``--seed``), or from a checkpoint
(``--params``): an ``sgconv.save`` file (.npz) or a released PyTorch state_dict (.pt/.pth,
read with ``torch.load(weights_only=True)`` and ``sgconv.from_state_dict``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping

import numpy as np

from ._common import CliError, fmt_int, int_at_least, positive_float, table

__all__ = ["add_parser", "run", "FIGSIZE", "DPI"]

#: The figure of ``kernel --plot``: size in inches and resolution (a 16:9 slide, 1920x1080).
FIGSIZE = (16.0, 9.0)
DPI = 120
#: The configuration options and their defaults when the kernel comes from a seed.
_DEFAULTS = dict(d_model=4, l_max=4096, channels=1, kernel_dim=64, n_scales=None,
                 decay_min=2.0, decay_max=2.0, bidirectional=False, interpolation="linear",
                 seed=0)
#: Those a released state_dict does not hold (so --params FILE.pt may take them).
_NOT_IN_STATE_DICT = ("l_max", "interpolation")
_TORCH = (".pt", ".pth")
#: The keys of one layer in the released state_dict layout (SPEC, "Compatibility").
_LAYER_KEY = re.compile(r"(D|multiplier|decay|kernel_norm|kernel_norm_initialized|"
                        r"output_linear\.weight|output_linear\.bias|kernel_list\.\d+)$")


def add_parser(sub) -> None:
    p = sub.add_parser("kernel", help="the kernel of a configuration or a checkpoint (and a "
                       "figure of it)",
                       description="Summarise the SGConv kernel of a configuration (fresh "
                       "parameters from --seed) or of a trained checkpoint (--params): scales, "
                       "their lengths and offsets, the decay, the parameter count vs L; with "
                       "--plot, draw it (needs matplotlib: pip install 'sgconv[plot]').")
    d = _DEFAULTS
    p.add_argument("--d-model", type=int_at_least(1), default=None,
                   help=f"H (default {d['d_model']})")
    p.add_argument("--l-max", type=int_at_least(1), default=None,
                   help=f"l_max (default {d['l_max']}; for a .pt checkpoint, the kernel length K)")
    p.add_argument("--channels", type=int_at_least(1), default=None,
                   help=f"C (default {d['channels']})")
    p.add_argument("--kernel-dim", type=int_at_least(1), default=None,
                   help=f"d (default {d['kernel_dim']})")
    p.add_argument("--n-scales", type=int_at_least(1), default=None,
                   help="N (default 1 + ceil(log2(l_max / d)))")
    p.add_argument("--decay-min", type=positive_float, default=None,
                   help=f"default {d['decay_min']:g}")
    p.add_argument("--decay-max", type=positive_float, default=None,
                   help=f"default {d['decay_max']:g}")
    p.add_argument("--bidirectional", action="store_true", default=None,
                   help="add the anti-causal half")
    p.add_argument("--interpolation", choices=("linear", "nearest"), default=None,
                   help="default linear")
    p.add_argument("--seed", type=int_at_least(0), default=None,
                   help="initialisation seed (default 0)")
    p.add_argument("--params", metavar="FILE", default=None,
                   help="a trained checkpoint instead of fresh parameters: a released PyTorch "
                   "state_dict (.pt/.pth; --l-max and --interpolation, which it does not hold, "
                   "may go with it), else an sgconv.save file (.npz, found as sgconv.load "
                   "finds it; it holds the configuration, so no configuration option goes "
                   "with it)")
    p.add_argument("--prefix", metavar="KEYS", default=None,
                   help="with a .pt file holding several SGConv layers: the key prefix of the "
                   "one to show (e.g. 'encoder.layers.0.conv.')")
    p.add_argument("--length", type=int_at_least(1), default=None,
                   help="L to show the kernel for (default l_max)")
    p.add_argument("--channel", type=int_at_least(0), default=0,
                   help="which channel h to plot and weigh (default 0)")
    p.add_argument("--plot", metavar="PNG", default=None, help="write a figure to this file")
    p.set_defaults(func=run)


# --- where the parameters come from ---------------------------------------------------------

def _given(args, names) -> list[str]:
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n) is not None]


def _config(args):
    """SGConvConfig from the options (defaults filled in); ValueError/TypeError -> CliError."""
    from sgconv import SGConvConfig

    v = {k: (getattr(args, k) if getattr(args, k) is not None else default)
         for k, default in _DEFAULTS.items()}
    try:
        return SGConvConfig(d_model=v["d_model"], l_max=v["l_max"], channels=v["channels"],
                            kernel_dim=v["kernel_dim"], n_scales=v["n_scales"],
                            decay_min=v["decay_min"], decay_max=v["decay_max"],
                            bidirectional=v["bidirectional"], interpolation=v["interpolation"])
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc)) from None


def _flatten(mapping: Mapping, prefix: str = "") -> dict:
    """Nested dicts of arrays -> one dict with dotted keys ({'model': {'D': x}} -> 'model.D')."""
    out = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _layer_of(flat: dict, prefix: str | None, path: str) -> tuple:
    """(state_dict of one SGConv layer, its key prefix) out of a file's flattened keys."""
    prefixes = sorted(k[:-len("kernel_list.0")] for k in flat if k.endswith("kernel_list.0")
                      and (k == "kernel_list.0" or k.endswith(".kernel_list.0")))
    if not prefixes:
        shown = ", ".join(list(flat)[:8]) + (", ..." if len(flat) > 8 else "")
        raise CliError(f"--params {path!r} holds no SGConv layer (no key ending in "
                       f"'kernel_list.0'; its keys: {shown or 'none'})")
    if prefix is not None:
        wanted = prefix if prefix in ("", *prefixes) else prefix.rstrip(".") + "."
        if wanted not in prefixes:
            raise CliError(f"--prefix {prefix!r} names no SGConv layer in {path!r}; its layers: "
                           + ", ".join(repr(p) for p in prefixes))
        prefix = wanted
    elif len(prefixes) > 1:
        raise CliError(f"{path!r} holds {len(prefixes)} SGConv layers; choose one with --prefix: "
                       + ", ".join(repr(p) for p in prefixes))
    else:
        prefix = prefixes[0]
    state = {k[len(prefix):]: v for k, v in flat.items()
             if k.startswith(prefix) and _LAYER_KEY.match(k[len(prefix):])}
    return state, prefix


def _from_torch_file(args, path: str):
    try:
        import torch
    except ImportError:
        raise CliError("reading a PyTorch state_dict (.pt) needs PyTorch, which is not "
                       "installed: pip install 'sgconv[torch]'") from None
    import sgconv

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise CliError(f"--params {path!r}: cannot read it: {exc.strerror or exc}") from None
    except Exception as exc:  # an UnpicklingError of weights_only, a corrupted zip, ...
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CliError(f"--params {path!r}: torch.load(weights_only=True) cannot read it "
                       f"({type(exc).__name__}: {first}); save a state_dict with "
                       f"torch.save(module.state_dict(), path), not a pickled module") from None
    if not isinstance(obj, Mapping):
        raise CliError(f"--params {path!r} holds a {type(obj).__name__}, not a state_dict "
                       f"(a mapping of names to tensors)")
    state, prefix = _layer_of(_flatten(obj), args.prefix, path)
    keywords = {k: getattr(args, k) for k in _NOT_IN_STATE_DICT if getattr(args, k) is not None}
    try:
        params = sgconv.from_state_dict(state, dtype="float64", backend="numpy", **keywords)
    except (ValueError, TypeError) as exc:
        where = f" (keys {prefix!r}...)" if prefix else ""
        raise CliError(f"--params {path!r}{where}: {exc}") from None
    return params, f"{os.path.basename(path)}" + (f" [{prefix}]" if prefix else "")


def _checkpoint(args):
    """(float64 NumPy Params, a short name of the source) from --params."""
    import sgconv

    path = args.params
    torch_file = os.path.splitext(path)[1].lower() in _TORCH     # else sgconv.load's .npz
    allowed = _NOT_IN_STATE_DICT if torch_file else ()
    extra = _given(args, [k for k in _DEFAULTS if k not in allowed])
    if extra:
        held = ("holds every size; only --l-max and --interpolation may be given" if torch_file
                else "holds its configuration")
        raise CliError(f"{', '.join(extra)} cannot go with --params: the checkpoint {held}")
    if args.prefix is not None and not torch_file:
        raise CliError("--prefix selects a layer in a PyTorch state_dict (.pt); an .npz file "
                       "written by sgconv.save holds one layer")
    if torch_file:
        return _from_torch_file(args, path)
    try:
        params = sgconv.load(path, dtype="float64", backend="numpy")
    except (sgconv.CheckpointError, OSError) as exc:
        raise CliError(str(exc)) from None
    return params, os.path.basename(path)


def _parameters(args):
    """(config, float64 NumPy Params, source text) from --params or from the seed."""
    import sgconv

    if args.params is not None:
        params, source = _checkpoint(args)
        return params.config, params, f"checkpoint {source}"
    if args.prefix is not None:
        raise CliError("--prefix goes with --params FILE.pt")
    config = _config(args)
    seed = args.seed if args.seed is not None else _DEFAULTS["seed"]
    params = sgconv.init(config, seed=seed, dtype="float64", backend="numpy")
    return config, params, f"seed {seed}"


# --- the summary ----------------------------------------------------------------------------

def _rms_per_scale(params, channel: int) -> np.ndarray:
    """(N,) root mean square of each sub-kernel w_i on kernel row 0, channel h."""
    return np.array([math.sqrt(float(np.mean(np.asarray(w)[0, channel] ** 2)))
                     for w in params.kernels])


def _scale_table(config, length: int, Z, m, channel: int, rms=None):
    N = config.num_scales
    rows, start = [], 0
    for i, (s, size) in enumerate(zip(config.scale_factors, config.scale_lengths)):
        decay = m ** (N - 1 - i)                                   # (H,)
        dec = (f"{decay.min():.4g}" if np.ptp(decay) == 0
               else f"{decay.min():.4g}..{decay.max():.4g}")
        weight = decay[channel] / Z[0, channel]
        note = "" if start < length else "beyond L"
        row = [i, s, fmt_int(size), f"[{fmt_int(start)}, {fmt_int(start + size)})", dec,
               f"{weight:.4g}"]
        if rms is not None:
            row.append(f"{rms[i]:.4g}")
        rows.append(row + [note])
        start += size
    return rows


def run(args) -> int:
    import sgconv

    if args.plot is not None:
        plt = _pyplot()                                            # fail before the work
    config, params, source = _parameters(args)
    length = args.length if args.length is not None else config.l_max
    if not 0 <= args.channel < config.d_model:
        raise CliError(f"--channel must be in 0..{config.d_model - 1} (d_model={config.d_model}), "
                       f"got {args.channel}")
    with sgconv.using("numpy"):
        k = np.asarray(sgconv.kernel(params, length))              # (C', H, L)
    Z, m = np.asarray(params.kernel_norm), np.asarray(params.multiplier)  # (C', H), (H,)
    decay = None if params.decay is None else np.asarray(params.decay)    # (H,) or None
    trained = args.params is not None
    rms = _rms_per_scale(params, args.channel) if trained else None
    N, d, H = config.num_scales, config.kernel_dim, config.d_model
    K = config.kernel_length
    kind = "bidirectional (C'=2C rows)" if config.bidirectional else "causal"
    print(f"SGConv kernel: H={H} channels, C={config.channels} head(s), {kind}, d={d}, "
          f"l_max={fmt_int(config.l_max)}, {config.interpolation} upsampling, {source}")
    print(f"N = {N} scales; scale i is w_i (length d) upsampled by s_i = 2^max(0, i-1) and "
          f"weighted by m^(N-1-i); kernel length K = d*2^(N-1) = {fmt_int(K)}; shown for "
          f"L = {fmt_int(length)}" + (" (zero-padded beyond K)" if length > K else ""))
    if decay is not None:
        print(f"learnable decay: m = 1 and k_raw[t] *= (t+1)^(-decay[h]), decay "
              f"{decay.min():.4g}..{decay.max():.4g}; Z = ||k_raw|| per row "
              f"(min {Z.min():.4g}, max {Z.max():.4g})")
    elif trained:
        print(f"decay multiplier m (stored): {m.min():.4g}..{m.max():.4g}: each farther scale "
              f"weighs 1/m as much; Z = ||k_raw|| per row at initialisation "
              f"(min {Z.min():.4g}, max {Z.max():.4g})")
    else:
        print(f"decay multiplier m = linspace({config.decay_min:g}, {config.decay_max:g}, H): "
              f"each farther scale weighs 1/m as much; Z = ||k_raw|| per row "
              f"(min {Z.min():.4g}, max {Z.max():.4g})")
    print()
    header = ["scale", "s_i", "length", "lags [start, end)", "m^(N-1-i)",
              f"m^(N-1-i)/Z (h={args.channel})"] + (
                  [f"rms w_i (h={args.channel})"] if trained else []) + [""]
    print(table(header, _scale_table(config, length, Z, m, args.channel, rms),
                [">"] * (len(header) - 1) + ["<"]))
    print()
    _print_parameter_counts(config)
    if args.plot is not None:
        _plot_kernel(plt, config, k, Z, m, decay, rms, args.channel, length, source, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _print_parameter_counts(config) -> None:
    from sgconv import SGConvConfig

    H, d, Cp = config.d_model, config.kernel_dim, config.kernel_rows
    rows = []
    for p in range(10, 21, 2):
        L = 2 ** p
        c = SGConvConfig(d_model=H, l_max=L, channels=config.channels, kernel_dim=d,
                         bidirectional=config.bidirectional)
        dense = Cp * H * L
        rows.append([fmt_int(L), c.num_scales, fmt_int(c.num_kernel_parameters),
                     fmt_int(dense), f"{dense / c.num_kernel_parameters:,.0f}x"])
    print(f"kernel parameters vs L (H={H}, C'={Cp}, d={d}): each doubling of L adds one scale, "
          f"C'*H*d = {fmt_int(Cp * H * d)} weights: O(log L), while a dense kernel grows as L")
    print(table(["L", "N", "SGConv N*C'*H*d", "dense C'*H*L", "dense / SGConv"], rows,
                [">"] * 5))
    print(f"this configuration: {fmt_int(config.num_kernel_parameters)} kernel weights, "
          f"{fmt_int(config.num_parameters)} parameters in the whole layer (with D and the "
          f"{config.channels * H}->{H} mixing)")


# --- the figure -----------------------------------------------------------------------------

def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise CliError("--plot needs matplotlib, which is not installed: "
                       "pip install 'sgconv[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _plot_kernel(plt, config, k, Z, m, decay, rms, channel: int, length: int, source: str,
                 path: str) -> None:
    """The figure: the kernel with its scales, |k| against the decay envelope, the spectrum.

    The envelope on scale i is m^(N-1-i)/Z (times (t+1)^(-decay) in learnable-decay mode),
    times the sub-kernel's size: 1 for fresh weights w_i ~ N(0, 1), the measured rms(w_i) for
    a trained checkpoint (``rms`` given)."""
    N, d = config.num_scales, config.kernel_dim
    row = k[0, channel]                                            # (L,) causal row 0
    t = np.arange(length)
    starts = np.cumsum((0,) + config.scale_lengths)  # scale i: [starts[i], starts[i+1])
    env = np.zeros(length)                                         # the envelope per lag
    for i in range(N):
        a, b = min(starts[i], length), min(starts[i + 1], length)
        size = 1.0 if rms is None else rms[i]
        env[a:b] = size * m[channel] ** (N - 1 - i) / Z[0, channel]
    if decay is not None:
        env *= (t + 1.0) ** (-decay[channel])
    shown = [i for i in range(N) if starts[i] < length]
    x_max = length - 1 if length > 1 else 1
    rule = ("m^{N-1-i}" if decay is None else r"(t+1)^{-\mathrm{decay}}")
    if rms is None:
        env_label = rf"decay envelope $\pm 2\,{rule}/Z$ (weights $w_i \sim N(0,1)$)"
        env_short = f"${rule}/Z$"
    else:
        env_label = rf"decay envelope $\pm 2\,\mathrm{{rms}}(w_i)\,{rule}/Z$ (trained weights)"
        env_short = rf"$\mathrm{{rms}}(w_i)\,{rule}/Z$"

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
    # about 95% of the taps of scale i lie within +-2 times the envelope.
    ax_k.plot(t, 2 * env, color="#c0504d", lw=1.6, ls="--", drawstyle="steps-post",
              label=env_label)
    ax_k.plot(t, -2 * env, color="#c0504d", lw=1.6, ls="--", drawstyle="steps-post")
    lag_axis(ax_k)
    ax_k.set_ylabel("$k[t]$", fontsize=13)
    half = " (causal half)" if config.bidirectional else ""
    ax_k.set_title(f"The kernel{half}: {len(shown)} scales (shaded), each a sub-kernel of "
                   f"d={d} taps "
                   rf"upsampled $\times$1, 1, 2, 4, ... and weighted by ${rule}$",
                   fontsize=14)
    ax_k.legend(loc="lower right", fontsize=11, framealpha=0.95)
    ax_k.grid(alpha=0.25, axis="y")

    mark_scales(ax_env)
    ax_env.plot(t, np.abs(row), color="#1f4e79", lw=0.6, alpha=0.8, label="$|k[t]|$")
    ax_env.plot(t, env, color="#c0504d", lw=2.0, drawstyle="steps-post", label=env_short)
    lag_axis(ax_env)
    ax_env.set_yscale("log")
    positive = np.abs(row)[np.abs(row) > 0]
    if positive.size and np.any(env > 0):
        ax_env.set_ylim(max(positive.min(), env[env > 0].min() * 1e-3), env.max() * 10)
    ax_env.set_ylabel("$|k[t]|$ (log scale)", fontsize=13)
    ax_env.set_title(f"Decay: each farther scale weighs $1/m$ = {1 / m[channel]:.3g} as much"
                     if decay is None else
                     f"Learnable decay: $(t+1)^{{-{decay[channel]:.3g}}}$ on channel {channel}",
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
    rms_spec = np.sqrt((spec ** 2).mean(axis=0))
    ax_f.plot(f[keep], db(rms_spec[keep]), color="#e46c0a", lw=1.8,
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
    m_text = (f"m={m.min():g}" if np.ptp(m) == 0 else f"m={m.min():.3g}..{m.max():.3g}")
    fig.suptitle(f"SGConv kernel ({source}), L = {length:,}: H={config.d_model}, N={N} scales "
                 f"of d={d}, {m_text}: {config.num_kernel_parameters:,} learned weights "
                 f"(a dense kernel: {config.kernel_rows * config.d_model * length:,})",
                 fontsize=15, fontweight="bold")
    try:
        fig.savefig(path, dpi=DPI)
    except OSError as exc:
        raise CliError(f"cannot write the figure to {path!r}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
