"""RT-2-style: a VLM that emits actions as discrete tokens, decoded one by one (Brohan et al. 2023,
"RT-2: Vision-Language-Action Models Transfer Web Knowledge to Robotic Control", arXiv:2307.15818).

  every camera image + instruction --VLM (fine-tuned)--> tokens (B, L, D_vlm) --LayerNorm, Linear--> cond
  actions (B, k, A) / action_range --> 256 uniform bins per value over [-1, 1] --> k * A tokens, step-major
  autoregressive head: a causal decoder over [BOS, tok_1 .. tok_{n-1}] cross-attending to the VLM tokens,
      cross-entropy on the next token (teacher forcing); greedy decoding at inference, then bin centres
      * action_range

Actions arrive standardised (zero mean, unit variance), so `action_range` (in standard deviations) is
what the [-1, 1] bin range covers: values beyond it are clipped to the outermost bins, as RT-2 clips
to its normalisation range. RT-2 writes its action tokens into the VLM's own vocabulary and decodes
them with the language model; here a separate token decoder reads the VLM's output tokens. RT-2 used
PaLI-X and PaLM-E; PaliGemma is the open relative of PaLI. RT-2 has no proprioceptive input
(use_state = false); use_state = true adds the state as a conditioning token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from librobot_models.config import builds, is_number
from librobot_models.frameworks.common import VLMFramework, VLMFrameworkConfig, VLMProjection, check_bools
from librobot_models.heads import AutoregressiveConfig, AutoregressiveHead, Conditioning
from librobot_models.registry import register_vla


@register_vla("rt2", aliases=("rt-2",))
@dataclass(frozen=True)
class RT2Config(VLMFrameworkConfig):
    """The VLM fields (vlm, vlm_tiny, freeze_vlm, vlm_lora_rank, vlm_dtype, cond_dim) come from
    VLMFrameworkConfig."""

    vlm: str = "paligemma-3b"
    freeze_vlm: bool = False  # RT-2 co-fine-tunes the whole VLM
    use_state: bool = False
    action_range: float = 3.0  # the bins cover +-this many standard deviations of each action dimension
    head: AutoregressiveConfig = field(
        default_factory=lambda: AutoregressiveConfig(
            tokenizer="uniform", n_bins=256, temperature=0.0, hidden_dim=256, n_layers=2, n_heads=4
        )
    )

    def validate(self) -> None:
        super().validate()
        check_bools(self, "use_state")
        self.check("action_range", is_number(self.action_range) and self.action_range > 0, "a number > 0")


@builds(RT2Config)
class RT2(VLMFramework):
    def __init__(
        self, config: RT2Config, vlm_pretrained: str | Path | None = None, vlm_tokenizer: Any = None
    ) -> None:
        super().__init__(config, vlm_pretrained, vlm_tokenizer)
        c = config
        self.vl_proj = VLMProjection(self.backbone.get_embedding_dim(), c.cond_dim)
        self.state_proj = nn.Linear(c.state_dim, c.cond_dim) if c.use_state else None
        self.head = AutoregressiveHead(c.head)

    # -- action tokens ------------------------------------------------------------------------------
    def actions_to_tokens(self, actions: torch.Tensor) -> torch.Tensor:
        """Standardised actions (B, k, A) -> tokens (B, k * A) in [0, n_bins), step-major."""
        no_pad = torch.zeros(actions.shape[:2], dtype=torch.bool, device=actions.device)
        return self.head.tokenizer.encode(actions / self.config.action_range, no_pad)[0]

    def tokens_to_actions(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (B, k * A) -> standardised actions (B, k, A), the centre of each token's bin."""
        return self.head.tokenizer.decode(tokens) * self.config.action_range

    # -- the model contract -------------------------------------------------------------------------
    def conditioning(self, batch: dict[str, Any]) -> Conditioning:
        state = self.state_proj(batch["state"]) if self.state_proj is not None else None  # (B, cond)
        return self.vl_proj(self.encode(batch), pooled=state)  # tokens (B, L, cond) [+ state in front]

    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        actions = batch["actions"] / self.config.action_range  # (B, k, A), [-1, 1] within the range
        return self.head.loss(self.conditioning(batch), actions, batch.get("action_is_pad"))

    @torch.no_grad()
    def sample_actions(self, obs: dict[str, Any], generator: torch.Generator | None = None) -> torch.Tensor:
        """Greedy decoding (temperature 0) of k * A tokens -> (B, k, A) standardised actions."""
        return self.head.sample(self.conditioning(obs), generator) * self.config.action_range
