"""``SGConv2d``: the 2D SGConv layer as a torch.nn.Module (shared/SPEC.md, "Two-dimensional
SGConv"), a global drop-in where a depthwise ``nn.Conv2d(H, H, 7, padding=3, groups=H)`` is."""

from __future__ import annotations

import torch
from torch import nn

from .. import _checks, _ops, _ops2d
from .._api2d import check_input2d
from .._config2d import SGConv2dConfig
from .functional import _bk, _compute_dtype, _no_autocast

__all__ = ["SGConv2d"]

_AXES = ("x", "y")


class SGConv2d(nn.Module):
    """2D SGConv: a global depthwise convolution with O(d log X) parameters per channel.

        u (B, H, X, Y) -> y = (kx (x) ky) * u + D u      (B, C, H, X, Y)  linear, by FFT
                       -> GELU -> dropout -> Linear(C*H -> H)            (B, H, X, Y)

    Each kernel row has two bidirectional 1D SGConv kernels, kx along X and ky along Y,
    each built as in 1D from its own sub-kernels (C'=2C, H, d), decay multiplier and fixed
    normaliser Z; the 2D kernel is their outer product, k2[c, h, dx, dy] = kx~[dx] ky~[dy]
    (k~[delta] = k0[delta] for delta >= 0, k1[-delta-1] for delta < 0), reaching across
    the whole image.  Its spectrum is the outer product of the 1D spectra: the (X, Y)
    kernel is never formed in space.  Input and output are (B, H, X, Y) (the layout of
    ``nn.Conv2d``), or channels-last (B, X, Y, H) with ``transposed=False``.  Images of any
    size work: smaller than ``sizes`` crop the axis kernels, larger zero-pad them.  float16
    and bfloat16 inputs are computed in float32 and returned in their dtype (also under
    autocast).  Forward has no side effects and compiles with
    ``torch.compile(fullgraph=True)``; in evaluation, when no kernel gradient is needed, the
    2D spectrum is cached per (X, Y, dtype, device) until a parameter changes.

    Args:
        d_model (H): channels.  sizes (X, Y): the largest image the kernels are built for
            (the l_max of each axis; one int: square).
        channels (C): kernels per channel; the mixing is C*H -> H.
        kernel_dim (d): sub-kernel length (64, as in 1D; for feature maps of tens of pixels a
            smaller d, e.g. 8 or 16, gives several scales).
        n_scales: None (from sizes, per axis), an int or a pair (N_x, N_y).
        decay_min, decay_max: the multipliers linspace(decay_min, decay_max, H) (2, 2).
        interpolation: 'linear' or 'nearest'.  learnable_decay: trained decay exponents
            (decay_x, decay_y) instead of the multipliers, as the 1D 'learnable' mode.
        dropout: rate after the GELU (training mode only).  transposed: (B, H, X, Y) in and
            out; False for channels-last.
        channel_chunk: convolve that many channels at a time (None: from
            ``sgconv.get_memory_budget()``); the numbers are the same.
        device, dtype: where and in what dtype to create the parameters.

    Parameters and buffers, per axis a in (x, y): ``kernel_list_a.{i}`` (2C, H, d),
    ``multiplier_a`` (1, H, 1) (a 0-d 1.0 with ``learnable_decay``, plus the parameter
    ``decay_a`` (H,)), ``kernel_norm_a`` (2C, H, 1); then ``D`` (C, H) and ``output_linear``
    (H, C*H), (H,): the layout of ``sgconv.to_state_dict2d``, so ``sgconv.save`` /
    ``sgconv.load`` checkpoints move between this module, NumPy and JAX
    (:meth:`from_params`, :meth:`to_params`).
    """

    def __init__(self, d_model: int, sizes, *, channels: int = 1, kernel_dim: int = 64,
                 n_scales=None, decay_min: float = 2.0, decay_max: float = 2.0,
                 interpolation: str = "linear", learnable_decay: bool = False,
                 dropout: float = 0.0, transposed: bool = True,
                 channel_chunk: int | None = None, device=None, dtype=None):
        super().__init__()
        self.config = SGConv2dConfig(d_model=d_model, sizes=sizes, channels=channels,
                                     kernel_dim=kernel_dim, n_scales=n_scales,
                                     decay_min=decay_min, decay_max=decay_max,
                                     interpolation=interpolation,
                                     learnable_decay=_checks.check_bool("learnable_decay",
                                                                        learnable_decay))
        self.dropout_rate = _checks.check_rate(dropout)
        self.transposed = _checks.check_bool("transposed", transposed)
        self.channel_chunk = _checks.check_channel_chunk(channel_chunk)
        cfg = self.config
        H, C, d = cfg.d_model, cfg.channels, cfg.kernel_dim
        factory = {"device": device, "dtype": dtype}
        for a, axis in zip(_AXES, cfg.axes):
            setattr(self, "kernel_list_" + a, nn.ParameterList(
                nn.Parameter(torch.empty(2 * C, H, d, **factory))
                for _ in range(axis.num_scales)))                              # (2C, H, d)
        self.D = nn.Parameter(torch.empty(C, H, **factory))                   # (C, H)
        self.output_linear = nn.Linear(C * H, H, **factory)                   # (H, C*H)
        for a in _AXES:
            if cfg.learnable_decay:
                setattr(self, "decay_" + a, nn.Parameter(torch.empty(H, **factory)))  # (H,)
                self.register_buffer("multiplier_" + a, torch.ones((), **factory))
            else:
                setattr(self, "decay_" + a, None)
                self.register_buffer("multiplier_" + a, torch.empty(1, H, 1, **factory))
            self.register_buffer("kernel_norm_" + a, torch.empty(2 * C, H, 1, **factory))
        self._spectrum_cache = None
        self.reset_parameters()

    # --- parameters ------------------------------------------------------------------

    def reset_parameters(self) -> None:
        """Fresh weights per SPEC from torch's generator, in this order: the x sub-kernels,
        the y sub-kernels ~ N(0, 1), D ~ N(0, 1), output_linear as nn.Linear, then the
        learnable decays ~ U(decay_min, decay_max); multipliers linspace(decay_min,
        decay_max, H); then each axis's Z (float64).  (``sgconv.init2d`` draws the same
        distributions from NumPy; :meth:`from_params` loads its numbers.)"""
        cfg = self.config
        with torch.no_grad():
            for a in _AXES:
                for w in getattr(self, "kernel_list_" + a):
                    w.normal_()
            self.D.normal_()
            self.output_linear.reset_parameters()
            for a in _AXES:
                decay = getattr(self, "decay_" + a)
                if decay is not None:
                    decay.copy_(torch.rand(decay.shape, dtype=decay.dtype, device=decay.device)
                                * (cfg.decay_max - cfg.decay_min) + cfg.decay_min)
                else:
                    getattr(self, "multiplier_" + a).copy_(torch.linspace(
                        cfg.decay_min, cfg.decay_max, cfg.d_model, dtype=torch.float64
                    ).view(1, -1, 1))
            self.reset_kernel_norm()

    def reset_kernel_norm(self) -> None:
        """Each axis's Z[c, h] = ||k_raw[c, h, :]||_2 over its full K, from the current
        weights (float64), into kernel_norm_x / kernel_norm_y.  Never called by forward."""
        bk = _bk()
        H = self.config.d_model
        with torch.no_grad():
            for a, axis in zip(_AXES, self.config.axes):
                kernels = tuple(w.detach().double() for w in getattr(self, "kernel_list_" + a))
                m = getattr(self, "multiplier_" + a).detach().double().reshape(-1).expand(H)
                decay = getattr(self, "decay_" + a)
                decay = None if decay is None else decay.detach().double()
                Z = _ops.normaliser(bk, axis, kernels, m, decay)                   # (2C, H)
                getattr(self, "kernel_norm_" + a).copy_(Z[..., None])

    @classmethod
    def from_params(cls, params, **kwargs) -> "SGConv2d":
        """A module holding :class:`sgconv.Params2d` (any backend), e.g. from
        ``sgconv.init2d`` or ``sgconv.load``.  kwargs: the other options (transposed,
        dropout, channel_chunk, device, dtype)."""
        from .._params2d import Params2d, to_state_dict2d
        if not isinstance(params, Params2d):
            raise TypeError(f"from_params expects sgconv.Params2d, got {type(params).__name__}")
        cfg = params.config
        module = cls(cfg.d_model, cfg.sizes, channels=cfg.channels, kernel_dim=cfg.kernel_dim,
                     n_scales=cfg.num_scales, decay_min=cfg.decay_min, decay_max=cfg.decay_max,
                     interpolation=cfg.interpolation, learnable_decay=cfg.learnable_decay,
                     **kwargs)
        state = to_state_dict2d(params)
        if params.backend != "torch":
            from .._switch import backend as get_backend
            to_numpy = get_backend(params.backend).to_numpy
            state = {k: torch.as_tensor(to_numpy(v)) for k, v in state.items()}
        module.load_state_dict(state, strict=True)
        return module

    def to_params(self, backend: str | None = None):
        """The module's parameters as :class:`sgconv.Params2d` (for ``sgconv.save``, or to
        run them on another backend), on ``backend`` (default: torch)."""
        from .._params2d import from_state_dict2d
        cfg = self.config
        state = {k: v.detach() for k, v in self.state_dict().items()}
        return from_state_dict2d(state, backend=backend or "torch", sizes=cfg.sizes,
                                 decay_min=cfg.decay_min, decay_max=cfg.decay_max,
                                 interpolation=cfg.interpolation)

    # --- forward ---------------------------------------------------------------------

    def _arrays(self, cdtype, device) -> dict:
        H = self.config.d_model
        cast = lambda t: t.to(device=device, dtype=cdtype)  # noqa: E731
        out = {}
        for a in _AXES:
            out["kernels_" + a] = tuple(cast(w) for w in getattr(self, "kernel_list_" + a))
            out["multiplier_" + a] = cast(getattr(self, "multiplier_" + a).reshape(-1).expand(H))
            out["kernel_norm_" + a] = cast(getattr(self, "kernel_norm_" + a)[..., 0])
            decay = getattr(self, "decay_" + a)
            out["decay_" + a] = None if decay is None else cast(decay)
        out["D"] = cast(self.D)
        out["out_weight"] = cast(self.output_linear.weight)
        out["out_bias"] = cast(self.output_linear.bias)
        return out

    def _kernel_tensors(self):
        out = [*self.kernel_list_x, *self.kernel_list_y, self.multiplier_x, self.multiplier_y,
               self.kernel_norm_x, self.kernel_norm_y, self.D]
        return out + [t for t in (self.decay_x, self.decay_y) if t is not None]

    def _prepared(self, arrays, sizes, cdtype, device):
        """The cached Prepared2d (the 2D spectrum), or None when caching is off: under
        torch.compile and whenever autograd needs the kernel's gradient.  Keyed by every
        tensor it depends on (storage address and version counter), as the 1D module."""
        if torch.compiler.is_compiling():
            return None
        tensors = self._kernel_tensors()
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return None
        key = (sizes, cdtype, device, torch.is_inference_mode_enabled(),
               tuple((t.data_ptr(), t._version) for t in tensors))
        cache = self._spectrum_cache
        if cache is not None and cache[0] == key:
            return cache[1]
        with torch.no_grad():
            prepared = _ops2d.prepare(_bk(), self.config, arrays, sizes)
        self._spectrum_cache = (key, prepared, tuple(t.detach() for t in tensors))
        return prepared

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """The layer on u (B, H, X, Y) (channels-last (B, X, Y, H) when not transposed),
        returned in u's layout and dtype."""
        bk = _bk()
        u = check_input2d(bk, u, self.config.d_model, self.transposed)
        cdtype, device = _compute_dtype(u.dtype), u.device
        with _no_autocast(device):
            x = (u if self.transposed else u.permute(0, 3, 1, 2)).to(cdtype)   # (B, H, X, Y)
            sizes = (x.shape[-2], x.shape[-1])
            arrays = self._arrays(cdtype, device)
            prepared = self._prepared(arrays, sizes, cdtype, device)
            y = _ops2d.layer(bk, self.config, arrays if prepared is None else prepared, x,
                             dropout=self.dropout_rate if self.training else 0.0, rng=None,
                             channel_chunk=self.channel_chunk)                 # (B, H, X, Y)
            y = y.to(u.dtype)
        return y if self.transposed else y.permute(0, 2, 3, 1)

    # --- housekeeping ------------------------------------------------------------------

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_spectrum_cache"] = None
        return state

    def _apply(self, *args, **kwargs):
        self._spectrum_cache = None           # .to(), .half(), .cuda(): drop the old device's
        return super()._apply(*args, **kwargs)

    @property
    def num_kernel_parameters(self) -> int:
        """(N_x + N_y) 2C H d sub-kernel weights (a dense global kernel has X Y H)."""
        return self.config.num_kernel_parameters

    def extra_repr(self) -> str:
        cfg = self.config
        parts = [f"d_model={cfg.d_model}", f"sizes={cfg.sizes}", f"channels={cfg.channels}",
                 f"kernel_dim={cfg.kernel_dim}", f"n_scales={cfg.num_scales}",
                 f"kernel_lengths={cfg.kernel_lengths}",
                 f"kernel_parameters={cfg.num_kernel_parameters}"]
        if (cfg.decay_min, cfg.decay_max) != (2.0, 2.0):
            parts.append(f"decay=({cfg.decay_min}, {cfg.decay_max})")
        if cfg.interpolation != "linear":
            parts.append(f"interpolation={cfg.interpolation!r}")
        if cfg.learnable_decay:
            parts.append("learnable_decay=True")
        if not self.transposed:
            parts.append("transposed=False")
        if self.dropout_rate:
            parts.append(f"dropout={self.dropout_rate}")
        if self.channel_chunk is not None:
            parts.append(f"channel_chunk={self.channel_chunk}")
        return ", ".join(parts)
