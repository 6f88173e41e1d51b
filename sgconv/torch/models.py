"""Blocks and sequence models built from SGConv layers: the authors' LRA backbone.

::

    import torch
    from sgconv.torch import SequenceModel, make_optimizer

    model = SequenceModel(vocab_size=18, d_output=10, d_model=128, n_layers=8, l_max=2048,
                          kernel_dim=1, bidirectional=True, norm="batch", prenorm=False)
    logits = model(tokens, mask)             # tokens (B, L) int, mask (B, L) bool -> (B, 10)
    optimizer = make_optimizer(model, lr=0.01, weight_decay=0.05)   # kernels: lr 0.001

A block (S4's ``SequenceResidualBlock``, as the released SGConv experiments use it)::

    x ---------------------------------------------(+)--> [norm if post-norm] --> out
      \\-- [norm if pre-norm] -- layer -- dropout --/

with the padded positions zeroed before every layer and left out of batch-norm
statistics, so padding never changes the valid part of a sequence.  Everything but the
layer is pointwise in time (in evaluation mode), so a causal model can later be run step
by step through its layers' decoding state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._model_config import ModelConfig
from ._module import SGConv
from .baselines import DenseConv, FeedForward, LocalConv, S4DConv, SelfAttention

__all__ = ["Norm", "ResidualBlock", "SGConvBlock", "SequenceModel", "build_blocks",
           "parameter_groups", "make_optimizer", "check_mask", "ModelConfig"]


def check_mask(mask, batch: int, length: int, device=None) -> torch.Tensor | None:
    """None, or a (B, L) bool tensor marking a non-empty valid prefix of every sequence.

    Padding goes at the end (it is what "the last valid position" and causal convolutions
    assume): a row like [1, 1, 0, 1] or an all-False row is an error.
    """
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor (B, L) of bools, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True on valid positions), got dtype "
                        f"{mask.dtype}; use mask.bool() or lengths_to_mask")
    if tuple(mask.shape) != (batch, length):
        raise ValueError(f"mask must have shape (B, L) = {(batch, length)} like the input, "
                         f"got {tuple(mask.shape)}")
    lengths = mask.sum(-1)                                                    # (B,)
    prefix = torch.arange(length, device=mask.device)[None, :] < lengths[:, None]
    if bool((lengths == 0).any()):
        raise ValueError("mask has a row with no valid position; every sequence needs at least "
                         "one (drop empty sequences from the batch)")
    if not bool(torch.equal(prefix, mask)):
        raise ValueError("mask must mark a prefix of each row (valid positions first, padding "
                         "at the end), e.g. arange(L) < lengths[:, None]")
    return mask if device is None else mask.to(device)


class Norm(nn.Module):
    """Batch or layer normalisation of (B, H, L) over the channels H, padding excluded.

    'batch': in training, per channel h, mean and (biased) variance over the valid
    positions of every sequence of the batch; the running statistics (momentum 0.1, the
    unbiased variance) are used in evaluation.  Without a mask this is exactly
    ``nn.BatchNorm1d(H)`` (same parameter and buffer names).  'layer': LayerNorm over H at
    each position (pointwise, so padding cannot leak).
    """

    def __init__(self, kind: str, d_model: int, *, eps: float = 1e-5, momentum: float = 0.1,
                 device=None, dtype=None):
        super().__init__()
        if kind not in ("batch", "layer"):
            raise ValueError(f"unknown norm {kind!r}; expected 'batch' or 'layer'")
        self.kind, self.eps, self.momentum = kind, float(eps), float(momentum)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.ones(d_model, **factory))
        self.bias = nn.Parameter(torch.zeros(d_model, **factory))
        if kind == "batch":
            self.register_buffer("running_mean", torch.zeros(d_model, **factory))
            self.register_buffer("running_var", torch.ones(d_model, **factory))
            self.register_buffer("num_batches_tracked",
                                 torch.zeros((), dtype=torch.long, device=device))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, H, L), mask (B, L) bool or None -> (B, H, L)."""
        if self.kind == "layer":
            y = F.layer_norm(x.transpose(1, 2), x.shape[1:2], self.weight, self.bias, self.eps)
            return y.transpose(1, 2)
        if not self.training or mask is None:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                self.training, self.momentum, self.eps)
        m = mask[:, None, :].to(x.dtype)                                      # (B, 1, L)
        count = m.sum()
        mean = (x * m).sum((0, 2)) / count                                    # (H,)
        var = (((x - mean[:, None]) ** 2) * m).sum((0, 2)) / count            # (H,) biased
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            unbiased = var * (count / (count - 1).clamp(min=1))
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(unbiased.detach(), self.momentum)
        scale = self.weight * torch.rsqrt(var + self.eps)                     # (H,)
        return (x - mean[:, None]) * scale[:, None] + self.bias[:, None]

    def extra_repr(self) -> str:
        return f"{self.kind}, {self.weight.shape[0]}, eps={self.eps}"


