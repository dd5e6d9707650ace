"""MLP-OFT head: the whole chunk decoded in parallel, trained with L1 (OpenVLA-OFT, Kim et al. 2025).

OpenVLA-OFT replaces autoregressive action tokens with one forward pass: empty action slots go
through the model together and an MLP reads each slot's hidden state out as an action. Here:

    mode="queries"   k learned action queries cross-attend to the conditioning tokens
                     (n_layers CrossAttentionFusion blocks), then an MLP per query -> (B, k, A)
    mode="pooled"    an MLP from the pooled conditioning to the flattened chunk (B, k * A)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from librobot_models.heads.base import ActionHead, Conditioning, HeadConfig, masked_mean
from librobot_models.layers import MLP, CrossAttentionFusion

MODES = ("queries", "pooled")


@dataclass(frozen=True)
class MLPOFTConfig(HeadConfig):
    name: ClassVar[str] = "mlp_oft"

    mode: str = "queries"  # "queries": action queries attend to cond tokens; "pooled": MLP on pooled cond

    def validate(self) -> None:
        super().validate()
        self.check_choice("mode", MODES)

    def create(self) -> MLPOFTHead:
        return MLPOFTHead(self)


class MLPOFTHead(ActionHead):
    def __init__(self, config: MLPOFTConfig) -> None:
        super().__init__(config)
        c, D = config, config.hidden_dim
        if c.mode == "queries":
            self.queries = nn.Parameter(torch.randn(1, c.chunk_size, D) * 0.02)  # (1, k, D)
            self.cond_in = nn.Linear(c.cond_dim, D)
            self.blocks = nn.ModuleList(
                CrossAttentionFusion(D, c.n_heads, dropout=c.dropout) for _ in range(c.n_layers)
            )
            self.action_out = MLP(D, [D], c.action_dim, act="gelu")
        else:
            out_dim = c.chunk_size * c.action_dim
            self.mlp = MLP(c.cond_dim, [D] * c.n_layers, out_dim, act="gelu", dropout=c.dropout)

    def forward(self, cond: Conditioning) -> torch.Tensor:
        """Conditioning -> actions (B, k, A)."""
        c = self.config
        if c.mode == "pooled":
            return self.mlp(cond.as_pooled()).view(-1, c.chunk_size, c.action_dim)
        tokens, padding = cond.as_tokens()  # (B, L, cond_dim), (B, L) | None
        context = self.cond_in(tokens)  # (B, L, D)
        x = self.queries.expand(cond.batch_size, -1, -1)  # (B, k, D)
        for block in self.blocks:
            x = block(x, context, padding)
        return self.action_out(x)  # (B, k, A)

    def loss(
        self, cond: Conditioning, actions: torch.Tensor, action_is_pad: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        action_is_pad = self.check_inputs(cond, actions, action_is_pad)
        l1 = masked_mean((self(cond) - actions).abs(), action_is_pad)
        return l1, {"loss": l1.item(), "l1": l1.item()}

    @torch.no_grad()
    def sample(self, cond: Conditioning, generator: torch.Generator | None = None) -> torch.Tensor:
        """Deterministic: the generator is not used."""
        self.check_inputs(cond)
        return self(cond)
