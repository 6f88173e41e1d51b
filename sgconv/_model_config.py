"""The configuration of a sequence model built from SGConv blocks (or a baseline layer).

Framework-free: the PyTorch model (:class:`sgconv.torch.SequenceModel`)
and the JAX model (:mod:`sgconv.jax.models`) are both built from one :class:`ModelConfig`,
so the same configuration and weights give the same outputs on either framework.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

from ._checks import check_int

__all__ = ["ModelConfig", "LAYERS", "NORMS", "POOLS"]

#: The sequence-mixing layers a model can be built from: SGConv, and the baselines of
#: :mod:`sgconv.torch.baselines` (a local depthwise convolution, S4D's diagonal state-space
#: kernel, a free dense kernel with one weight per lag, self-attention).
LAYERS = ("sgconv", "local", "s4d", "dense", "attention")
NORMS = ("batch", "layer")
POOLS = ("mean", "last")
POSTACTS = (None, "glu")


def _int(name: str, value, minimum: int = 1) -> int:
    return check_int(f"ModelConfig.{name}", value, minimum)


def _choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"ModelConfig.{name}={value!r} is not known; expected one of "
                         f"{', '.join(repr(c) for c in choices)}")
    return value


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"ModelConfig.{name} must be a finite number > 0, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A sequence model: encoder, ``n_layers`` residual blocks, final norm, decoder.

    Backbone (the authors' LRA backbone, S4's ``SequenceModel``):
        d_model (H): width.  n_layers: residual blocks.  l_max: the longest sequence
        (SGConv's kernel length and the dense kernel's size follow it).
        layer: 'sgconv' (default), or a baseline: 'local', 's4d', 'dense', 'attention'.
        norm: 'batch' (statistics over the valid positions only) or 'layer'.
        prenorm: normalise before the layer (and once more after the last block), or
            after the residual sum (post-norm, the authors' LRA setting).
        dropout: the rate inside each layer (after its GELU) and on each residual branch.

    The SGConv layer (shared/SPEC.md; the released module's keywords):
        channels (C), bidirectional, kernel_dim (d), n_scales (N; None: from l_max and
        d), decay_min, decay_max (the decay multiplier), postact (None, or 'glu': the
        output linear maps C*H -> 2H and a GLU halves it, as in the LRA configs).
        channels, bidirectional and postact apply to the convolutional baselines too.

    Baselines:
        local_width: taps of the local convolution per direction (it reaches
            local_width - 1 steps back, and local_width ahead when bidirectional).
        d_state: the S4D state size N (N/2 complex conjugate pairs).
        n_heads, ffn_mult: self-attention heads, and the width multiple of the
            feed-forward block that follows each attention block.

    Encoder and decoder:
        vocab_size: token ids in [0, vocab_size) are embedded; or d_input: real-valued
            inputs (B, L, d_input) are mapped by a linear layer.  Exactly one is given.
        d_output: classes (or 1 for regression).
        pool: 'mean' over the valid part of each sequence, or 'last' valid position.
        retrieval: the input is a pair of sequences, each encoded and pooled, and the
            head reads [e1, e2, e1 * e2, e1 - e2] (LRA's retrieval task).
    """

    d_model: int = 128
    n_layers: int = 4
    l_max: int = 1024
    layer: str = "sgconv"
    norm: str = "batch"
    prenorm: bool = False
    dropout: float = 0.0
    channels: int = 1
    bidirectional: bool = False
    kernel_dim: int = 64
    n_scales: int | None = None
    decay_min: float = 2.0
    decay_max: float = 2.0
    postact: str | None = "glu"
    local_width: int = 64
    d_state: int = 64
    n_heads: int = 4
    ffn_mult: int = 2
    vocab_size: int | None = None
    d_input: int | None = None
    d_output: int = 10
    pool: str = "mean"
    retrieval: bool = False

    def __post_init__(self):
        for name in ("d_model", "n_layers", "l_max", "channels", "kernel_dim", "local_width",
                     "d_output", "n_heads", "ffn_mult"):
            _int(name, getattr(self, name))
        _int("d_state", self.d_state, 2)
        if self.d_state % 2:
            raise ValueError(f"ModelConfig.d_state must be even (S4D keeps N/2 complex "
                             f"conjugate pairs), got {self.d_state}")
        if self.n_scales is not None:
            _int("n_scales", self.n_scales)
        _choice("layer", self.layer, LAYERS)
        _choice("norm", self.norm, NORMS)
        _choice("pool", self.pool, POOLS)
        _choice("postact", self.postact, POSTACTS)
        for name in ("prenorm", "bidirectional", "retrieval"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"ModelConfig.{name} must be a bool, got "
                                f"{getattr(self, name)!r}")
        rate = self.dropout
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) \
                or not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"ModelConfig.dropout must be a rate in [0, 1), got {rate!r}")
        _positive("decay_min", self.decay_min)
        _positive("decay_max", self.decay_max)
        if self.decay_min > self.decay_max:
            raise ValueError(f"ModelConfig.decay_min ({self.decay_min}) must be <= decay_max "
                             f"({self.decay_max})")
        if (self.vocab_size is None) == (self.d_input is None):
            raise ValueError(f"ModelConfig needs exactly one of vocab_size (token inputs) and "
                             f"d_input (real-valued inputs); got vocab_size={self.vocab_size}, "
                             f"d_input={self.d_input}")
        if self.vocab_size is not None:
            _int("vocab_size", self.vocab_size)
        if self.d_input is not None:
            _int("d_input", self.d_input)
        if self.layer == "attention" and self.d_model % self.n_heads:
            raise ValueError(f"ModelConfig: d_model={self.d_model} must be a multiple of "
                             f"n_heads={self.n_heads} for the attention baseline")

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
