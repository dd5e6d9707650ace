"""Fusing a conditioning signal into a token stream: FiLM (a vector) and cross-attention (tokens).

    FiLM(cond_dim=64, dim=128)(x (B, ..., 128), cond (B, 64))           -> (B, ..., 128)
    CrossAttentionFusion(128, 4)(x (B, S, 128), context (B, M, 128), pad) -> (B, S, 128)
"""

from __future__ import annotations

import torch
from torch import nn

from librobot_models.layers.attention import Attention
from librobot_models.layers.mlp import MLP
from librobot_models.layers.transformer import Sublayer


class FiLM(nn.Module):
    """Feature-wise linear modulation (Perez et al. 2018): gamma(cond) * x + beta(cond), per channel.

    gamma and beta come from one Linear(cond_dim, 2 * dim); the bias starts at gamma = 1, beta = 0 so
    a fresh layer is close to the identity.
    """

    def __init__(self, cond_dim: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.proj = nn.Linear(cond_dim, 2 * dim)
        with torch.no_grad():
            self.proj.bias.copy_(torch.cat([torch.ones(dim), torch.zeros(dim)]))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, ..., dim) channel-last, cond (B, cond_dim) -> (B, ..., dim)."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"FiLM expects x with {self.dim} channels last, got shape {tuple(x.shape)}")
        gamma, beta = self.proj(cond).chunk(2, dim=-1)  # (B, dim) each
        shape = (cond.shape[0],) + (1,) * (x.ndim - 2) + (self.dim,)  # broadcast over the middle axes
        return gamma.view(shape) * x + beta.view(shape)


class CrossAttentionFusion(nn.Module):
    """Tokens attend to a context, pre-norm residual: x + attn(norm(x), ctx), then x + ff(norm(x)).

    (B, S, dim) tokens, (B, M, context_dim) context -> (B, S, dim); a context of another width is
    projected to dim first.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        context_dim: int | None = None,
        dim_feedforward: int | None = None,
        dropout: float = 0.0,
        act: str = "gelu",
        norm: str = "layer",
    ) -> None:
        super().__init__()
        context_dim = context_dim or dim
        self.context_in = nn.Linear(context_dim, dim) if context_dim != dim else nn.Identity()
        self.attn = Attention(dim, n_heads, dropout)
        self.feed_forward = MLP(dim, [dim_feedforward or 4 * dim], dim, act=act, dropout=dropout)
        self.attn_block = Sublayer(dim, dropout, pre_norm=True, norm=norm)
        self.ff_block = Sublayer(dim, dropout, pre_norm=True, norm=norm)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, context_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """context_padding_mask: (B, M) bool, True where a context token must be ignored."""
        context = self.context_in(context)  # (B, M, dim)
        x = self.attn_block(
            x, lambda y: self.attn(y, context, context, key_padding_mask=context_padding_mask)
        )
        return self.ff_block(x, self.feed_forward)
