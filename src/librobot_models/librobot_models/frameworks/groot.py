"""GR00T-style: a frozen VLM as "System 2", a flow-matching diffusion transformer as "System 1"
(NVIDIA, "GR00T N1: An Open Foundation Model for Generalist Humanoid Robots", arXiv:2503.14734).

  every camera image + instruction --VLM, cut after its first round(f * n_layers) language layers-->
      tokens (B, L, D_vlm)        GR00T N1 reads a middle layer (12 of its LLM's 24): faster, and better
  --LayerNorm, Linear--> (B, L, cond_dim) --vl_adapter: self-attention layers (train while the VLM is
      frozen; GR00T N1.5's adapter)--> VL tokens
  state --MLP--> s (B, cond_dim)                                        (GR00T's state encoder)
  flow head: rectified flow, training times from Beta(1.5, 1), 4 Euler steps at inference;
      velocity network = the shared ChunkDenoiser, a DiT: adaLN-style FiLM of the action tokens by
      time + s, self-attention over the chunk, cross-attention to [time + s, s, VL tokens]

GR00T's VLM is Eagle-2, not available here: any registered VLM takes its place (`vlm`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from librobot_models.config import builds, is_int, is_number
from librobot_models.frameworks.common import (
    VLMFramework,
    VLMFrameworkConfig,
    VLMProjection,
    check_positive_ints,
)
from librobot_models.heads import Conditioning, FlowHead, RectifiedFlowConfig
from librobot_models.layers import MLPStateEncoder, TransformerEncoder
from librobot_models.registry import register_vla


@register_vla("groot", aliases=("groot-n1", "gr00t"))
@dataclass(frozen=True)
class GR00TConfig(VLMFrameworkConfig):
    """The VLM fields (vlm, vlm_tiny, freeze_vlm, vlm_lora_rank, vlm_dtype, cond_dim) come from
    VLMFrameworkConfig."""

    vlm: str = "qwen2-vl-2b"  # SigLIP + a small LLM, the closest registered relative of Eagle-2
    freeze_vlm: bool = True  # GR00T N1 trains only the adapter, the state encoder and the DiT

    # -- System 2 features --------------------------------------------------------------------------
    vlm_layer_fraction: float = 0.5  # keep the first round(f * n_layers) (>= 1) language layers
    vl_adapter_layers: int = 1  # self-attention layers over the projected VLM tokens (0: none)
    vl_adapter_heads: int = 4

    # -- System 1 -----------------------------------------------------------------------------------
    state_hidden_dim: int = 256  # hidden width of the state MLP
    head: RectifiedFlowConfig = field(
        default_factory=lambda: RectifiedFlowConfig(
            hidden_dim=256, n_layers=4, n_heads=8, time_sampling="beta", n_sample_steps=4
        )
    )

    def validate(self) -> None:
        super().validate()
        self.check(
            "vlm_layer_fraction",
            is_number(self.vlm_layer_fraction) and 0 < self.vlm_layer_fraction <= 1,
            "a number in (0, 1]",
        )
        check_positive_ints(self, "vl_adapter_heads", "state_hidden_dim")
        layers = self.vl_adapter_layers
        self.check("vl_adapter_layers", is_int(layers) and layers >= 0, "an int >= 0")
        self.check(
            "cond_dim",
            self.cond_dim % self.vl_adapter_heads == 0,
            f"a multiple of vl_adapter_heads ({self.vl_adapter_heads})",
        )


@builds(GR00TConfig)
class GR00T(VLMFramework):
    def __init__(
        self, config: GR00TConfig, vlm_pretrained: str | Path | None = None, vlm_tokenizer: Any = None
    ) -> None:
        super().__init__(config, vlm_pretrained, vlm_tokenizer)
        c, D = config, config.cond_dim
        n_layers = len(self.backbone.language_layers())
        self.backbone.keep_language_layers(max(1, round(c.vlm_layer_fraction * n_layers)))
        self.vl_proj = VLMProjection(self.backbone.get_embedding_dim(), D)
        self.vl_adapter = (
            TransformerEncoder(c.vl_adapter_layers, D, c.vl_adapter_heads, 4 * D, 0.0, "gelu", pre_norm=True)
            if c.vl_adapter_layers
            else None
        )
        self.state_encoder = MLPStateEncoder(c.state_dim, D, hidden_dim=c.state_hidden_dim)
        self.head = FlowHead(c.head)

    def conditioning(self, batch: dict[str, Any]) -> Conditioning:
        state = self.state_encoder(batch["state"])  # (B, D)
        cond = self.vl_proj(self.encode(batch), pooled=state)  # tokens (B, L, D), padding (B, L)
        if self.vl_adapter is None:
            return cond
        tokens = self.vl_adapter(cond.tokens, key_padding_mask=cond.padding_mask)  # (B, L, D)
        return Conditioning(tokens=tokens, padding_mask=cond.padding_mask, pooled=state)
