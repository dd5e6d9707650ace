"""OpenVLA-OFT-style: a VLM and parallel decoding of the whole chunk, trained with L1 (Kim et al. 2025,
"Fine-Tuning Vision-Language-Action Models: Optimizing Speed and Success", arXiv:2502.19645).

  every camera image + instruction --VLM (LoRA fine-tuned, as OFT)--> tokens (B, L, D_vlm)
      --LayerNorm, Linear--> (B, L, cond_dim)
  state --MLP (OFT's proprio projector)--> one more conditioning token (B, cond_dim)
  MLP-OFT head: k action queries cross-attend to [state, VLM tokens] in parallel, then an MLP per query
      -> the chunk (B, k, A) in one forward pass; loss = L1 over the non-padded steps

Where OFT feeds empty action embeddings through the language model itself (bidirectional attention),
the queries here attend to the VLM's output tokens in the head's own attention layers. OpenVLA's VLM is
Prismatic (DINOv2 + SigLIP, Llama 2 7B); LLaVA-1.5 (CLIP, Llama-based) is its closest registered relative.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from librobot_models.config import builds
from librobot_models.frameworks.common import VLMFramework, VLMFrameworkConfig, VLMProjection, check_bools
from librobot_models.heads import Conditioning, MLPOFTConfig, MLPOFTHead
from librobot_models.layers import MLPStateEncoder
from librobot_models.registry import register_vla


@register_vla("openvla", aliases=("openvla-oft", "openvla_oft"))
@dataclass(frozen=True)
class OpenVLAConfig(VLMFrameworkConfig):
    """The VLM fields (vlm, vlm_tiny, freeze_vlm, vlm_lora_rank, vlm_dtype, cond_dim) come from
    VLMFrameworkConfig."""

    vlm: str = "llava-1.5-7b"
    vlm_lora_rank: int = 32  # OFT fine-tunes the VLM with LoRA rank 32
    use_state: bool = True  # the proprioceptive state as a conditioning token (OFT's proprio input)
    head: MLPOFTConfig = field(
        default_factory=lambda: MLPOFTConfig(mode="queries", hidden_dim=256, n_layers=2, n_heads=4)
    )

    def validate(self) -> None:
        super().validate()
        check_bools(self, "use_state")


@builds(OpenVLAConfig)
class OpenVLA(VLMFramework):
    def __init__(
        self, config: OpenVLAConfig, vlm_pretrained: str | Path | None = None, vlm_tokenizer: Any = None
    ) -> None:
        super().__init__(config, vlm_pretrained, vlm_tokenizer)
        c = config
        self.vl_proj = VLMProjection(self.backbone.get_embedding_dim(), c.cond_dim)
        self.state_encoder = MLPStateEncoder(c.state_dim, c.cond_dim) if c.use_state else None
        self.head = MLPOFTHead(c.head)

    def conditioning(self, batch: dict[str, Any]) -> Conditioning:
        state = self.state_encoder(batch["state"]) if self.state_encoder is not None else None  # (B, cond)
        return self.vl_proj(self.encode(batch), pooled=state)  # tokens (B, L, cond) [+ state in front]
