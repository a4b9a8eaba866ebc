"""Image encoders of the image path, registered by name in ``IMAGE_ENCODERS``.

- ``cnn``: stride-2 conv blocks, ``(b, 3, H, W)`` -> a grid of feature tokens
  ``(b, (H / 2^k) * (W / 2^k), out_dim)`` for ``k`` blocks.
- ``cnn_tokens``: the same conv trunk, then learned queries attend over the grid and give
  ``n_tokens`` tokens of ``out_dim``: the shape of a signal encoder's output. Trained by
  :mod:`ecgqa.image_qa.distill` to reproduce the signal encoder's tokens of the record an
  image shows, its outputs live in that encoder's feature space (``mean`` / ``std``
  buffers undo the standardisation the distillation trains in).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ecgqa.registry import IMAGE_ENCODERS


def conv_trunk(widths: Sequence[int], depth: int = 1) -> tuple[nn.Sequential, int]:
    """Conv blocks, each a stride-2 3x3 conv then ``depth - 1`` stride-1 ones (GroupNorm,
    GELU after each). Returns the trunk and its output channels."""
    if not widths or depth < 1:
        raise ValueError("an image encoder needs at least one width and depth >= 1")
    layers, c = [], 3
    for w in widths:
        for i in range(depth):
            layers += [nn.Conv2d(c, w, 3, stride=2 if i == 0 else 1, padding=1),
                       nn.GroupNorm(1, w), nn.GELU()]
            c = w
    return nn.Sequential(*layers), c


class ConvImageEncoder(nn.Module):
    """Stride-2 conv blocks: ``(b, 3, H, W)`` -> a grid of feature tokens ``(b, n, out_dim)``,
    ``n = (H / 2^k) * (W / 2^k)`` for ``k`` blocks."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 128, 256), out_dim: int = 256,
                 depth: int = 1):
        super().__init__()
        self.blocks, c = conv_trunk(widths, depth)
        self.out = nn.Linear(c, out_dim)
        self.out_dim = out_dim

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        grid = self.blocks(pixels)                                   # (b, c, h, w)
        return self.out(grid.flatten(2).transpose(1, 2))             # (b, h*w, out_dim)


def grid_positions(h: int, w: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine/cosine positions ``(h * w, dim)``: half the channels code the row,
    half the column (``dim`` divisible by 4)."""
    quarter = dim // 4
    freq = torch.exp(-math.log(1e4) * torch.arange(quarter) / max(quarter, 1))   # (q,)
    rows = torch.arange(h).float()[:, None] * freq                               # (h, q)
    cols = torch.arange(w).float()[:, None] * freq                               # (w, q)
    row = torch.cat([rows.sin(), rows.cos()], 1)[:, None].expand(h, w, 2 * quarter)
    col = torch.cat([cols.sin(), cols.cos()], 1)[None].expand(h, w, 2 * quarter)
    return torch.cat([row, col], -1).reshape(h * w, 4 * quarter)


class TokenImageEncoder(nn.Module):
    """Conv trunk + attention pooling to a signal encoder's token shape.

    ``(b, 3, H, W)`` --trunk--> grid ``(b, h*w, out_dim)`` (+ 2-D positions)
    --``n_tokens`` learned queries, multi-head attention, MLP--> ``(b, n_tokens, out_dim)``
    --``* std + mean``--> tokens in the distillation teacher's units.
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 128, 256), out_dim: int = 256,
                 depth: int = 1, n_tokens: int = 40, heads: int = 4):
        super().__init__()
        if out_dim % 4 or out_dim % heads:
            raise ValueError(f"out_dim {out_dim} must be divisible by 4 and by heads {heads}")
        self.blocks, c = conv_trunk(widths, depth)
        self.grid = nn.Linear(c, out_dim)
        self.queries = nn.Parameter(torch.randn(n_tokens, out_dim) * out_dim ** -0.5)
        self.attn = nn.MultiheadAttention(out_dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(out_dim)
        self.mlp = nn.Sequential(nn.Linear(out_dim, 2 * out_dim), nn.GELU(),
                                 nn.Linear(2 * out_dim, out_dim))
        self.register_buffer("mean", torch.zeros(out_dim))
        self.register_buffer("std", torch.ones(out_dim))
        self.out_dim, self.n_tokens = out_dim, n_tokens

    def standardised(self, pixels: torch.Tensor) -> torch.Tensor:
        """The tokens before ``* std + mean`` (what distillation fits), ``(b, n_tokens, d)``."""
        fmap = self.blocks(pixels)                                   # (b, c, h, w)
        h, w = fmap.shape[-2:]
        grid = self.grid(fmap.flatten(2).transpose(1, 2))            # (b, h*w, d)
        grid = grid + grid_positions(h, w, self.out_dim).to(grid)
        q = self.queries.unsqueeze(0).expand(grid.shape[0], -1, -1)  # (b, n, d)
        tokens, _ = self.attn(q, grid, grid, need_weights=False)     # (b, n, d)
        return tokens + self.mlp(self.norm(tokens))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.standardised(pixels) * self.std + self.mean     # (b, n_tokens, d)


@IMAGE_ENCODERS.register("cnn")
def cnn(widths: Sequence[int] = (32, 64, 128, 128, 256), out_dim: int = 256,
        depth: int = 1) -> nn.Module:
    return ConvImageEncoder(widths, out_dim, depth)


@IMAGE_ENCODERS.register("cnn_tokens")
def cnn_tokens(widths: Sequence[int] = (32, 64, 128, 128, 256), out_dim: int = 256,
               depth: int = 1, n_tokens: int = 40, heads: int = 4) -> nn.Module:
    return TokenImageEncoder(widths, out_dim, depth, n_tokens, heads)
