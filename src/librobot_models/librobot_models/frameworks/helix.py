"""Helix-style: a slow "System 2" VLM that thinks and a fast "System 1" visuomotor policy that acts
(Figure AI 2025, "Helix: A Vision-Language-Action Model for Generalist Humanoid Control").

  System 2 (slow_rate_hz; Helix: 7-9 Hz)
      every camera image + instruction --VLM--> pooled (B, D_vlm) --MLP--> latent (B, cond_dim)
  System 1 (fast_rate_hz; Helix: 200 Hz)
      camera images --ImageTokenizer (conv)--> tokens (B, N_cam * h * w, cond)
      [latent, Linear(state), image tokens] + type embeddings --transformer encoder--> memory
      transformer head: k learned queries --decoder(memory)--> chunk (B, k, A), L1 loss
Training runs both systems on every batch, end to end, as Helix does (Helix also feeds System 2 an
older observation than System 1, to mimic the latency gap at deployment; batches here hold one time).

Inference: the latent is cached. Each `sample_actions` call is one System-1 step; the VLM runs on
the first call, then again once the latent is 1 / slow_rate_hz old (at once when the instruction or
the batch size changes); `reset()` forgets it. Age is measured on the batch's `time_s` (the
observation time, which Policy passes on: the policy node and evaluate give it) so the slow rate
holds whatever the rate of calls; without it each call counts as 1 / fast_rate_hz (e.g. 200 Hz and
8 Hz: the VLM runs on every 25th call). `Policy.reset()` at each episode start calls `reset()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from librobot_models.config import builds, is_number
from librobot_models.frameworks.common import (
    VLMFramework,
    VLMFrameworkConfig,
    check_dropout,
    check_positive_ints,
    check_vision_channels,
    instructions,
)
from librobot_models.heads import Conditioning, TransformerHead, TransformerHeadConfig
from librobot_models.layers import MLP, ImageTokenizer, TransformerEncoder
from librobot_models.registry import register_vla


@register_vla("helix")
@dataclass(frozen=True)
class HelixConfig(VLMFrameworkConfig):
    """The VLM fields (vlm, vlm_tiny, freeze_vlm, vlm_lora_rank, vlm_dtype, cond_dim) come from
    VLMFrameworkConfig; cond_dim is also the latent's size and System 1's token width."""

    vlm: str = "qwen2-vl-7b"  # Helix's System 2 is a 7B open-weight VLM
    freeze_vlm: bool = False  # Helix trains both systems end to end

    # -- rates (inference) --------------------------------------------------------------------------
    slow_rate_hz: float = 8.0  # System 2: the latent is refreshed this often
    fast_rate_hz: float = 200.0  # System 1: the call period when the batch carries no time_s

    # -- System 1 -----------------------------------------------------------------------------------
    vision_channels: tuple[int, ...] = (32, 64, 128, 128)  # one stride-2 stage each: 96x128 -> 6x8 tokens
    s1_layers: int = 2  # encoder layers over [latent, state, image tokens]
    s1_heads: int = 4
    dropout: float = 0.1
    head: TransformerHeadConfig = field(
        default_factory=lambda: TransformerHeadConfig(hidden_dim=256, n_layers=1, n_heads=4, loss="l1")
    )

    def validate(self) -> None:
        super().validate()
        for name in ("slow_rate_hz", "fast_rate_hz"):
            self.check(name, is_number(getattr(self, name)) and getattr(self, name) > 0, "a number > 0")
        self.check(
            "fast_rate_hz", self.fast_rate_hz >= self.slow_rate_hz, f">= slow_rate_hz ({self.slow_rate_hz})"
        )
        check_vision_channels(self)
        check_positive_ints(self, "s1_layers", "s1_heads")
        self.check(
            "cond_dim", self.cond_dim % self.s1_heads == 0, f"a multiple of s1_heads ({self.s1_heads})"
        )
        self.check("cond_dim", self.cond_dim % 4 == 0, "a multiple of 4 (2D sinusoidal positions)")
        check_dropout(self)


@builds(HelixConfig)
class Helix(VLMFramework):
    def __init__(
        self, config: HelixConfig, vlm_pretrained: str | Path | None = None, vlm_tokenizer: Any = None
    ) -> None:
        super().__init__(config, vlm_pretrained, vlm_tokenizer)
        c, D = config, config.cond_dim
        # System 2: VLM (self.backbone) -> latent
        self.to_latent = MLP(self.backbone.get_embedding_dim(), [D], D, act="gelu")
        # System 1: images, state and the latent -> action chunk
        self.s1_vision = ImageTokenizer(c.vision_channels, D, c.image_size, len(c.camera_names))
        self.state_in = nn.Linear(c.state_dim, D)
        self.type_embed = nn.Parameter(torch.randn(1, 2, D) * 0.02)  # tells [latent, state] apart
        self.s1_encoder = TransformerEncoder(
            c.s1_layers, D, c.s1_heads, 4 * D, c.dropout, "gelu", pre_norm=True
        )
        self.head = TransformerHead(c.head)
        # inference cache (not state_dict): the latest latent, its instructions and time, calls so far
        self._latent: torch.Tensor | None = None
        self._latent_text: list[str] | None = None
        self._latent_time = 0.0
        self._calls = 0

    def system2(self, batch: dict[str, Any]) -> torch.Tensor:
        """The latent (B, cond_dim) from every camera image and the instruction."""
        pooled = self.encode(batch).pooled  # (B, D_vlm), in the VLM's dtype
        return self.to_latent(pooled.to(self.state_in.weight.dtype))

    def system1(self, batch: dict[str, Any], latent: torch.Tensor) -> Conditioning:
        """Conditioning for the head: encoder memory over [latent, state, image tokens] (B, 2 + N*h*w, D)."""
        state = self.state_in(batch["state"])  # (B, D)
        tokens = torch.cat(
            [torch.stack([latent, state], dim=1) + self.type_embed, self.s1_vision(batch["images"])], dim=1
        )  # (B, 2 + N*h*w, D)
        return Conditioning(tokens=self.s1_encoder(tokens))

    def conditioning(self, batch: dict[str, Any]) -> Conditioning:
        """Training: both systems on the same batch, gradients through the latent into the VLM."""
        return self.system1(batch, self.system2(batch))

    def cached_latent(self, obs: dict[str, Any]) -> torch.Tensor:
        """The cached latent, recomputed when absent, 1 / slow_rate_hz old (or from the future: time
        went back), or made for other instructions or another batch size."""
        text = instructions(obs, obs["state"].shape[0])
        now = obs.get("time_s")
        if now is None:
            now = self._calls / self.config.fast_rate_hz
        self._calls += 1
        age = now - self._latent_time
        if (
            self._latent is None
            or not 0.0 <= age < 1.0 / self.config.slow_rate_hz - 1e-9
            or self._latent_text != text
            or self._latent.shape[0] != len(text)
        ):
            self._latent, self._latent_text, self._latent_time = self.system2(obs), text, now
        return self._latent

    @torch.no_grad()
    def sample_actions(self, obs: dict[str, Any], generator: torch.Generator | None = None) -> torch.Tensor:
        """One System-1 step (B, chunk_size, action_dim) on the cached System-2 latent."""
        return self.head.sample(self.system1(obs, self.cached_latent(obs)), generator)

    def reset(self) -> None:
        """Forget the cached latent: the next call runs System 2 (call at every episode start)."""
        self._latent, self._latent_text, self._latent_time, self._calls = None, None, 0.0, 0
