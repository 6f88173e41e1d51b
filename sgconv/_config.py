"""The static configuration of one SGConv layer: sizes, scales and decay."""

from __future__ import annotations

import dataclasses
import math
import numbers

__all__ = ["SGConvConfig"]

_INTERPOLATIONS = ("linear", "nearest")


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"SGConvConfig.{name} must be an int >= {minimum}, got {value!r} "
                        f"({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"SGConvConfig.{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"SGConvConfig.{name} must be a positive real number, got {value!r} "
                        f"({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"SGConvConfig.{name} must be finite and > 0, got {value}")
    return value


@dataclasses.dataclass(frozen=True)
class SGConvConfig:
    """Sizes and options of an SGConv layer (frozen and hashable, so JAX can treat it as static).

    Attributes (SPEC's symbols in brackets):
        d_model (H): model width; each of the H input channels has its own kernels.
        l_max: the longest sequence the kernel is built for; with N derived from it
            the kernel has length K = kernel_dim * 2**(N-1) >= l_max.
        channels (C): kernels per input channel ("heads"); the layer mixes C*H -> H.
        kernel_dim (d): length of every learned sub-kernel (default 64).
        n_scales (N): number of scales; None derives 1 + ceil(log2(l_max / d)), at least 1.
        decay_min, decay_max: the decay multiplier m[h] = linspace(decay_min, decay_max, H);
            scale i is weighted by m**(N-1-i).  With ``learnable_decay`` they bound the
            uniform draw of the trained decay exponent instead.
        bidirectional: add an anti-causal half (C' = 2C kernel rows).
        interpolation: "linear" (the paper's, half-pixel centres) or "nearest".
        learnable_decay: the released module's "learnable" mode: multiplier 1 and
            k_raw[..., t] *= (t+1)**(-decay[h]) with a trained decay of shape (H,).
    """

    d_model: int
    l_max: int
    channels: int = 1
    kernel_dim: int = 64
    n_scales: int | None = None
    decay_min: float = 2.0
    decay_max: float = 2.0
    bidirectional: bool = False
    interpolation: str = "linear"
    learnable_decay: bool = False

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "d_model", _check_int("d_model", self.d_model))
        set_(self, "l_max", _check_int("l_max", self.l_max))
        set_(self, "channels", _check_int("channels", self.channels))
        set_(self, "kernel_dim", _check_int("kernel_dim", self.kernel_dim))
        if self.n_scales is not None:
            set_(self, "n_scales", _check_int("n_scales", self.n_scales))
            if self.n_scales > 40:
                raise ValueError(f"SGConvConfig.n_scales={self.n_scales} gives a kernel of "
                                 f"length kernel_dim * 2**{self.n_scales - 1}; expected at most 40")
        set_(self, "decay_min", _check_positive_float("decay_min", self.decay_min))
        set_(self, "decay_max", _check_positive_float("decay_max", self.decay_max))
        if self.decay_min > self.decay_max:
            raise ValueError(f"SGConvConfig expects decay_min <= decay_max, got "
                             f"decay_min={self.decay_min} > decay_max={self.decay_max}")
        for flag in ("bidirectional", "learnable_decay"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"SGConvConfig.{flag} must be a bool, got {getattr(self, flag)!r}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"SGConvConfig.interpolation must be one of {_INTERPOLATIONS}, "
                             f"got {self.interpolation!r}")

    # Derived sizes -------------------------------------------------------------------------

    @property
    def num_scales(self) -> int:
        """N: ``n_scales`` if given, else 1 + ceil(log2(l_max / d)), and never below 1."""
        if self.n_scales is not None:
            return self.n_scales
        # Integer arithmetic avoids log2 rounding at exact powers of two.
        ratio_ceil = -(-self.l_max // self.kernel_dim)
        return max(1, 1 + (ratio_ceil - 1).bit_length())

    @property
    def kernel_rows(self) -> int:
        """C': kernel rows, C causal or 2C when bidirectional."""
        return 2 * self.channels if self.bidirectional else self.channels

    @property
    def scale_factors(self) -> tuple[int, ...]:
        """s_i = 2**max(0, i-1): the stretch of scale i."""
        return tuple(2 ** max(0, i - 1) for i in range(self.num_scales))

    @property
    def scale_lengths(self) -> tuple[int, ...]:
        """d * s_i: the length of scale i inside the concatenated kernel."""
        return tuple(self.kernel_dim * s for s in self.scale_factors)

    @property
    def kernel_length(self) -> int:
        """K = d * 2**(N-1): the length of the full concatenated kernel."""
        return sum(self.scale_lengths)

    @property
    def num_kernel_parameters(self) -> int:
        """N * C' * H * d: the learned sub-kernel weights (sub-linear in l_max)."""
        return self.num_scales * self.kernel_rows * self.d_model * self.kernel_dim

    @property
    def num_parameters(self) -> int:
        """All trained parameters: sub-kernels, D, the learnable decay, and the mixing linear."""
        H, C = self.d_model, self.channels
        decay = H if self.learnable_decay else 0
        return self.num_kernel_parameters + C * H + decay + H * C * H + H
