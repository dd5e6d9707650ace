"""pi0-style: a VLM prefix and a flow-matching "action expert" (Black et al. 2024, "pi0: A
Vision-Language-Action Flow Model for General Robot Control", arXiv:2410.24164).

  prefix   every camera image + instruction --VLM (trained)--> tokens (B, L, D_vlm) --Linear--> (B, L, cond)
  suffix   [state token = Linear(state), action tokens a_i = MLP([Linear(x_t)_i, sin-emb(t)]) + pos_i]
           (B, 1 + k, E), pos_i a sinusoidal embedding of the step i in the chunk
  expert   n_layers of joint attention: suffix queries attend to [prefix; suffix] keys in one softmax,
           under pi0's block-causal rule (the state token does not see the noisy actions; actions see
           everything), then a GeGLU feed-forward (Gemma's); a Linear reads the velocity off the k action
           tokens
  flow     rectified flow (x_t = t eps + (1 - t) a), training times 0.001 + 0.999 Beta(1.5, 1),
           10 Euler steps from t = 1 at inference: the shared FlowHead with the expert as its network

Differences from pi0: pi0's expert attends, layer by layer, to the keys and values of the matching
VLM layer (a mixture of two transformers over one sequence); here every expert layer attends to the
VLM's final tokens through its own key/value projections. The prefix is encoded once per chunk and
reused by every integration step, as pi0 does with its key/value cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from librobot_models.config import builds
from librobot_models.frameworks.common import VLMFramework, VLMFrameworkConfig, VLMProjection
from librobot_models.heads import Conditioning, FlowHead, HeadConfig, RectifiedFlowConfig
from librobot_models.layers import MLP, Attention, Sublayer, sinusoidal_1d
from librobot_models.registry import register_vla


@register_vla("pi0", aliases=("pi-0", "pi_zero"))
@dataclass(frozen=True)
class Pi0Config(VLMFrameworkConfig):
    """The VLM fields (vlm, vlm_tiny, freeze_vlm, vlm_lora_rank, vlm_dtype, cond_dim) come from
    VLMFrameworkConfig. The expert's width, depth and heads are the head's hidden_dim, n_layers, n_heads."""

    vlm: str = "paligemma-3b"  # pi0's VLM
    freeze_vlm: bool = False  # pi0 trains the whole model
    head: RectifiedFlowConfig = field(
        default_factory=lambda: RectifiedFlowConfig(
            hidden_dim=256, n_layers=4, n_heads=4, time_sampling="beta", n_sample_steps=10
        )
    )


class JointAttentionLayer(nn.Module):
    """Pre-norm: suffix (B, S, E) attends to [prefix (B, L, E); suffix] in one softmax, then GeGLU."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.prefix_norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, n_heads, dropout)
        self.feed_forward = MLP(dim, [4 * dim], dim, act="geglu", dropout=dropout)
        self.attn_block = Sublayer(dim, dropout, pre_norm=True)
        self.ff_block = Sublayer(dim, dropout, pre_norm=True)

    def forward(
        self, x: torch.Tensor, prefix: torch.Tensor, key_padding_mask: torch.Tensor, attn_mask: torch.Tensor
    ) -> torch.Tensor:
        """key_padding_mask (B, L + S), True on padded keys; attn_mask (S, L + S), True where allowed."""
        prefix = self.prefix_norm(prefix)

        def attend(y: torch.Tensor) -> torch.Tensor:
            keys = torch.cat([prefix, y], dim=1)  # (B, L + S, E)
            return self.attn(y, keys, keys, key_padding_mask=key_padding_mask, attn_mask=attn_mask)

        x = self.attn_block(x, attend)
        return self.ff_block(x, self.feed_forward)


class ActionExpert(nn.Module):
    """The velocity network: (x_t (B, k, A), time (B,) in [0, 1000], Conditioning(tokens = prefix
    (B, L, cond), pooled = state (B, cond))) -> velocity (B, k, A); sized by the head's config."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        c, E = config, config.hidden_dim
        self.dim = E
        self.prefix_in = nn.Linear(c.cond_dim, E)
        self.state_in = nn.Linear(c.cond_dim, E)
        self.action_in = nn.Linear(c.action_dim, E)
        self.action_time_mlp = MLP(2 * E, [E], E, act="silu")  # pi0: W3 swish(W2 [W1 a, phi(t)])
        # which step of the chunk each action token is (pi0's language model gets it from RoPE)
        self.register_buffer("step_pos", sinusoidal_1d(c.chunk_size, E)[None], persistent=False)  # (1, k, E)
        self.layers = nn.ModuleList(JointAttentionLayer(E, c.n_heads, c.dropout) for _ in range(c.n_layers))
        self.norm = nn.LayerNorm(E)
        self.action_out = nn.Linear(E, c.action_dim)
        # Among the suffix's 1 + k keys the state token (row 0) sees only itself (actions see everything).
        suffix_mask = torch.ones(1 + c.chunk_size, 1 + c.chunk_size, dtype=torch.bool)
        suffix_mask[0, 1:] = False
        self.register_buffer("suffix_mask", suffix_mask, persistent=False)  # (1 + k, 1 + k)

    def forward(self, x: torch.Tensor, time: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        B, k, _ = x.shape
        prefix, prefix_pad = cond.tokens, cond.padding_mask  # (B, L, cond), (B, L) | None
        L = prefix.shape[1]
        t = sinusoidal_1d(time, self.dim).to(x.dtype)[:, None].expand(B, k, self.dim)  # (B, k, E)
        actions = self.action_time_mlp(torch.cat([self.action_in(x), t], dim=-1)) + self.step_pos  # (B, k, E)
        h = torch.cat([self.state_in(cond.pooled)[:, None], actions], dim=1)  # (B, 1 + k, E)

        if prefix_pad is None:
            prefix_pad = torch.zeros(B, L, dtype=torch.bool, device=x.device)
        key_padding = torch.cat([prefix_pad, prefix_pad.new_zeros(B, 1 + k)], dim=1)  # (B, L + 1 + k)
        sees_prefix = self.suffix_mask.new_ones(1 + k, L)
        attn_mask = torch.cat([sees_prefix, self.suffix_mask], dim=1)  # (1 + k, L + 1 + k)
        prefix = self.prefix_in(prefix)  # (B, L, E)
        for layer in self.layers:
            h = layer(h, prefix, key_padding, attn_mask)
        return self.action_out(self.norm(h[:, 1:]))  # (B, k, A)


@builds(Pi0Config)
class Pi0(VLMFramework):
    def __init__(
        self, config: Pi0Config, vlm_pretrained: str | Path | None = None, vlm_tokenizer: Any = None
    ) -> None:
        super().__init__(config, vlm_pretrained, vlm_tokenizer)
        c = config
        self.prefix_proj = VLMProjection(self.backbone.get_embedding_dim(), c.cond_dim)
        self.state_proj = nn.Linear(c.state_dim, c.cond_dim)
        self.head = FlowHead(c.head, denoiser=ActionExpert(c.head))

    def conditioning(self, batch: dict[str, Any]) -> Conditioning:
        """Prefix tokens (B, L, cond) with their padding, and the state (B, cond) for the state token."""
        return self.prefix_proj(self.encode(batch), pooled=self.state_proj(batch["state"]))
