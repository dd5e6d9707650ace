"""Fixed sinusoidal position embeddings (Vaswani et al. 2017; 2D variant as in DETR)."""

from __future__ import annotations

import math

import torch


def sinusoidal_1d(positions: torch.Tensor | int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Embeddings (L, dim) of positions (L,) (or of 0..L-1 when an int L is given).

    Half the channels are sines, half cosines, at geometrically spaced frequencies 1 .. 1/base.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal embedding dim must be even, got {dim}")
    if isinstance(positions, int):
        positions = torch.arange(positions)
    freqs = torch.exp(-math.log(base) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (dim/2,)
    angles = positions.float()[:, None] * freqs[None, :]  # (L, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (L, dim)


def sinusoidal_2d(height: int, width: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Embeddings (height * width, dim) of a feature map's cells, row-major.

    Rows and columns are scaled to [0, 2*pi] so the code does not depend on the map size; the first
    dim/2 channels encode the row, the rest the column.
    """
    if dim % 4:
        raise ValueError(f"2D sinusoidal embedding dim must be a multiple of 4, got {dim}")
    scale = 2 * math.pi
    rows = sinusoidal_1d(torch.arange(height) / max(height - 1, 1) * scale, dim // 2, base)  # (H, dim/2)
    cols = sinusoidal_1d(torch.arange(width) / max(width - 1, 1) * scale, dim // 2, base)  # (W, dim/2)
    grid = torch.cat(
        [rows[:, None, :].expand(height, width, -1), cols[None, :, :].expand(height, width, -1)], dim=-1
    )  # (H, W, dim)
    return grid.reshape(height * width, dim)