class ResidualBlock(nn.Module):
    """norm (pre or post) + layer + dropout + residual around any layer (B, H, L) -> (B, H, L).

    ``layer`` may take the mask (``layer.uses_mask``, e.g. attention); convolutions don't
    need it: their input is zero on the padding, so (causal or not) the padding adds
    nothing to the valid positions.
    """

    def __init__(self, layer: nn.Module, d_model: int, *, norm: str = "batch",
                 prenorm: bool = False, dropout: float = 0.0):
        super().__init__()
        self.layer = layer
        self.norm = Norm(norm, d_model)
        self.prenorm = bool(prenorm)
        self.dropout_rate = float(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, H, L), mask (B, L) bool (valid prefix) or None -> (B, H, L)."""
        z = self.norm(x, mask) if self.prenorm else x
        if mask is not None:
            z = z.masked_fill(~mask[:, None, :], 0.0)                       # padding -> 0
        y = self.layer(z, mask) if getattr(self.layer, "uses_mask", False) else self.layer(z)
        x = x + F.dropout(y, self.dropout_rate, self.training)
        return x if self.prenorm else self.norm(x, mask)


class SGConvBlock(ResidualBlock):
    """The residual block of the authors' LRA backbone around an SGConv layer.

    Args: d_model (H), l_max; norm ('batch' or 'layer'), prenorm (False: post-norm, the
    LRA setting), dropout (inside the layer after its GELU, and on the residual branch);
    postact (None or 'glu': the output linear C*H -> 2H then GLU); and SGConv's keywords
    (channels, bidirectional, kernel_dim, n_scales, decay_min, decay_max, mode, lr,
    channel_chunk, ...), passed to :class:`sgconv.torch.SGConv`.
    """

    def __init__(self, d_model: int, l_max: int, *, norm: str = "batch", prenorm: bool = False,
                 dropout: float = 0.0, postact: str | None = "glu", **sgconv_options):
        layer = SGConv(d_model, l_max, dropout=dropout, postact=postact, transposed=True,
                       **sgconv_options)
        super().__init__(layer, d_model, norm=norm, prenorm=prenorm, dropout=dropout)


def _sinusoids(length: int, d_model: int, device, dtype) -> torch.Tensor:
    """Fixed sinusoidal positions (Vaswani et al.): (H, L)."""
    t = torch.arange(length, device=device, dtype=torch.float64)[None, :]      # (1, L)
    i = torch.arange(d_model // 2, device=device, dtype=torch.float64)[:, None]
    angle = t / (10000.0 ** (2 * i / d_model))                                # (H/2, L)
    pe = torch.zeros(d_model, length, device=device, dtype=torch.float64)
    pe[0:2 * (d_model // 2):2] = torch.sin(angle)
    pe[1:2 * (d_model // 2):2] = torch.cos(angle)
    return pe.to(dtype)


def build_blocks(cfg: ModelConfig) -> list[nn.Module]:
    """The residual block(s) of one layer of the model ``cfg`` describes: an SGConvBlock, a
    baseline layer in the same block, or ('attention') an attention block and a
    feed-forward block.  Each maps (B, H, L) -> (B, H, L) and takes ``(x, mask)``."""
    H = cfg.d_model
    block = dict(norm=cfg.norm, prenorm=cfg.prenorm, dropout=cfg.dropout)
    conv = dict(channels=cfg.channels, bidirectional=cfg.bidirectional,
                postact=cfg.postact, dropout=cfg.dropout)
    if cfg.layer == "sgconv":
        return [SGConvBlock(H, cfg.l_max, kernel_dim=cfg.kernel_dim, n_scales=cfg.n_scales,
                            decay_min=cfg.decay_min, decay_max=cfg.decay_max,
                            channels=cfg.channels, bidirectional=cfg.bidirectional,
                            postact=cfg.postact, **block)]
    if cfg.layer == "local":
        return [ResidualBlock(LocalConv(H, cfg.local_width, **conv), H, **block)]
    if cfg.layer == "dense":
        return [ResidualBlock(DenseConv(H, cfg.l_max, **conv), H, **block)]
    if cfg.layer == "s4d":
        return [ResidualBlock(S4DConv(H, cfg.d_state, **conv), H, **block)]
    attention = SelfAttention(H, cfg.n_heads, causal=not cfg.bidirectional,
                              dropout=cfg.dropout)
    return [ResidualBlock(attention, H, **block),
            ResidualBlock(FeedForward(H, cfg.ffn_mult, dropout=cfg.dropout), H, **block)]


class SequenceModel(nn.Module):
    """Encoder, n residual blocks, final norm, pooled decoder: (B, L) -> (B, d_output).

    Built from a :class:`sgconv.ModelConfig` (or its fields as keywords)::

        x (B, L) ids  -> Embedding      -> (B, H, L)        [+ sinusoids for attention]
        x (B, L, d)   -> Linear(d -> H) -> (B, H, L)
        n_layers x block (SGConvBlock, or the baseline ``layer`` in the same block)
        final norm (pre-norm models only, as in S4's backbone)
        pool: mean over the valid positions, or the last valid one -> (B, H)
        decoder: Linear(H -> d_output); retrieval: MLP on [e1, e2, e1*e2, e1-e2]

    ``positions(x)``: the decoder at every position (B, L, d_output); ``generate(prompt,
    steps)``: exact step-by-step generation for a causal SGConv language model.

    ``forward(x, mask=None, x2=None, mask2=None)``: mask (B, L) bool marks the valid
    prefix of each sequence (None: all valid); x2/mask2 the second sequence of each pair
    when ``retrieval``.  Padding never changes the result.  The 'attention' baseline is a
    Transformer: each layer is an attention block and a feed-forward block.
    """

    def __init__(self, config: ModelConfig | None = None, **fields):
        super().__init__()
        if config is None:
            config = ModelConfig(**fields)
        elif fields:
            config = config.replace(**fields)
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a sgconv.ModelConfig, got {type(config).__name__}")
        self.config = cfg = config
        H = cfg.d_model
        if cfg.vocab_size is not None:
            self.encoder = nn.Embedding(cfg.vocab_size, H)
        else:
            self.encoder = nn.Linear(cfg.d_input, H)
        self.blocks = nn.ModuleList(
            block for _ in range(cfg.n_layers) for block in build_blocks(cfg))
        self.norm = Norm(cfg.norm, H) if cfg.prenorm else None
        if cfg.retrieval:
            self.decoder = nn.Sequential(nn.Linear(4 * H, H), nn.GELU(),
                                         nn.Linear(H, cfg.d_output))
        else:
            self.decoder = nn.Linear(H, cfg.d_output)

    # --- the pieces ---------------------------------------------------------------------

    def _check_input(self, x, mask, name: str = "x"):
        cfg = self.config
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if cfg.vocab_size is not None:
            if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
                raise TypeError(f"{name} must hold integer token ids (B, L) for a model with "
                                f"vocab_size={cfg.vocab_size}, got dtype {x.dtype}")
            if x.ndim != 2:
                raise ValueError(f"{name} must be token ids of shape (B, L), got "
                                 f"{tuple(x.shape)}")
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= cfg.vocab_size):
                raise ValueError(f"{name} holds token ids in [{int(x.min())}, {int(x.max())}], "
                                 f"outside [0, vocab_size={cfg.vocab_size})")
        else:
            if not x.dtype.is_floating_point:
                raise TypeError(f"{name} must be real-valued (B, L, d_input={cfg.d_input}), got "
                                f"dtype {x.dtype}")
            if x.ndim != 3 or x.shape[-1] != cfg.d_input:
                raise ValueError(f"{name} must have shape (B, L, d_input={cfg.d_input}), got "
                                 f"{tuple(x.shape)}")
        if x.shape[1] == 0:
            raise ValueError(f"{name} has length L=0; expected L >= 1")
        return check_mask(mask, x.shape[0], x.shape[1], x.device)

    def features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The backbone: x (B, L) ids or (B, L, d_input) -> (B, H, L), before pooling."""
        mask = self._check_input(x, mask)
        h = self.encoder(x).transpose(1, 2)                                   # (B, H, L)
        if self.config.layer == "attention":
            h = h + _sinusoids(h.shape[-1], h.shape[1], h.device, h.dtype)
        for block in self.blocks:
            h = block(h, mask)                                                # (B, H, L)
        if self.norm is not None:
            h = self.norm(h, mask)
        return h

    def pool(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, H, L) -> (B, H): mean over the valid positions, or the last valid one."""
        if self.config.pool == "mean":
            if mask is None:
                return h.mean(-1)
            m = mask[:, None, :].to(h.dtype)                                  # (B, 1, L)
            return (h * m).sum(-1) / m.sum(-1)
        if mask is None:
            return h[..., -1]
        last = mask.sum(-1) - 1                                               # (B,)
        return h[torch.arange(h.shape[0], device=h.device), :, last]

    def encode(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x -> pooled features (B, H)."""
        return self.pool(self.features(x, mask), mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                x2: torch.Tensor | None = None, mask2: torch.Tensor | None = None
                ) -> torch.Tensor:
        """(B, d_output) logits (or regression outputs) for x (and x2 when retrieval)."""
        if not self.config.retrieval:
            if x2 is not None or mask2 is not None:
                raise ValueError("x2/mask2 are for retrieval models (ModelConfig.retrieval=True)")
            return self.decoder(self.encode(x, mask))
        if x2 is None:
            raise ValueError("a retrieval model takes a pair: model(x, mask, x2, mask2)")
        if x2.shape[0] != x.shape[0]:
            raise ValueError(f"x and x2 must have the same batch size, got {x.shape[0]} and "
                             f"{x2.shape[0]}")
        e1 = self.encode(x, mask)
        self._check_input(x2, mask2, "x2")
        e2 = self.encode(x2, mask2)
        return self.decoder(torch.cat([e1, e2, e1 * e2, e1 - e2], dim=-1))

    def positions(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder at every position, not pooled: (B, L, d_output).

        For a causal language model (``bidirectional=False``, ``d_output = vocab_size``) these
        are the next-token logits: train with cross-entropy between ``positions(x)[:, :-1]``
        and ``x[:, 1:]``, then :meth:`generate`.
        """
        if self.config.retrieval:
            raise ValueError("positions() is for single-sequence models; a retrieval model "
                             "compares two pooled sequences")
        return self.decoder(self.features(x, mask).transpose(1, 2))

    def _check_generate(self, prompt, steps) -> None:
        cfg = self.config
        wanted = []
        if cfg.layer != "sgconv":
            wanted.append(f"layer='sgconv' (this model's layer is {cfg.layer!r})")
        if cfg.bidirectional:
            wanted.append("bidirectional=False (a bidirectional layer reads the future)")
        if cfg.vocab_size is None or cfg.d_output != cfg.vocab_size:
            wanted.append(f"token ids in and next-token logits out (vocab_size = d_output; "
                          f"this model has vocab_size={cfg.vocab_size}, "
                          f"d_output={cfg.d_output})")
        if cfg.retrieval:
            wanted.append("retrieval=False")
        if wanted:
            raise ValueError("generate() needs a causal SGConv language model: "
                             + "; ".join(wanted))
        if self.training:
            raise RuntimeError("generate() decodes in evaluation mode (batch norm's running "
                               "statistics, no dropout): call model.eval() first")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an int >= 0, got {steps!r}")
        self._check_input(prompt, None, "prompt")

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, steps: int, *, temperature: float = 1.0,
                 generator: torch.Generator | None = None, return_logits: bool = False):
        """Continue each prompt by ``steps`` tokens, decoding step by step.

        prompt (B, T) token ids -> (B, T + steps).  The prompt runs through the model once
        (each SGConv layer's :meth:`~sgconv.torch.SGConv.prefill`, by FFT); then every new
        token costs one :meth:`~sgconv.torch.SGConv.step` per layer, O(d log l_max) per
        channel, whatever the length so far.  The logits of every step equal
        :meth:`positions` on the whole sequence (exact decoding, not an approximation).
        Everything between the layers is pointwise in time in evaluation mode (batch norm
        uses its running statistics), so it is applied to the one new position.

        temperature: 0 picks the most likely token (greedy); else samples from
        softmax(logits / temperature) with ``generator``.  return_logits: also return the
        (B, steps, vocab_size) logits each new token was drawn from.  Needs a causal SGConv
        language model (``layer='sgconv'``, ``bidirectional=False``, ``d_output =
        vocab_size``) in evaluation mode.
        """
        self._check_generate(prompt, steps)
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or \
                not temperature >= 0:
            raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")

        def pointwise(norm, h):                                   # (B, H) through a Norm
            return norm(h[..., None])[..., 0]

        h = self.encoder(prompt).transpose(1, 2)                              # (B, H, T)
        states = []
        for block in self.blocks:
            z = block.norm(h) if block.prenorm else h
            y, state = block.layer.prefill(z)
            states.append(state)
            h = h + y
            if not block.prenorm:
                h = block.norm(h)
        if self.norm is not None:
            h = self.norm(h)
        logits = self.decoder(h[..., -1])                                     # (B, V)
        tokens, seen = [], []
        for _ in range(steps):
            seen.append(logits)
            if temperature == 0:
                token = logits.argmax(-1)
            else:
                probs = torch.softmax(logits.double() / temperature, dim=-1)
                token = torch.multinomial(probs, 1, generator=generator)[:, 0]
            tokens.append(token)
            h = self.encoder(token)                                           # (B, H)
            for i, block in enumerate(self.blocks):
                z = pointwise(block.norm, h) if block.prenorm else h
                y, states[i] = block.layer.step(z, states[i])
                h = h + y
                if not block.prenorm:
                    h = pointwise(block.norm, h)
            if self.norm is not None:
                h = pointwise(self.norm, h)
            logits = self.decoder(h)
        out = torch.cat([prompt, torch.stack(tokens, 1).to(prompt.dtype)], 1) if tokens \
            else prompt.clone()
        if not return_logits:
            return out
        V = self.config.vocab_size
        return out, (torch.stack(seen, 1) if seen else prompt.new_zeros((prompt.shape[0], 0, V),
                                                                         dtype=logits.dtype))

    def num_parameters(self) -> int:
        """Trained parameters (SGConv's Z and decay multiplier are buffers, not counted)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


# --- optimiser --------------------------------------------------------------------------

def _is_no_decay(name: str, p: nn.Parameter, norms: set[int]) -> bool:
    return id(p) in norms or name.endswith(".bias") or name == "bias"


def parameter_groups(model: nn.Module, *, lr: float = 0.01, weight_decay: float = 0.05,
                     kernel_lr: float | None = None,
                     kernel_weight_decay: float | None = None) -> list[dict]:
    """Parameter groups for torch.optim: kernels on their own, as the authors trained them.

    - kernel weights: every parameter that carries an ``_optim`` dict (the released
      module's convention, which :class:`sgconv.torch.SGConv` keeps: its sub-kernels and
      learnable decay; the baselines' kernels too).  Learning rate ``kernel_lr``, or when
      None the parameter's own ``_optim['lr']`` (0.001 for SGConv's sub-kernels).
      Weight decay ``kernel_weight_decay``, or when None the parameter's own
      ``_optim['weight_decay']`` if it has one (S4D's A and dt: 0, as S4 trains them),
      else the global ``weight_decay`` (SGConv's kernels keep it, as the authors' code does).
    - biases and normalisation weights: ``lr``, no weight decay.
    - everything else: ``lr`` and ``weight_decay``.

    Returns a list of dicts for e.g. ``torch.optim.AdamW(groups)``; empty groups are left out.
    """
    for name, value in (("lr", lr), ("weight_decay", weight_decay)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 \
                or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    norms = {id(p) for m in model.modules() if isinstance(m, (Norm, nn.LayerNorm,
                                                               nn.BatchNorm1d))
             for p in m.parameters(recurse=False)}
    plain, no_decay = [], []
    kernels: dict[tuple, list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        optim = getattr(p, "_optim", None)
        if optim is not None:
            k_lr = kernel_lr if kernel_lr is not None else optim.get("lr", lr)
            k_wd = kernel_weight_decay if kernel_weight_decay is not None else \
                optim.get("weight_decay", weight_decay)
            kernels.setdefault((float(k_lr), float(k_wd)), []).append(p)
        elif _is_no_decay(name, p, norms):
            no_decay.append(p)
        else:
            plain.append(p)
    groups = [{"params": plain, "lr": lr, "weight_decay": weight_decay, "name": "weights"},
              {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": "biases and norms"}]
    for (k_lr, k_wd), params in kernels.items():
        groups.append({"params": params, "lr": k_lr, "weight_decay": k_wd, "name": "kernels"})
    return [g for g in groups if g["params"]]


def make_optimizer(model: nn.Module, *, lr: float = 0.01, weight_decay: float = 0.05,
                   kernel_lr: float | None = None, kernel_weight_decay: float | None = None,
                   optimizer=torch.optim.AdamW, **optimizer_options) -> torch.optim.Optimizer:
    """``optimizer(parameter_groups(model, ...), **optimizer_options)`` (AdamW by default)."""
    groups = parameter_groups(model, lr=lr, weight_decay=weight_decay, kernel_lr=kernel_lr,
                              kernel_weight_decay=kernel_weight_decay)
    return optimizer(groups, lr=lr, **optimizer_options)
