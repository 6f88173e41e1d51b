"""Three small ConvNeXt-style classifiers that differ only in their spatial mixing.

    stem: Conv2d(1, H, 3, padding=1)                          (B, H, 32, 32)
    4 x block: x + MLP(LayerNorm(spatial(x)))                 isotropic, full resolution
    head: mean over pixels -> LayerNorm -> Linear(H, 2)

A block is ConvNeXt's (Liu et al. 2022): a depthwise spatial operator, LayerNorm over
channels, a pointwise MLP (H -> 2H -> H, GELU), a residual.  ``spatial`` is

* ``conv7x7``: ``nn.Conv2d(H, H, 7, padding=3, groups=H)``, ConvNeXt's own (local: four
  blocks and the stem see 27 x 27 pixels);
* ``sgconv2d``: ``sgconv.torch.SGConv2d(H, (32, 32), kernel_dim=8)`` in its place (global:
  every pixel sees the whole image from the first block);
* ``sgconv1d``: the image flattened in raster order to a sequence of 1024 pixels and a
  bidirectional 1D ``sgconv.torch.SGConv(H, 1024, kernel_dim=16)`` over it (global too,
  but a vertical neighbour is 32 steps away).

Both SGConv layers bring their own GELU and C*H -> H mixing (the SGConv layer as the
paper defines it), so their blocks hold more weights than the 7x7 one; the counts are in
the results table.  Built from the public layers only.
"""

from __future__ import annotations

import torch
from torch import nn

from sgconv.torch import SGConv, SGConv2d

__all__ = ["Net", "SPATIAL"]

SPATIAL = ("conv7x7", "sgconv2d", "sgconv1d")


class Flattened1d(nn.Module):
    """A 1D bidirectional SGConv over the image read in raster order: (B, H, X, Y)."""

    def __init__(self, H: int, X: int, Y: int):
        super().__init__()
        self.layer = SGConv(H, X * Y, bidirectional=True, kernel_dim=16)

    def forward(self, x):
        B, H, X, Y = x.shape
        return self.layer(x.reshape(B, H, X * Y)).reshape(B, H, X, Y)


def spatial_layer(kind: str, H: int, size: int) -> nn.Module:
    if kind == "conv7x7":
        return nn.Conv2d(H, H, 7, padding=3, groups=H)
    if kind == "sgconv2d":
        return SGConv2d(H, (size, size), kernel_dim=8)
    if kind == "sgconv1d":
        return Flattened1d(H, size, size)
    raise ValueError(f"unknown spatial operator {kind!r}; expected one of {SPATIAL}")


class Block(nn.Module):
    """x + MLP(LayerNorm(spatial(x))), MLP = Linear(H, 2H) -> GELU -> Linear(2H, H)."""

    def __init__(self, kind: str, H: int, size: int):
        super().__init__()
        self.spatial = spatial_layer(kind, H, size)
        self.norm = nn.LayerNorm(H)
        self.mlp = nn.Sequential(nn.Linear(H, 2 * H), nn.GELU(), nn.Linear(2 * H, H))

    def forward(self, x):                                          # (B, H, X, Y)
        y = self.spatial(x).permute(0, 2, 3, 1)                    # (B, X, Y, H)
        return x + self.mlp(self.norm(y)).permute(0, 3, 1, 2)


class Net(nn.Module):
    """The classifier: (B, 1, size, size) images -> (B, 2) logits."""

    def __init__(self, kind: str, width: int = 32, depth: int = 4, size: int = 32):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.blocks = nn.Sequential(*(Block(kind, width, size) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 2)

    def forward(self, images):                                     # (B, 1, X, Y)
        x = self.blocks(self.stem(images))                         # (B, H, X, Y)
        return self.head(self.norm(x.mean(dim=(2, 3))))            # (B, 2)
