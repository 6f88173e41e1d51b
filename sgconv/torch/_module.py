"""``SGConv``, a torch.nn.Module, and ``GConv``, the released module's name and call convention."""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import _checks, _decode, _ops
from .._config import SGConvConfig
from .._decode import DecodeState
from .functional import _bk, _compute_dtype, run_layer

__all__ = ["SGConv", "GConv", "ShortKernelWarning"]


class ShortKernelWarning(UserWarning):
    """An SGConv layer built with the released default ``l_max=1``: its kernel is local."""


def _resolve_l_max(l_max, d_model, kernel_dim, n_scales, cls_name: str) -> int:
    """l_max, or the released default 1 with a warning that says what it means.

    The released module defaults to l_max=1, which gives N = 1 scale: a kernel of only
    K = kernel_dim taps (64), so the layer is a short local convolution and longer
    sequences see a zero-padded kernel.  Kept for drop-in compatibility, never silently.
    """
    if l_max is not None:
        return l_max
    K = kernel_dim * 2 ** ((n_scales or 1) - 1) if isinstance(kernel_dim, int) else kernel_dim
    warnings.warn(
        f"{cls_name}(d_model={d_model}) was built without l_max, so it keeps the released "
        f"default l_max=1: its kernel has only K={K} taps and every sequence longer than that "
        f"is convolved with a kernel that stops at K, i.e. a local convolution, not a global "
        f"one.  Pass l_max=<the longest sequence length> for SGConv's global kernel (or "
        f"l_max=1 explicitly to keep this one without the warning).",
        ShortKernelWarning, stacklevel=3)
    return 1

_MODE_TOKENS = {"cat", "randn", "cos", "nearest", "learnable", "fixed"}


def _parse_mode(mode) -> dict:
    """The released module's ``mode`` string -> options.

    It is read as underscore-separated words: 'cat' (required: the sub-kernels are
    concatenated), 'randn' or 'cos' (initial sub-kernels), optionally 'nearest'
    (interpolation), 'learnable' (trained decay exponent) and 'fixed' (with 'learnable':
    the decay is not trained).  'cat_randn' is the released default.
    """
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a string such as 'cat_randn', got {mode!r}")
    words = mode.split("_")
    if "sum" in words:
        raise ValueError(f"mode {mode!r}: the 'sum' variant (sub-kernels summed at lag 0) is "
                         f"not supported; use a 'cat' mode such as 'cat_randn'")
    unknown = [w for w in words if w not in _MODE_TOKENS]
    if unknown or "cat" not in words or ("randn" in words) == ("cos" in words):
        raise ValueError(f"mode {mode!r} is not understood: expected 'cat' and one of "
                         f"'randn'/'cos', optionally with 'nearest', 'learnable' and 'fixed', "
                         f"joined by '_' (e.g. 'cat_randn', 'cat_randn_nearest', "
                         f"'cat_randn_learnable')"
                         + (f"; unknown words {unknown}" if unknown else ""))
    if "fixed" in words and "learnable" not in words:
        raise ValueError(f"mode {mode!r}: 'fixed' only applies to the 'learnable' decay")
    return {"init": "cos" if "cos" in words else "randn",
            "interpolation": "nearest" if "nearest" in words else "linear",
            "learnable_decay": "learnable" in words,
            "train_decay": "learnable" in words and "fixed" not in words}


def _require(name: str, value, allowed, why: str):
    if value != allowed:
        raise ValueError(f"{name}={value!r} is not supported by sgconv ({why}); "
                         f"expected {name}={allowed!r}")


