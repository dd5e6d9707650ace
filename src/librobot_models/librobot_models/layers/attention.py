"""Multi-head attention on torch's scaled_dot_product_attention (SDPA), with its variants as options.

    AttentionConfig()                                     standard attention (the default; ACT uses it)
    AttentionConfig(backend="flash")                      SDPA restricted to the FlashAttention kernel
    AttentionConfig(window=16)                            sliding window: keys within 15 positions
    AttentionConfig(block_size=32)                        block-wise: attend only inside blocks of 32,
                                                          computed block by block (memory ~ S * block)
    AttentionConfig(position="rope" | "alibi")            rotary embeddings / linear distance biases
    attn(q, k, v, attn_mask=allowed)                      any other pattern (e.g. Octo's block-causal
                                                          mask): (Sq, Sk) or (B, Sq, Sk) bool per call
    attn(x, x, x, is_causal=True, cache=KVCache())        incremental decoding: keys and values of
                                                          earlier calls are kept, new queries follow them

Options combine: a causal call with window=w sees the query and the w-1 keys before it; block_size with
a window applies both. Positions are 0..S-1 along queries and along keys. Every option reduces to a mask
(`attention_mask`) or an additive bias on the scores, so each variant equals full attention with that
mask; block-wise attention computes the same result without building the (S, S) mask.

FlashAttention in torch needs a CUDA device, fp16/bf16 tensors and no explicit mask (padding, window,
block with padding, or ALiBi); when a call does not meet that, "flash" warns and runs SDPA's default
backend selection instead, so a CPU run gives the standard result.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from librobot_models.config import Config, is_int, is_number
from librobot_models.layers.positional import alibi_bias, alibi_slopes, apply_rotary

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # torch < 2.3 has no backend selection: "flash" then always falls back
    SDPBackend = sdpa_kernel = None

BACKENDS = ("standard", "flash")
POSITIONS = ("none", "rope", "alibi")


@dataclass(frozen=True)
class AttentionConfig(Config):
    """How an attention layer computes; the defaults are plain full attention."""

    backend: str = "standard"  # "standard": SDPA picks a kernel; "flash": FlashAttention kernel only
    position: str = "none"  # "none" | "rope" (rotate q, k) | "alibi" (distance bias per head)
    window: int | None = None  # sliding window: |q - k| < window (0 <= q - k < window when causal)
    block_size: int | None = None  # block-wise: q and k in the same block of this many positions
    rope_base: float = 10000.0  # RoPE's longest wavelength is 2*pi*rope_base positions

    def validate(self) -> None:
        self.check("backend", self.backend in BACKENDS, f"one of {list(BACKENDS)}")
        self.check("position", self.position in POSITIONS, f"one of {list(POSITIONS)}")
        for name in ("window", "block_size"):
            value = getattr(self, name)
            self.check(name, value is None or (is_int(value) and value > 0), "null or an int > 0")
        self.check("rope_base", is_number(self.rope_base) and self.rope_base > 1, "a number > 1")


@dataclass
class KVCache:
    """Keys and values (B, h, S, d) of earlier calls of one attention layer, for incremental decoding.

    Self-attention (static=False): each call appends its keys and values, and its queries take the
    positions after those already cached (for causality, RoPE and ALiBi). Cross-attention
    (static=True): the first call's keys and values of the memory are reused by every later call.
    """

    static: bool = False
    k: torch.Tensor | None = field(default=None, repr=False)
    v: torch.Tensor | None = field(default=None, repr=False)

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]


def attention_mask(
    q_len: int,
    k_len: int,
    causal: bool = False,
    window: int | None = None,
    block_size: int | None = None,
    device: torch.device | None = None,
    q_offset: int = 0,
) -> torch.Tensor | None:
    """(q_len, k_len) bool, True where query i (at position q_offset + i) may attend key j; None
    when everything is allowed."""
    if not (causal or window or block_size):
        return None
    i = q_offset + torch.arange(q_len, device=device)[:, None]  # (Sq, 1)
    j = torch.arange(k_len, device=device)[None, :]  # (1, Sk)
    allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=device)
    if causal:
        allowed &= j <= i
    if window:
        allowed &= (i - j).abs() < window
    if block_size:
        allowed &= (i // block_size) == (j // block_size)
    return allowed


def _flash_unsupported_reason(q: torch.Tensor, mask: torch.Tensor | None) -> str | None:
    if sdpa_kernel is None:
        return f"torch {torch.__version__} has no torch.nn.attention.sdpa_kernel"
    if not q.is_cuda:
        return f"tensors are on {q.device.type}, FlashAttention needs CUDA"
    if q.dtype not in (torch.float16, torch.bfloat16):
        return f"dtype is {q.dtype}, FlashAttention needs float16 or bfloat16"
    if mask is not None:
        return "the call needs an explicit mask (padding, window, block or ALiBi)"
    return None


class Attention(nn.Module):
    """Multi-head attention: (B, Sq, D) queries over (B, Sk, D) keys/values -> (B, Sq, D)."""

    def __init__(
        self, dim: int, n_heads: int, dropout: float = 0.0, config: AttentionConfig | None = None
    ) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"attention dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.dropout = dropout
        self.config = config or AttentionConfig()
        if self.config.position == "rope" and (dim // n_heads) % 2:
            raise ValueError(f"RoPE needs an even head dim, got {dim} / {n_heads} heads = {dim // n_heads}")
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        if self.config.position == "alibi":
            self.register_buffer("alibi_slopes", alibi_slopes(n_heads), persistent=False)  # (h,)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        attn_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """key_padding_mask: (B, Sk) bool, True where a key must be ignored. is_causal: key j is
        visible to query i only when j <= i. attn_mask: (Sq, Sk) or (B, Sq, Sk) bool, True where
        query i may attend key j; combined (and) with every other mask. Not with block_size.
        cache: see KVCache; masks then cover every key, cached ones included."""
        B, Sq, D = query.shape
        h = self.n_heads
        offset = cache.length if cache is not None and not cache.static else 0  # position of query 0
        q = self.q_proj(query).view(B, Sq, h, D // h).transpose(1, 2)  # (B, h, Sq, D/h)
        if self.config.position == "rope":
            q = apply_rotary(q, offset + torch.arange(Sq, device=q.device), self.config.rope_base)
        if cache is not None and cache.static and cache.k is not None:
            k, v = cache.k, cache.v  # the memory's, from the first call
        else:
            Sk = key.shape[1]
            k = self.k_proj(key).view(B, Sk, h, D // h).transpose(1, 2)  # (B, h, Sk, D/h)
            v = self.v_proj(value).view(B, Sk, h, D // h).transpose(1, 2)  # (B, h, Sk, D/h)
            if self.config.position == "rope":
                k = apply_rotary(k, offset + torch.arange(Sk, device=k.device), self.config.rope_base)
            if cache is not None:
                if cache.k is not None:
                    k, v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)  # (B, h, S+Sk, D/h)
                cache.k, cache.v = k, v
        if self.config.block_size:
            if attn_mask is not None or cache is not None:
                raise ValueError("attn_mask and cache cannot be combined with block-wise attention (block_size)")
            out = self._blockwise(q, k, v, key_padding_mask, is_causal)  # (B, h, Sq, D/h)
        else:
            out = self._attend(q, k, v, key_padding_mask, is_causal, attn_mask, offset)  # (B, h, Sq, D/h)
        return self.out_proj(out.transpose(1, 2).reshape(B, Sq, D))

    def _attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        is_causal: bool,
        attn_mask: torch.Tensor | None = None,
        q_offset: int = 0,
    ) -> torch.Tensor:
        """SDPA over (B, h, Sq, d) queries (positions q_offset ..) and (B, h, Sk, d) keys/values
        (positions 0 ..) with every configured mask."""
        Sq, Sk = q.shape[2], k.shape[2]
        c = self.config
        mask = attention_mask(Sq, Sk, is_causal, c.window, device=q.device, q_offset=q_offset)  # (Sq, Sk) | None
        if mask is None and key_padding_mask is None and attn_mask is None and c.position != "alibi":
            return self._sdpa(q, k, v, None, is_causal)  # lets SDPA use its own causal kernels
        if mask is not None:
            mask = mask[None, None]  # (1, 1, Sq, Sk)
        if attn_mask is not None:
            if attn_mask.dtype != torch.bool or tuple(attn_mask.shape[-2:]) != (Sq, Sk):
                got = f"{attn_mask.dtype} {tuple(attn_mask.shape)}"
                raise ValueError(f"attn_mask is {got}: expected bool (Sq, Sk) = ({Sq}, {Sk}) or (B, Sq, Sk)")
            extra = attn_mask[None, None] if attn_mask.ndim == 2 else attn_mask[:, None]  # (B|1, 1, Sq, Sk)
            mask = extra if mask is None else mask & extra
        if key_padding_mask is not None:
            keep = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, Sk)
            mask = keep if mask is None else mask & keep  # (B, 1, Sq or 1, Sk)
        if mask is not None:
            # A query with every key masked (e.g. a padded step under a causal mask) would give NaN, which
            # later layers spread through their values; let it see every key instead (its output is unused).
            mask = mask | ~mask.any(dim=-1, keepdim=True)
        if c.position == "alibi":
            positions_q = q_offset + torch.arange(Sq, device=q.device)
            positions_k = torch.arange(Sk, device=q.device)
            bias = alibi_bias(self.alibi_slopes, positions_q, positions_k).to(q.dtype)[None]  # (1, h, Sq, Sk)
            mask = bias if mask is None else bias.masked_fill(~mask, -math.inf)  # float: added to scores
        return self._sdpa(q, k, v, mask, is_causal=False)  # causality, if asked, is in the mask

    def _blockwise(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        is_causal: bool,
    ) -> torch.Tensor:
        """Attention inside consecutive blocks, one SDPA call over all blocks stacked on the batch axis.

        Equal to full attention with attention_mask(..., block_size): every other option (causal,
        window, ALiBi) depends only on q - k, which is the same inside every block.
        """
        B, h, S, d = q.shape
        if k.shape[2] != S:
            raise ValueError(
                f"block-wise attention needs self-attention (Sq == Sk), got Sq = {S} and Sk = {k.shape[2]}"
            )
        b = self.config.block_size
        n_blocks = -(-S // b)
        pad = n_blocks * b - S
        if pad:  # the last block is filled with keys that are masked out
            q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))  # (B, h, n*b, d)
            if key_padding_mask is None:
                key_padding_mask = torch.zeros(B, S, dtype=torch.bool, device=q.device)
            key_padding_mask = F.pad(key_padding_mask, (0, pad), value=True)  # (B, n*b)

        def to_blocks(t: torch.Tensor) -> torch.Tensor:  # (B, h, n*b, d) -> (B*n, h, b, d)
            return t.view(B, h, n_blocks, b, d).transpose(1, 2).reshape(B * n_blocks, h, b, d)

        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.reshape(B * n_blocks, b)  # (B*n, b)
        out = self._attend(to_blocks(q), to_blocks(k), to_blocks(v), key_padding_mask, is_causal)
        out = out.view(B, n_blocks, h, b, d).transpose(1, 2).reshape(B, h, n_blocks * b, d)
        return out[:, :, :S]  # (B, h, S, d)

    def _sdpa(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        dropout_p = self.dropout if self.training else 0.0
        if self.config.backend == "flash":
            reason = _flash_unsupported_reason(q, mask)
            if reason is None:
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=is_causal)
            message = f"attention backend 'flash' unavailable ({reason}); using SDPA's default backend"
            warnings.warn(message, stacklevel=4)
        # SDPA's boolean mask is True where attention is allowed; a float mask is added to the scores
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
        )
