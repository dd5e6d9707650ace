"""A small convolutional image encoder (no torchvision), image resizing, and images -> tokens.

ConvImageEncoder: images (B, 3, H, W) in [0, 1] -> feature map (B, C, H / 2^k, W / 2^k), k = stages.
Each stage halves the resolution with a strided 3x3 conv and refines with a residual block;
GroupNorm keeps it independent of the batch size (batch statistics hurt small-batch robot training).
ImageTokenizer: camera images (B, N_cam, 3, H, W) -> positioned tokens (B, N_cam * h * w, dim) for a
transformer (Octo, Helix's System 1, the custom template).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from librobot_models.layers.positional import sinusoidal_2d


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


class ImageTokenizer(nn.Module):
    """Camera images (B, N_cam, 3, H, W) in [0, 1] -> tokens (B, N_cam * h * w, dim).

    Each image is resized to `image_size`, encoded by a ConvImageEncoder and projected to `dim` by a 1x1
    convolution; every token gets the fixed 2D sinusoidal position of its cell plus a learned embedding
    of its camera, so cameras and cells are told apart without further positions.
    """

    def __init__(
        self, channels: Sequence[int], dim: int, image_size: tuple[int, int], n_cameras: int
    ) -> None:
        super().__init__()
        self.encoder = ConvImageEncoder(channels)
        self.proj = nn.Conv2d(self.encoder.out_channels, dim, kernel_size=1)
        self.image_size, self.n_cameras, self.dim = tuple(image_size), n_cameras, dim
        h, w = self.encoder.feature_size(self.image_size)
        self.tokens_per_camera = h * w
        cell_pos = sinusoidal_2d(h, w, dim)[None, None]  # (1, 1, h*w, D)
        self.register_buffer("cell_pos", cell_pos, persistent=False)
        self.camera_embed = nn.Parameter(torch.randn(n_cameras, 1, dim) * 0.02)  # (N, 1, D)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 5 or images.shape[1] != self.n_cameras:
            raise ValueError(
                f"images of shape {tuple(images.shape)}: expected (B, {self.n_cameras} cameras, 3, H, W)"
            )
        B = images.shape[0]
        images = resize_images(images, self.image_size).flatten(0, 1)  # (B*N, 3, H', W')
        features = self.proj(self.encoder(images))  # (B*N, D, h, w)
        tokens = features.flatten(2).transpose(1, 2).reshape(B, self.n_cameras, -1, self.dim)  # (B, N, hw, D)
        return (tokens + self.cell_pos + self.camera_embed).flatten(1, 2)  # (B, N*hw, D)
