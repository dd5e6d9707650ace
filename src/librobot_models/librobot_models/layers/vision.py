"""A small convolutional image encoder (no torchvision) and image resizing.

ConvImageEncoder: images (B, 3, H, W) in [0, 1] -> feature map (B, C, H / 2^k, W / 2^k), k = stages.
Each stage halves the resolution with a strided 3x3 conv and refines with a residual block;
GroupNorm keeps it independent of the batch size (batch statistics hurt small-batch robot training).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., C, H, W) -> (..., C, *size), bilinear with antialiasing; a no-op when already that size."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    lead = images.shape[:-3]
    flat = images.reshape(-1, *images.shape[-3:])  # (N, C, H, W)
    out = F.interpolate(flat, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.reshape(*lead, *out.shape[-3:])


def _conv_norm(in_ch: int, out_ch: int, stride: int, groups: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False), nn.GroupNorm(groups, out_ch)]


class _ResidualBlock(nn.Module):
    """x -> relu(x + norm(conv(relu(norm(conv(x)))))), same shape (B, C, h, w)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_norm(channels, channels, 1, groups), nn.ReLU(), *_conv_norm(channels, channels, 1, groups)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class ConvImageEncoder(nn.Module):
    """Images (B, 3, H, W) in [0, 1] -> features (B, channels[-1], H / 2^k, W / 2^k), k = len(channels)."""

    def __init__(
        self, channels: Sequence[int] = (32, 64, 128, 256), groups: int = 8, in_channels: int = 3
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        for out_ch in channels:
            if out_ch % groups:
                raise ValueError(f"conv channels {out_ch} must be divisible by the {groups} norm groups")
            downsample = _conv_norm(in_channels, out_ch, 2, groups)
            stages.append(nn.Sequential(*downsample, nn.ReLU(), _ResidualBlock(out_ch, groups)))
            in_channels = out_ch
        self.stages = nn.Sequential(*stages)
        self.out_channels = in_channels

    def feature_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the feature map for (H, W) images (each stride-2 conv rounds up)."""
        h, w = image_size
        for _ in self.stages:
            h, w = (h + 1) // 2, (w + 1) // 2
        return h, w

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.stages(images * 2.0 - 1.0)  # [0, 1] -> [-1, 1], then (B, C, h, w)