class SGConv(nn.Module):
    """SGConv layer (Li et al., arXiv 2210.09298), a drop-in for the authors' ``GConv``.

        u (B, H, L) -> y = k * u + D u            (B, C, H, L)   long convolution by FFT
                    -> GELU -> dropout -> Linear(C*H -> H)   (B, H, L)

    with the kernel k = Cat(m^(N-1) Up_0(w_0), ..., Up_{N-1}(w_{N-1}))[..., :L] / Z built
    from N short sub-kernels w_i (C', H, d) (shared/SPEC.md).  Input and output are
    (B, H, L) when ``transposed`` (the released default), else (B, L, H); float16 and
    bfloat16 inputs are computed in float32 and returned in their dtype (also under
    autocast).

    Parameters and buffers carry the released module's names and shapes, so its
    state_dicts load strictly: ``D`` (C, H), ``kernel_list.{i}`` (C', H, d), ``multiplier``
    (1, H, 1) (a 0-d 1.0 plus the parameter ``decay`` (H,) in 'learnable' mode),
    ``kernel_norm`` (C', H, 1), ``kernel_norm_initialized`` (bool), ``output_linear.weight``
    (H, C*H), ``output_linear.bias`` (H,).  Z is computed when the parameters are reset
    (and when a checkpoint saved before its first forward call is loaded), never in
    forward, which has no side effects and compiles with ``torch.compile(fullgraph=True)``.

    Args (the released keywords where they exist):
        d_model (H): width.  l_max: the longest sequence the kernel is built for.  Left
            out, it is the released module's default 1, which builds a LOCAL kernel of
            kernel_dim taps (longer sequences see a kernel zero-padded past K): a
            ShortKernelWarning says so at construction.  Pass the sequence length.
        channels (C): kernels per channel.  bidirectional: add an anti-causal half.
        kernel_dim (d): sub-kernel length (64).  n_scales (N): default 1+ceil(log2(l_max/d)).
        decay_min, decay_max: the multiplier m = linspace(decay_min, decay_max, H) (2, 2).
        dropout: rate, applied in training mode to each element of GELU's output (SPEC;
            the released module used channel-wise nn.Dropout2d in the transposed layout).
        transposed: (B, H, L) in and out.
        activation: 'gelu' (exact) only.  mode: 'cat_randn' (default), with 'nearest',
            'learnable', 'fixed' and 'cos' variants (see :func:`_parse_mode`).
        block_size: FFT plan: None picks overlap-add blocks when L is well above the kernel
            length (cost L log K), 0 forces one FFT, P > 0 blocks of P.
        channel_chunk: convolve that many channels at a time; None (the default) chooses it
            from ``sgconv.get_memory_budget()`` (64 MiB per chunk), which bounds the memory
            of long sequences and keeps the working set in cache.  The numbers are the
            same for every chunk size.
        device, dtype: where and in what dtype to create the parameters.
        postact: None, or 'glu' as the released LRA configs use: the output linear maps
            C*H -> 2H and a GLU (first half times the sigmoid of the second) brings it back
            to H.  Its parameters are then ``output_linear.0.weight`` (2H, C*H) and
            ``output_linear.0.bias`` (2H,), the released module's names for this option.
        d_state, hyper_act, verbose, shift, linear, init_scale, lr: the released module's
            other keywords; d_state is ignored (it is ignored there too), ``verbose``
            prints nothing (forward has no side effects), ``lr`` is stored as the
            sub-kernels' ``_optim`` learning rate as the released module does, and any value
            other than the default of the rest raises ValueError.

    In evaluation, when no gradient of the kernel is needed (``torch.no_grad`` /
    ``inference_mode``, or frozen parameters), the kernel's spectrum is cached per
    (L, dtype, device) and rebuilt whenever a parameter changes (tensor version counters
    and storage), so repeated calls only transform the input.

    A causal layer also decodes step by step (autoregressive generation)::

        with torch.inference_mode():
            y, state = layer.prefill(prompt)          # (B, H, T) by FFT, and the state after it
            y_t, state = layer.step(u_t, state)       # (B, H) -> (B, H), O(d log L) per token

    (:meth:`init_state` starts without a prompt).  A model of such layers steps each of
    them in turn with its own state: norms, residual sums and pointwise MLPs act on one
    time step as they do on a sequence.
    """

    def __init__(self, d_model: int, l_max: int | None = None, *, channels: int = 1,
                 bidirectional: bool = False, kernel_dim: int = 64, n_scales: int | None = None,
                 decay_min: float = 2.0, decay_max: float = 2.0, dropout: float = 0.0,
                 transposed: bool = True, activation: str = "gelu", mode: str = "cat_randn",
                 block_size: int | None = None, channel_chunk: int | None = None,
                 device=None, dtype=None,
                 d_state: int = 64, postact=None, hyper_act=None, verbose: bool = False,
                 shift: bool = False, linear: bool = False, init_scale: int = 0,
                 lr: float | None = None):
        super().__init__()
        _require("activation", activation, "gelu", "the layer's nonlinearity is the exact GELU")
        if postact not in (None, "glu"):
            raise ValueError(f"postact={postact!r} is not supported by sgconv; expected None (no "
                             f"activation after the output linear) or 'glu' (the linear maps "
                             f"C*H -> 2H, then a GLU halves it, as the released LRA configs)")
        _require("hyper_act", hyper_act, None, "no multiplicative hypernetwork branch")
        _require("shift", shift, False, "no shift variant")
        _require("linear", linear, False, "the layer always has GELU and the output linear")
        _require("init_scale", init_scale, 0, "scales start at stretch 1, as in the paper")
        if isinstance(d_state, bool) or not isinstance(d_state, numbers.Integral) or d_state < 1:
            raise ValueError(f"d_state must be a positive int (it is accepted for compatibility "
                             f"and ignored), got {d_state!r}")
        dropout = _checks.check_rate(dropout)
        transposed = _checks.check_bool("transposed", transposed)
        verbose = _checks.check_bool("verbose", verbose)
        block_size = _checks.check_block_size(block_size)
        channel_chunk = _checks.check_channel_chunk(channel_chunk)
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, numbers.Real) or lr <= 0):
            raise ValueError(f"lr must be None or a positive number, got {lr!r}")
        options = _parse_mode(mode)
        l_max = _resolve_l_max(l_max, d_model, kernel_dim, n_scales, type(self).__name__)
        self.config = SGConvConfig(
            d_model=d_model, l_max=l_max, channels=channels, kernel_dim=kernel_dim,
            n_scales=n_scales, decay_min=decay_min, decay_max=decay_max,
            bidirectional=bidirectional, interpolation=options["interpolation"],
            learnable_decay=options["learnable_decay"])
        cfg = self.config
        self.d_model, self.l_max, self.channels = cfg.d_model, cfg.l_max, cfg.channels
        self.bidirectional, self.transposed, self.mode = cfg.bidirectional, transposed, mode
        self.dropout_rate = float(dropout)
        self.block_size, self.channel_chunk = block_size, channel_chunk
        self.verbose = verbose
        self.postact = postact
        self._init = options["init"]
        factory = {"device": device, "dtype": dtype}
        H, C, Cp, d = cfg.d_model, cfg.channels, cfg.kernel_rows, cfg.kernel_dim

        # Registration order and draw order follow the released module.
        self.D = nn.Parameter(torch.empty(C, H, **factory))                       # (C, H)
        # skip_init: created without drawing, so that reset_parameters draws in order
        mixing = nn.utils.skip_init(                                  # (H, C*H), or (2H, C*H)
            nn.Linear, C * H, 2 * H if postact == "glu" else H, dtype=dtype,
            device=device if device is not None else torch.empty(()).device)
        # postact 'glu': the released LinearActivation, Sequential(linear, GLU), so its
        # state_dict keys are output_linear.0.weight (2H, C*H) and output_linear.0.bias (2H,)
        self.output_linear = (mixing if postact is None else
                              nn.Sequential(mixing, nn.GLU(dim=1 if transposed else -1)))
        self.kernel_list = nn.ParameterList(
            nn.Parameter(torch.empty(Cp, H, d, **factory)) for _ in range(cfg.num_scales))
        for w in self.kernel_list:
            w._optim = {"lr": 0.001 if lr is None else float(lr)}  # read by S4-style optimisers
        if cfg.learnable_decay:
            self.decay = nn.Parameter(torch.empty(H, **factory),                  # (H,)
                                      requires_grad=options["train_decay"])
            if options["train_decay"]:
                self.decay._optim = {"lr": 0.001 if lr is None else float(lr)}
            self.register_buffer("multiplier", torch.ones((), **factory))         # ()
        else:
            self.decay = None
            self.register_buffer("multiplier", torch.empty(1, H, 1, **factory))   # (1, H, 1)
        self.register_buffer("kernel_norm", torch.empty(Cp, H, 1, **factory))     # (C', H, 1)
        self.register_buffer("kernel_norm_initialized",
                             torch.zeros((), dtype=torch.bool, device=device))
        self._spectrum_cache = None
        self._decoder_cache = None
        self._norm_pending = False
        self.register_load_state_dict_post_hook(_finish_load)
        self.reset_parameters()

    # --- parameters ------------------------------------------------------------------

    def reset_parameters(self) -> None:
        """Fresh weights per SPEC, in the released module's draw order, then Z.

        D ~ N(0, 1); output_linear as nn.Linear; each w_i ~ N(0, 1) (or the 'cos' init);
        decay ~ U(decay_min, decay_max) in 'learnable' mode; m = linspace(decay_min,
        decay_max, H).  So under the same ``torch.manual_seed`` a CPU float32 layer starts
        from the released module's numbers.  Z = ||k_raw||_2 per row (computed in float64).
        """
        cfg = self.config
        H = cfg.d_model
        with torch.no_grad():
            self.D.normal_()
            self._mixing.reset_parameters()
            for w in self.kernel_list:
                if self._init == "cos":
                    # row h: cos over [0, 2 pi h'] at d points, for a random permutation h'
                    grid = torch.linspace(0.0, 1.0, cfg.kernel_dim, dtype=torch.float64)
                    rows = torch.cos(2 * math.pi * torch.arange(H, dtype=torch.float64)[:, None]
                                     * grid)                               # (H, d)
                    w.copy_(rows[torch.randperm(H)].expand_as(w))
                else:
                    w.normal_()
            if self.decay is not None:
                self.decay.copy_(torch.rand(H, dtype=self.decay.dtype, device=self.decay.device)
                                 * (cfg.decay_max - cfg.decay_min) + cfg.decay_min)
            else:
                self.multiplier.copy_(torch.linspace(cfg.decay_min, cfg.decay_max, H,
                                                     dtype=torch.float64).view(1, H, 1))
            self.reset_kernel_norm()

    def reset_kernel_norm(self) -> None:
        """Z[c, h] = ||k_raw[c, h, :]||_2 from the current weights (float64), into kernel_norm.

        Called by :meth:`reset_parameters` and when a checkpoint whose
        ``kernel_norm_initialized`` is False is loaded.  Never called by forward.
        """
        cfg = self.config
        bk = _bk()
        H = cfg.d_model
        # channels a few at a time: the float64 raw kernel of all H rows at once would take
        # C' H K 8 bytes (2 GiB for H = 256, l_max = 2^20)
        step = max(1, 2 ** 22 // (cfg.kernel_rows * cfg.kernel_length))
        with torch.no_grad():
            multiplier = self.multiplier.detach().double().reshape(-1)
            for h0 in range(0, H, step):
                sl = slice(h0, min(h0 + step, H))
                kernels = tuple(w.detach()[:, sl].double() for w in self.kernel_list)
                decay = None if self.decay is None else self.decay.detach()[sl].double()
                m = multiplier[sl] if multiplier.numel() > 1 else multiplier
                Z = _ops.normaliser(bk, cfg, kernels, m, decay)            # (C', h)
                self.kernel_norm[:, sl].copy_(Z[..., None])
            self.kernel_norm_initialized.fill_(True)

    @classmethod
    def from_params(cls, params, **kwargs) -> "SGConv":
        """A module holding :class:`sgconv.Params` (any backend), e.g. from ``sgconv.init``.

        kwargs: the module's other options (transposed, dropout, device, dtype, ...).
        """
        from .._params import Params, to_state_dict
        if not isinstance(params, Params):
            raise TypeError(f"from_params expects sgconv.Params, got {type(params).__name__}")
        cfg = params.config
        mode = "cat_randn" + ("_nearest" if cfg.interpolation == "nearest" else "") \
            + ("_learnable" if cfg.learnable_decay else "")
        module = cls(cfg.d_model, cfg.l_max, channels=cfg.channels,
                     bidirectional=cfg.bidirectional, kernel_dim=cfg.kernel_dim,
                     n_scales=cfg.num_scales, decay_min=cfg.decay_min, decay_max=cfg.decay_max,
                     mode=mode, **kwargs)
        state = to_state_dict(params)
        if params.backend != "torch":
            from .._switch import backend as get_backend
            to_numpy = get_backend(params.backend).to_numpy
            state = {k: torch.as_tensor(np.asarray(to_numpy(v))) for k, v in state.items()}
        module.load_state_dict(state, strict=True)
        return module

    # --- forward ---------------------------------------------------------------------

    @property
    def _mixing(self) -> nn.Linear:
        """The output linear: (H, C*H), or (2H, C*H) before the GLU of postact='glu'."""
        return self.output_linear if self.postact is None else self.output_linear[0]

    def _arrays(self, cdtype, device) -> dict:
        H = self.config.d_model
        cast = lambda t: t.to(device=device, dtype=cdtype)  # noqa: E731
        multiplier = self.multiplier.reshape(-1)
        return {
            "kernels": tuple(cast(w) for w in self.kernel_list),
            "multiplier": cast(multiplier if multiplier.numel() == H else multiplier.expand(H)),
            "kernel_norm": cast(self.kernel_norm.reshape(self.config.kernel_rows, H)),
            "decay": None if self.decay is None else cast(self.decay),
            "D": cast(self.D),
            "out_weight": cast(self._mixing.weight),
            "out_bias": cast(self._mixing.bias),
        }

    def _kernel_tensors(self):
        out = [*self.kernel_list, self.multiplier, self.kernel_norm, self.D]
        return out if self.decay is None else out + [self.decay]

    def _prepared(self, arrays, L: int, cdtype, device):
        """The core's Prepared layer (kernel spectrum) from the cache, or made and stored;
        None when caching is off (see :meth:`_cached`)."""
        return self._cached((L, cdtype, device, self.block_size),
                            lambda: _ops.prepare(_bk(), self.config, arrays, L, self.block_size))

    def _cached(self, what: tuple, build):
        """``build()`` (computed without autograd) from the one-entry cache when ``what`` and
        the kernel's tensors are unchanged; None when caching is off.

        Caching is off under torch.compile and whenever autograd needs the kernel's
        gradient.  The key holds ``what`` and every tensor the spectrum depends on by
        (storage address, version counter): in-place updates (optimiser steps,
        load_state_dict) bump the version, replaced tensors change the address, and the
        cache keeps the old tensors alive so that an address cannot be reused while it is
        stored.  The layer's spectrum holds C * H * (n//2+1) complex numbers (about two
        length-L inputs of batch 1), built a chunk of channels at a time.
        """
        if torch.compiler.is_compiling():
            return None
        tensors = self._kernel_tensors()
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return None
        key = (what, torch.is_inference_mode_enabled(),
               tuple((t.data_ptr(), t._version) for t in tensors))
        cache = self._spectrum_cache
        if cache is not None and cache[0] == key:
            return cache[1]
        self._spectrum_cache = None           # free the stale entry before building anew
        with torch.no_grad():
            value = build()
        self._spectrum_cache = (key, value, tuple(t.detach() for t in tensors))
        return value

    def forward(self, u: torch.Tensor, return_kernel: bool = False):
        """The layer on u (B, H, L) (or (B, L, H) when not ``transposed``), same layout out.

        Returns the output, or (output, k) with ``return_kernel``, k (C', H, L) the kernel.
        """
        u = _checks.check_input(_bk(), u, self.config.d_model, self.transposed)
        cdtype, device = _compute_dtype(u.dtype), u.device
        L = u.shape[-1] if self.transposed else u.shape[1]
        arrays = self._arrays(cdtype, device)
        prepared = None if return_kernel else self._prepared(arrays, L, cdtype, device)
        out = run_layer(self.config, arrays if prepared is None else prepared, u,
                        transposed=self.transposed,
                        dropout=self.dropout_rate if self.training else 0.0, rng=None,
                        block_size=None if prepared is not None else self.block_size,
                        channel_chunk=self.channel_chunk, return_kernel=return_kernel)
        if self.postact is None:
            return out
        glu = lambda y: F.glu(y, dim=1 if self.transposed else -1)  # noqa: E731  2H -> H
        return (glu(out[0]), out[1]) if return_kernel else glu(out)

    # --- step-by-step decoding ------------------------------------------------------------

    def _decoding_check(self, what: str, u: torch.Tensor) -> None:
        """Decoding is inference: no dropout, no gradients (the state is updated in place)."""
        if self.config.bidirectional:
            _decode.check_decodable(self.config)
        if self.training and self.dropout_rate > 0:
            raise RuntimeError(f"SGConv.{what} runs the layer in evaluation: this layer is in "
                               f"training mode with dropout={self.dropout_rate}; call "
                               f"layer.eval() before decoding")
        if torch.is_grad_enabled() and (u.requires_grad
                                        or any(p.requires_grad for p in self.parameters())):
            raise RuntimeError(f"SGConv.{what} is for inference: gradients do not flow through "
                               f"the decoding state (updated in place). Call it under "
                               f"torch.no_grad() or torch.inference_mode()")

    def _decoder(self, cdtype, device) -> _decode.Decoder:
        """The core Decoder (run coefficients alpha, beta (P, C, H), float64 for a float32
        layer) for this dtype and device: cached, and rebuilt when a parameter or buffer
        changes (same key as the spectrum cache: storage address and version counter)."""
        tensors = [*self.parameters(), *self.buffers()]
        key = (cdtype, device, torch.is_inference_mode_enabled(),
               tuple((t.data_ptr(), t._version) for t in tensors))
        cache = self._decoder_cache
        if cache is not None and cache[0] == key:
            return cache[1]
        with torch.no_grad():
            dec = _decode.make_decoder(_bk(), self.config, self._arrays(cdtype, device))
        self._decoder_cache = (key, dec, tuple(t.detach() for t in tensors))
        return dec

    def init_state(self, batch_size: int, *, dtype=torch.float32, device=None) -> DecodeState:
        """The decoding state of ``batch_size`` streams before any input (t = 0).

        dtype: the input's dtype (float16/bfloat16 are computed in float32); device: where
        the streams' inputs will live (default: the layer's).  Tensors: history (K + 1, B, H)
        in the compute dtype, run sums (2, P - T, B, H) ([S; M] of the runs longer than one
        tap; float64 for float32 layers, compensated hi/lo float64 words for float64 ones),
        position ().
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1 (the number of streams), got "
                             f"{batch_size!r}")
        _decode.check_decodable(self.config)
        device = self.D.device if device is None else torch.device(device)
        return _decode.empty_state(_bk(), self._decoder(_compute_dtype(dtype), device),
                                   batch_size)

    def prefill(self, u: torch.Tensor):
        """Run a prompt through the layer and return ``(y, state)`` to decode on from.

        u: (B, H, T) (or (B, T, H) when not ``transposed``); y: the layer's output on it,
        same layout and dtype (computed by FFT, as ``forward``); state: what
        :meth:`step` needs to continue at t = T (a :class:`sgconv.DecodeState` of
        tensors on u's device).  Inference only: call under ``torch.no_grad()`` or
        ``torch.inference_mode()`` (RuntimeError otherwise), in evaluation mode when the
        layer has dropout.  Each of the B streams is independent; all advance together.
        """
        u = _checks.check_input(_bk(), u, self.config.d_model, self.transposed)
        self._decoding_check("prefill", u)
        cdtype, device = _compute_dtype(u.dtype), u.device
        dec = self._decoder(cdtype, device)
        y = self.forward(u)
        x = (u if self.transposed else u.transpose(-1, -2)).to(cdtype)   # (B, H, T)
        return y, _decode.prefill_state(_bk(), dec, x)

    def step(self, u_t: torch.Tensor, state: DecodeState):
        """One decoding step: ``(y_t, state)`` for the next input u_t (B, H) of each stream.

        y_t (B, H) equals column t of ``forward`` on the whole sequence so far (t = the
        inputs the state has consumed; the same for every layout).  Costs O(P) per channel,
        P = 2d + (N-2)(d+1) affine runs of the kernel (O(K) with 'learnable' decay, whose
        kernel is not piecewise affine: there it is an exact dot product with the cached
        kernel).  The state's input history is updated in place; use the state returned.
        Inference only, as :meth:`prefill`.
        """
        bk = _bk()
        if not isinstance(u_t, torch.Tensor):
            raise TypeError(f"u_t must be a torch.Tensor (B, H), got {type(u_t).__name__}")
        self._decoding_check("step", u_t)
        _checks.check_float(bk, "u_t", u_t)
        cdtype = _compute_dtype(u_t.dtype)
        _decode.check_state(bk, self.config, str(cdtype).removeprefix("torch."), state)
        _decode.check_step_input(bk, self.config, state, u_t)
        dec = self._decoder(cdtype, u_t.device)
        y, state = _decode.step(bk, dec, state, u_t.to(cdtype))     # (B, H), or (B, 2H)
        if self.postact == "glu":
            y = F.glu(y, dim=-1)                                      # as forward: 2H -> H
        return y.to(u_t.dtype), state

    # --- housekeeping ------------------------------------------------------------------

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_spectrum_cache"] = None       # pickling / deepcopy carry weights, not the cache
        state["_decoder_cache"] = None
        return state

    def _apply(self, *args, **kwargs):
        self._spectrum_cache = None           # .to(), .half(), .cuda(): drop the old device's
        self._decoder_cache = None
        return super()._apply(*args, **kwargs)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        flag = state_dict.get(prefix + "kernel_norm_initialized")
        # A released model saved before its first forward call never set Z; it is computed
        # from the loaded weights once the sub-kernels are in (see _finish_load).
        self._norm_pending = flag is not None and not bool(flag)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    @property
    def d_output(self) -> int:
        """The output width H (the released module's attribute)."""
        return self.config.d_model

    def extra_repr(self) -> str:
        cfg = self.config
        parts = [f"d_model={cfg.d_model}", f"l_max={cfg.l_max}", f"channels={cfg.channels}",
                 f"kernel_dim={cfg.kernel_dim}", f"n_scales={cfg.num_scales}",
                 f"kernel_length={cfg.kernel_length}"]
        if cfg.bidirectional:
            parts.append("bidirectional=True")
        if (cfg.decay_min, cfg.decay_max) != (2.0, 2.0):
            parts.append(f"decay=({cfg.decay_min}, {cfg.decay_max})")
        if self.mode != "cat_randn":
            parts.append(f"mode={self.mode!r}")
        if self.postact is not None:
            parts.append(f"postact={self.postact!r}")
        if not self.transposed:
            parts.append("transposed=False")
        if self.dropout_rate:
            parts.append(f"dropout={self.dropout_rate}")
        if self.block_size is not None:
            parts.append(f"block_size={self.block_size}")
        if self.channel_chunk is not None:
            parts.append(f"channel_chunk={self.channel_chunk}")
        return ", ".join(parts)


def _finish_load(module: SGConv, incompatible_keys) -> None:
    if module._norm_pending:
        module._norm_pending = False
        module.reset_kernel_norm()


class GConv(SGConv):
    """The released module's name, positional order and call convention, on :class:`SGConv`.

    ``GConv(d_model, d_state=64, l_max=None, channels=1, bidirectional=False,
    activation='gelu', postact=None, hyper_act=None, dropout=0.0, transposed=True,
    verbose=False, shift=False, linear=False, mode='cat_randn', **kernel_args)`` with
    kernel_args kernel_dim, n_scales, decay_min, decay_max, init_scale, lr (and this
    package's block_size, channel_chunk, device, dtype).

    ``y, _ = layer(u)``; ``y, k = layer(u, return_kernel=True)`` with k (C, H, L), or, when
    bidirectional, (C, H, 2L) laid out as the released module returns it: the causal half
    in [0, L) and the anti-causal half reversed in [L, 2L).
    """

    def __init__(self, d_model: int, d_state: int = 64, l_max: int | None = None,
                 channels: int = 1, bidirectional: bool = False, activation: str = "gelu", postact=None,
                 hyper_act=None, dropout: float = 0.0, transposed: bool = True,
                 verbose: bool = False, shift: bool = False, linear: bool = False,
                 mode: str = "cat_randn", **kernel_args):
        allowed = {"kernel_dim", "n_scales", "decay_min", "decay_max", "init_scale", "lr",
                   "block_size", "channel_chunk", "device", "dtype"}
        unknown = sorted(set(kernel_args) - allowed)
        if unknown:
            raise TypeError(f"GConv got unexpected keyword arguments {unknown}; it accepts the "
                            f"released keywords and kernel_args {sorted(allowed)}")
        super().__init__(d_model, l_max, channels=channels, bidirectional=bidirectional,
                         dropout=dropout, transposed=transposed, activation=activation,
                         mode=mode, d_state=d_state, postact=postact, hyper_act=hyper_act,
                         verbose=verbose, shift=shift, linear=linear, **kernel_args)
        self.h, self.n = self.config.d_model, d_state

    def forward(self, u: torch.Tensor, return_kernel: bool = False):
        """(y, None), or (y, k) with ``return_kernel``: the released module's return value."""
        if not return_kernel:
            return super().forward(u), None
        y, k = super().forward(u, return_kernel=True)                  # k (C', H, L)
        if self.config.bidirectional:
            C = self.config.channels
            k = torch.cat([k[:C], k[C:].flip(-1)], dim=-1)            # (C, H, 2L)
        return y, k

    @property
    def d_state(self) -> int:
        return self.h * self.n
