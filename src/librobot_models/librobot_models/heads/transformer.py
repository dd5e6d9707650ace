"""Transformer decoder head: k learned action queries, self-attention among them and cross-attention
to the conditioning tokens (the action decoder of ACT and DETR-style policies), regressed with L1 or L2.

    queries (1, k, D) -> TransformerDecoder(memory = projected cond tokens) -> Linear -> (B, k, A)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from librobot_models.heads.base import ActionHead, Conditioning, HeadConfig, masked_mean
from librobot_models.layers import TransformerDecoder

LOSSES = ("l1", "l2")


@dataclass(frozen=True)
class TransformerHeadConfig(HeadConfig):
    name: ClassVar[str] = "transformer"

    loss: str = "l1"  # "l1" (ACT) or "l2"
    pre_norm: bool = True  # norm before each sublayer; False is the post-norm of ACT / DETR

    def validate(self) -> None:
        super().validate()
        self.check_choice("loss", LOSSES)
        self.check("pre_norm", isinstance(self.pre_norm, bool), "true or false")

    def create(self) -> TransformerHead:
        return TransformerHead(self)


class TransformerHead(ActionHead):
    def __init__(self, config: TransformerHeadConfig) -> None:
        super().__init__(config)
        c, D = config, config.hidden_dim
        self.queries = nn.Parameter(torch.randn(1, c.chunk_size, D) * 0.02)  # (1, k, D)
        self.cond_in = nn.Linear(c.cond_dim, D)
        self.decoder = TransformerDecoder(
            c.n_layers, D, c.n_heads, 4 * D, c.dropout, act="gelu", pre_norm=c.pre_norm
        )
        self.action_out = nn.Linear(D, c.action_dim)

    def forward(self, cond: Conditioning) -> torch.Tensor:
        """Conditioning -> actions (B, k, A)."""
        tokens, padding = cond.as_tokens()  # (B, L, cond_dim), (B, L) | None
        queries = self.queries.expand(cond.batch_size, -1, -1)  # (B, k, D)
        x = self.decoder(queries, self.cond_in(tokens), memory_key_padding_mask=padding)  # (B, k, D)
        return self.action_out(x)  # (B, k, A)

    def loss(
        self, cond: Conditioning, actions: torch.Tensor, action_is_pad: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        action_is_pad = self.check_inputs(cond, actions, action_is_pad)
        error = self(cond) - actions  # (B, k, A)
        per_entry = error.abs() if self.config.loss == "l1" else error**2
        loss = masked_mean(per_entry, action_is_pad)
        return loss, {"loss": loss.item(), self.config.loss: loss.item()}

    @torch.no_grad()
    def sample(self, cond: Conditioning, generator: torch.Generator | None = None) -> torch.Tensor:
        """Deterministic: the generator is not used."""
        self.check_inputs(cond)
        return self(cond)
