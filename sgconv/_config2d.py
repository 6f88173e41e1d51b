"""The static configuration of one two-dimensional SGConv layer (shared/SPEC.md,
"Two-dimensional SGConv")."""

from __future__ import annotations

import dataclasses
import numbers

from ._config import SGConvConfig

__all__ = ["SGConv2dConfig"]


def _pair(name: str, value, allow_none: bool):
    """An int or None for both axes, or a pair (x, y) of them, as a tuple of two."""
    if value is None and allow_none:
        return (None, None)
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"SGConv2dConfig.{name} must be one value for both axes or a pair "
                             f"(x, y), got {len(value)} values: {tuple(value)!r}")
        return tuple(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        what = "an int, a pair (x, y) of ints" + (" or None" if allow_none else "")
        raise TypeError(f"SGConv2dConfig.{name} must be {what}, got {value!r} "
                        f"({type(value).__name__})")
    return (value, value)


@dataclasses.dataclass(frozen=True)
class SGConv2dConfig:
    """Sizes and options of a 2D SGConv layer (frozen and hashable: static under JAX).

    Each kernel row holds two bidirectional 1D SGConv kernels, one along x (the first
    spatial axis, extent X) and one along y (extent Y), each with its own sub-kernels,
    decay multiplier and normaliser Z; the 2D kernel is their outer product (SPEC).

    Attributes (SPEC's symbols in brackets):
        d_model (H): width; each input channel has its own kernels.
        sizes (X, Y): the largest image extents the kernels are built for, the l_max of
            each axis; one int means a square (X = Y).
        channels (C): kernels per input channel; the layer mixes C*H -> H.
        kernel_dim (d): length of every learned sub-kernel (default 64, as in 1D; small
            feature maps get several scales only with a smaller d, e.g. 8 or 16).
        n_scales (N_x, N_y): scales per axis; None derives each from its size as in 1D,
            1 + ceil(log2(size / d)), at least 1; one int is used for both axes.
        decay_min, decay_max, interpolation, learnable_decay: as in
            :class:`SGConvConfig`, for both axes.
    """

    d_model: int
    sizes: tuple
    channels: int = 1
    kernel_dim: int = 64
    n_scales: tuple | int | None = None
    decay_min: float = 2.0
    decay_max: float = 2.0
    interpolation: str = "linear"
    learnable_decay: bool = False

    def __post_init__(self):
        set_ = object.__setattr__
        sizes = _pair("sizes", self.sizes, allow_none=False)
        scales = _pair("n_scales", self.n_scales, allow_none=True)
        set_(self, "sizes", tuple(int(s) if isinstance(s, numbers.Integral)
                                  and not isinstance(s, bool) else s for s in sizes))
        set_(self, "n_scales", None if scales == (None, None) else scales)
        # Every field is checked by the axes' own configurations (same messages as 1D).
        try:
            axes = tuple(self._axis(i) for i in range(2))
        except (TypeError, ValueError) as exc:
            raise type(exc)(str(exc).replace("SGConvConfig.l_max", "SGConv2dConfig.sizes")
                            .replace("SGConvConfig.", "SGConv2dConfig.")) from None
        set_(self, "sizes", tuple(a.l_max for a in axes))
        if self.n_scales is not None:
            set_(self, "n_scales", tuple(a.n_scales for a in axes))
        set_(self, "d_model", axes[0].d_model)
        set_(self, "channels", axes[0].channels)
        set_(self, "kernel_dim", axes[0].kernel_dim)
        set_(self, "decay_min", axes[0].decay_min)
        set_(self, "decay_max", axes[0].decay_max)

    def _axis(self, i: int) -> SGConvConfig:
        n = None if self.n_scales is None else self.n_scales[i]
        return SGConvConfig(d_model=self.d_model, l_max=self.sizes[i], channels=self.channels,
                            kernel_dim=self.kernel_dim, n_scales=n, decay_min=self.decay_min,
                            decay_max=self.decay_max, bidirectional=True,
                            interpolation=self.interpolation,
                            learnable_decay=self.learnable_decay)

    # Derived sizes ---------------------------------------------------------------------------

    @property
    def axes(self) -> tuple[SGConvConfig, SGConvConfig]:
        """The 1D configurations of the x and y kernels (bidirectional, l_max = X and Y)."""
        return (self._axis(0), self._axis(1))

    @property
    def num_scales(self) -> tuple[int, int]:
        """(N_x, N_y)."""
        return tuple(a.num_scales for a in self.axes)

    @property
    def kernel_lengths(self) -> tuple[int, int]:
        """(K_x, K_y) = d * 2**(N-1) per axis: each half's reach along that axis."""
        return tuple(a.kernel_length for a in self.axes)

    @property
    def kernel_rows(self) -> int:
        """C' = 2C: every axis kernel is bidirectional."""
        return 2 * self.channels

    @property
    def num_kernel_parameters(self) -> int:
        """(N_x + N_y) * 2C * H * d sub-kernel weights: O(d log X), not X * Y."""
        return sum(a.num_kernel_parameters for a in self.axes)

    @property
    def num_parameters(self) -> int:
        """All trained parameters: sub-kernels, D, the learnable decays, the mixing linear."""
        H, C = self.d_model, self.channels
        decay = 2 * H if self.learnable_decay else 0
        return self.num_kernel_parameters + C * H + decay + H * C * H + H
