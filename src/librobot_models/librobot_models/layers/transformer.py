"""Transformer encoder and decoder stacks, batch-first, on layers.attention.Attention (SDPA).

Position embeddings are passed separately and added to queries and keys in every layer (DETR
style), never to values, so fixed sinusoidal and learned positions mix freely. Shapes:
    x, memory:        (B, S, D) tokens
    pos, memory_pos:  (B or 1, S, D) position embeddings, or None
    key_padding_mask: (B, S) bool, True where a token must be ignored
`pre_norm` picks the norm before each sublayer (stable for deep stacks) or after it (the
original Transformer, DETR and ACT); pre-norm stacks end with a final norm. `norm` names the
normalisation ("layer", "rms", "group"; see layers.norms) and `attention` (an AttentionConfig)
selects the self-attention variant: flash backend, sliding window, block-wise, RoPE or ALiBi.
Cross-attention keeps only the backend: queries and memory have no shared positions.
A decoder decodes incrementally with `cache = decoder.new_cache()`: each call then passes only the
new tokens (and their positions), and attends to those of the earlier calls (layers.attention.KVCache).
A stack with `gradient_checkpointing = True` recomputes each layer's activations in the backward pass
(torch.utils.checkpoint, non-reentrant) while training with autograd on and no cache: less memory,
the same result (dropout masks are replayed).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from librobot_models.layers.attention import Attention, AttentionConfig, KVCache
from librobot_models.layers.mlp import MLP
from librobot_models.layers.norms import norm as make_norm


def _with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


def _cross_attention_config(config: AttentionConfig | None) -> AttentionConfig | None:
    return None if config is None else AttentionConfig(backend=config.backend)


class Sublayer(nn.Module):
    """Residual wrapper: x + dropout(f(norm(x))) with pre_norm, else norm(x + dropout(f(x)))."""

    def __init__(self, dim: int, dropout: float, pre_norm: bool, norm: str = "layer") -> None:
        super().__init__()
        self.norm = make_norm(norm, dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
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
        norm: str = "layer",
        attention: AttentionConfig | None = None,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(dim, n_heads, dropout, attention)
        self.feed_forward = MLP(dim, [dim_feedforward], dim, act=act, dropout=dropout)
        self.attn_block = Sublayer(dim, dropout, pre_norm, norm)
        self.ff_block = Sublayer(dim, dropout, pre_norm, norm)

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        def self_attend(y: torch.Tensor) -> torch.Tensor:
            qk = _with_pos(y, pos)
            return self.self_attn(
                qk, qk, y, key_padding_mask=key_padding_mask, is_causal=is_causal, attn_mask=attn_mask
            )

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
        norm: str = "layer",
        attention: AttentionConfig | None = None,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(dim, n_heads, dropout, attention)
        self.cross_attn = Attention(dim, n_heads, dropout, _cross_attention_config(attention))
        self.feed_forward = MLP(dim, [dim_feedforward], dim, act=act, dropout=dropout)
        self.self_attn_block = Sublayer(dim, dropout, pre_norm, norm)
        self.cross_attn_block = Sublayer(dim, dropout, pre_norm, norm)
        self.ff_block = Sublayer(dim, dropout, pre_norm, norm)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor | None = None,
        memory_pos: torch.Tensor | None = None,
        memory_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        cache: tuple[KVCache, KVCache] | None = None,
    ) -> torch.Tensor:
        """cache: (self-attention, cross-attention) KVCache of this layer, for incremental decoding."""
        self_cache, cross_cache = cache if cache is not None else (None, None)

        def self_attend(y: torch.Tensor) -> torch.Tensor:
            qk = _with_pos(y, pos)
            return self.self_attn(qk, qk, y, is_causal=is_causal, cache=self_cache)

        def cross_attend(y: torch.Tensor) -> torch.Tensor:
            return self.cross_attn(
                _with_pos(y, pos),
                _with_pos(memory, memory_pos),
                memory,
                key_padding_mask=memory_key_padding_mask,
                cache=cross_cache,
            )

        x = self.self_attn_block(x, self_attend)
        x = self.cross_attn_block(x, cross_attend)
        return self.ff_block(x, self.feed_forward)


class _LayerStack(nn.Module):
    """`n_layers` layers of `layer_class` and, with pre-norm, a final norm."""

    layer_class: type[nn.Module]
    gradient_checkpointing: bool = False  # see the module docstring; the trainer sets it

    def _checkpointed(self, cache: object = None) -> bool:
        return self.gradient_checkpointing and self.training and torch.is_grad_enabled() and cache is None

    def __init__(
        self,
        n_layers: int,
        dim: int,
        n_heads: int,
        dim_feedforward: int,
        dropout: float = 0.1,
        act: str = "relu",
        pre_norm: bool = False,
        norm: str = "layer",
        attention: AttentionConfig | None = None,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            self.layer_class(dim, n_heads, dim_feedforward, dropout, act, pre_norm, norm, attention)
            for _ in range(n_layers)
        )
        self.norm = make_norm(norm, dim) if pre_norm else nn.Identity()


class TransformerEncoder(_LayerStack):
    """A stack of `n_layers` encoder layers: (B, S, D) -> (B, S, D)."""

    layer_class = TransformerEncoderLayer

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """attn_mask: (S, S) or (B, S, S) bool, True where token i may attend token j."""
        for layer in self.layers:
            if self._checkpointed():
                x = checkpoint(layer, x, pos, key_padding_mask, is_causal, attn_mask, use_reentrant=False)
            else:
                x = layer(x, pos, key_padding_mask, is_causal, attn_mask)
        return self.norm(x)


class TransformerDecoder(_LayerStack):
    """A stack of `n_layers` decoder layers over a shared memory: (B, S, D), (B, M, D) -> (B, S, D)."""

    layer_class = TransformerDecoderLayer

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor | None = None,
        memory_pos: torch.Tensor | None = None,
        memory_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        cache: list[tuple[KVCache, KVCache]] | None = None,
    ) -> torch.Tensor:
        """cache: from new_cache(), for incremental decoding: x holds only the tokens after those of
        the earlier calls with this cache."""
        caches = cache if cache is not None else [None] * len(self.layers)
        for layer, layer_cache in zip(self.layers, caches):
            if self._checkpointed(cache):
                x = checkpoint(layer, x, memory, pos, memory_pos, memory_key_padding_mask, is_causal,
                               use_reentrant=False)
            else:
                x = layer(x, memory, pos, memory_pos, memory_key_padding_mask, is_causal, layer_cache)
        return self.norm(x)

    def new_cache(self) -> list[tuple[KVCache, KVCache]]:
        """An empty (self-attention, cross-attention) cache per layer."""
        return [(KVCache(), KVCache(static=True)) for _ in self.layers]
