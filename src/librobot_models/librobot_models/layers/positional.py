"""Position encodings: fixed sinusoidal embeddings (Vaswani et al. 2017; 2D variant as in DETR),
rotary embeddings (RoPE, Su et al. 2021) and linear attention biases (ALiBi, Press et al. 2022).

Sinusoidal embeddings are added to tokens; RoPE rotates queries and keys inside attention so their dot
product depends only on the distance between positions; ALiBi adds -slope * distance to the attention
scores, one slope per head. `layers.attention.Attention` applies the last two when configured to.
"""

from __future__ import annotations

import math

import torch


def _frequencies(dim: int, base: float) -> torch.Tensor:
    """(dim/2,) geometrically spaced angular frequencies 1 .. 1/base, shared by sinusoids and RoPE."""
    return torch.exp(-math.log(base) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)


def sinusoidal_1d(positions: torch.Tensor | int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Embeddings (L, dim) of positions (L,) (or of 0..L-1 when an int L is given).

    Half the channels are sines, half cosines, at geometrically spaced frequencies 1 .. 1/base.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal embedding dim must be even, got {dim}")
    if isinstance(positions, int):
        positions = torch.arange(positions)
    freqs = _frequencies(dim, base).to(positions.device)  # (dim/2,)
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


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate x (..., L, dim) by its positions (L,): RoPE in the "rotate half" layout.

    Channel i is paired with channel i + dim/2 and the pair is rotated by the angle position * f_i,
    f_i = base^(-2i/dim). Rotations compose, so <rot(q, m), rot(k, n)> depends only on m - n.
    """
    dim = x.shape[-1]
    if dim % 2:
        raise ValueError(f"rotary embedding needs an even head dim, got {dim}")
    angles = positions.float()[:, None] * _frequencies(dim, base).to(x.device)[None, :]  # (L, dim/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., : dim // 2], x[..., dim // 2 :]  # (..., L, dim/2) each
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (..., L, dim)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes (n_heads,): 2^(-8/n), 2^(-16/n), ..., 2^(-8) for a power-of-two n.

    Otherwise the slopes of the nearest lower power of two, then every other slope of the next power
    of two (the rule of the ALiBi paper's reference code), e.g. 6 heads: 2^-2, 2^-4, 2^-6, 2^-8, 2^-1, 2^-3.
    """
    if n_heads < 1:
        raise ValueError(f"ALiBi needs n_heads >= 1, got {n_heads}")

    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    lower = 2 ** int(math.floor(math.log2(n_heads)))
    slopes = power_of_two(lower)
    if lower < n_heads:
        slopes += power_of_two(2 * lower)[0::2][: n_heads - lower]
    return torch.tensor(slopes)


def alibi_bias(slopes: torch.Tensor, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor:
    """Attention-score bias (n_heads, Lq, Lk) = -slope * |q_position - k_position|.

    On the causal part (k <= q) this is ALiBi's -slope * (q - k); the absolute distance extends it
    symmetrically to bidirectional attention.
    """
    distance = (q_positions[:, None] - k_positions[None, :]).abs().float()  # (Lq, Lk)
    return -slopes.float().to(distance.device)[:, None, None] * distance[None]  # (h, Lq, Lk)
