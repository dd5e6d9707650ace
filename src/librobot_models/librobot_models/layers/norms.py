"""Normalisation layers behind one factory; all of them normalise channel-last inputs (..., dim).

    norm("layer", 256)   LayerNorm: (x - mean) / sqrt(var + eps) * weight + bias
    norm("rms", 256)     RMSNorm (Zhang & Sennrich 2019): x / sqrt(mean(x^2) + eps) * weight
    norm("group", 256)   GroupNorm over each token's channels split into `groups` groups

For convolutional feature maps (B, C, H, W), use torch.nn.GroupNorm directly (layers/vision.py does).
"""

from __future__ import annotations

import torch
from torch import nn


class TokenGroupNorm(nn.GroupNorm):
    """GroupNorm of channel-last tokens: x (..., dim), normalised per token over groups of channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)  # (N, dim) is GroupNorm's (N, C)


NORMS = ("layer", "rms", "group")


def norm(name: str, dim: int, groups: int = 8, eps: float | None = None) -> nn.Module:
    """A normalisation module over the last axis of size `dim`; eps defaults to torch's per type."""
    if name == "layer":
        return nn.LayerNorm(dim) if eps is None else nn.LayerNorm(dim, eps=eps)
    if name == "rms":
        return nn.RMSNorm(dim, eps=1e-6 if eps is None else eps)
    if name == "group":
        if dim % groups:
            raise ValueError(f"group norm: dim {dim} is not divisible by groups {groups}")
        return TokenGroupNorm(groups, dim) if eps is None else TokenGroupNorm(groups, dim, eps=eps)
    raise ValueError(f"unknown norm {name!r}; expected one of {list(NORMS)}")
