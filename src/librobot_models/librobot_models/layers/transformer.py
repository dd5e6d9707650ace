"""Transformer encoder and decoder stacks, batch-first, on torch's scaled_dot_product_attention.

Position embeddings are passed separately and added to queries and keys in every layer (DETR
style), never to values, so fixed sinusoidal and learned positions mix freely. Shapes:
    x, memory:        (B, S, D) tokens
    pos, memory_pos:  (B or 1, S, D) position embeddings, or None
    key_padding_mask: (B, S) bool, True where a token must be ignored
`pre_norm` picks LayerNorm before each sublayer (stable for deep stacks) or after it (the
original Transformer, DETR and ACT); pre-norm stacks end with a final LayerNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from librobot_models.layers.mlp import MLP


def _with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


class Attention(nn.Module):
    """Multi-head attention: (B, Sq, D) queries over (B, Sk, D) keys/values -> (B, Sq, D)."""

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"attention dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        B, Sq, D = query.shape
        Sk = key.shape[1]
        h = self.n_heads
        q = self.q_proj(query).view(B, Sq, h, D // h).transpose(1, 2)  # (B, h, Sq, D/h)
        k = self.k_proj(key).view(B, Sk, h, D // h).transpose(1, 2)  # (B, h, Sk, D/h)
        v = self.v_proj(value).view(B, Sk, h, D // h).transpose(1, 2)  # (B, h, Sk, D/h)
        # SDPA's boolean mask is True where attention is allowed: (B, 1, 1, Sk) broadcasts over heads/queries
        mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
        )  # (B, h, Sq, D/h)
        return self.out_proj(out.transpose(1, 2).reshape(B, Sq, D))


class _Sublayer(nn.Module):
    """Residual wrapper: x + dropout(f(norm(x))) with pre_norm, else norm(x + dropout(f(x)))."""

    def __init__(self, dim: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor, fn) -> torch.Tensor:
        if self.pre_norm:
            return x + self.dropout(fn(self.norm(x)))
        return self.norm(x + self.dropout(fn(x)))


class TransformerEncoderLayer(nn.Module):
    """Self-attention then feed-forward: (B, S, D) -> (B, S, D)."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        dim_feedforward: int,
        dropout: float = 0.1,
        act: str = "relu",
        pre_norm: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(dim, n_heads, dropout)
        self.feed_forward = MLP(dim, [dim_feedforward], dim, act=act, dropout=dropout)
        self.attn_block = _Sublayer(dim, dropout, pre_norm)
        self.ff_block = _Sublayer(dim, dropout, pre_norm)

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        def self_attend(y: torch.Tensor) -> torch.Tensor:
            qk = _with_pos(y, pos)
            return self.self_attn(qk, qk, y, key_padding_mask=key_padding_mask)

        x = self.attn_block(x, self_attend)
        return self.ff_block(x, self.feed_forward)


class TransformerDecoderLayer(nn.Module):
    """Self-attention, cross-attention to memory, feed-forward: (B, S, D), (B, M, D) -> (B, S, D)."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        dim_feedforward: int,
        dropout: float = 0.1,
        act: str = "relu",
        pre_norm: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(dim, n_heads, dropout)
        self.cross_attn = Attention(dim, n_heads, dropout)
        self.feed_forward = MLP(dim, [dim_feedforward], dim, act=act, dropout=dropout)
        self.self_attn_block = _Sublayer(dim, dropout, pre_norm)
        self.cross_attn_block = _Sublayer(dim, dropout, pre_norm)
        self.ff_block = _Sublayer(dim, dropout, pre_norm)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor | None = None,
        memory_pos: torch.Tensor | None = None,
        memory_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        def self_attend(y: torch.Tensor) -> torch.Tensor:
            qk = _with_pos(y, pos)
            return self.self_attn(qk, qk, y, is_causal=is_causal)

        def cross_attend(y: torch.Tensor) -> torch.Tensor:
            return self.cross_attn(
                _with_pos(y, pos),
                _with_pos(memory, memory_pos),
                memory,
                key_padding_mask=memory_key_padding_mask,
            )

        x = self.self_attn_block(x, self_attend)
        x = self.cross_attn_block(x, cross_attend)
        return self.ff_block(x, self.feed_forward)


class TransformerEncoder(nn.Module):
    """A stack of `n_layers` encoder layers: (B, S, D) -> (B, S, D)."""

    def __init__(
        self,
        n_layers: int,
        dim: int,
        n_heads: int,
        dim_feedforward: int,
        dropout: float = 0.1,
        act: str = "relu",
        pre_norm: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(dim, n_heads, dim_feedforward, dropout, act, pre_norm)
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(dim) if pre_norm else nn.Identity()

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, pos=pos, key_padding_mask=key_padding_mask)
        return self.norm(x)


class TransformerDecoder(nn.Module):
    """A stack of `n_layers` decoder layers over a shared memory: (B, S, D), (B, M, D) -> (B, S, D)."""

    def __init__(
        self,
        n_layers: int,
        dim: int,
        n_heads: int,
        dim_feedforward: int,
        dropout: float = 0.1,
        act: str = "relu",
        pre_norm: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(dim, n_heads, dim_feedforward, dropout, act, pre_norm)
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(dim) if pre_norm else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor | None = None,
        memory_pos: torch.Tensor | None = None,
        memory_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, memory, pos, memory_pos, memory_key_padding_mask, is_causal)
        return self.norm(x)
