"""Multi-layer perceptron and the activation factory (plain and gated activations)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class GatedLinear(nn.Module):
    """(..., in_dim) -> gate(x W + b) * (x V + c) (..., out_dim): a GLU variant (Shazeer 2020).

    Both projections live in one Linear(in_dim, 2 * out_dim); the first half goes through the gate.
    """

    gate: Callable[[torch.Tensor], torch.Tensor]

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, 2 * out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.proj(x).chunk(2, dim=-1)  # (..., out_dim) each
        return self.gate(a) * b


class SwiGLU(GatedLinear):
    """silu(x W + b) * (x V + c), the feed-forward gate of LLaMA and Gemma-style models."""

    gate = staticmethod(F.silu)


class GeGLU(GatedLinear):
    """gelu(x W + b) * (x V + c)."""

    gate = staticmethod(F.gelu)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "swiglu": SwiGLU,
    "geglu": GeGLU,
}


def is_gated(name: str) -> bool:
    return issubclass(ACTIVATIONS.get(name, nn.Identity), GatedLinear)


def activation(name: str, in_dim: int | None = None, out_dim: int | None = None) -> nn.Module:
    """An activation by name. Gated ones ("swiglu", "geglu") include their projection and need
    in_dim -> out_dim; plain ones are element-wise and take no sizes."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    if is_gated(name):
        if in_dim is None or out_dim is None:
            raise ValueError(f"gated activation {name!r} projects: give in_dim and out_dim")
        return ACTIVATIONS[name](in_dim, out_dim)
    return ACTIVATIONS[name]()


class MLP(nn.Sequential):
    """in_dim -> hidden_dims... -> out_dim; activation and dropout after every hidden layer.

    MLP(256, [1024], 256) is the transformer feed-forward block: (..., 256) -> (..., 256). With a gated
    activation each hidden layer is that activation's own projection, e.g. SwiGLU(256, 1024).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int],
        out_dim: int,
        act: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        layers: list[nn.Module] = []
        for width in hidden_dims:
            if is_gated(act):
                layers += [activation(act, in_dim, width), nn.Dropout(dropout)]
            else:
                layers += [nn.Linear(in_dim, width), activation(act), nn.Dropout(dropout)]
            in_dim = width
        layers.append(nn.Linear(in_dim, out_dim))
        super().__init__(*layers)
