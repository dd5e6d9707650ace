"""PaliGemma: a SigLIP ViT (no pooling head) whose patch tokens, linearly projected, prefix a Gemma
language model; the prefix (image and prompt) attends bidirectionally.

transformers class: PaliGemmaForConditionalGeneration.

Prompt per sample: <image> x (image_size / patch)^2 per image, <bos>, the text, "\\n" (the separator
the published processor puts after the prompt). `token_type_ids` are all 0: the whole input is
prefix, so every token sees every other, as in PaliGemma's prefix-LM pretraining. The SigLIP
position embeddings are learned for one resolution: image_size is part of the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from transformers import PaliGemmaConfig as HFPaliGemmaConfig
from transformers import PretrainedConfig

from librobot_models.backbones.base import (
    HALF,
    DecoderVLMConfig,
    VLMBackbone,
    decoder_architecture,
    vit_architecture,
)
from librobot_models.registry import register_vlm


@dataclass(frozen=True, kw_only=True)
class PaliGemmaConfig(DecoderVLMConfig):
    """PaliGemma (1, 224 px). Gemma has an explicit `head_dim` and multi-query attention."""

    family: ClassVar[str] = "paligemma"
    model_type: ClassVar[str] = "paligemma"
    special_tokens: ClassVar[dict[str, str]] = {
        "pad": "<pad>",
        "eos": "<eos>",
        "bos": "<bos>",
        "unk": "<unk>",
        "image": "<image>",
    }

    head_dim: int

    image_size: tuple[int, int] = (224, 224)  # fixed by the SigLIP position embeddings
    image_mean: tuple[float, float, float] = HALF
    image_std: tuple[float, float, float] = HALF

    def validate(self) -> None:
        super().validate()
        self.check_positive("head_dim")
        self.check("image_size", self.image_size[0] == self.image_size[1], "a square (SigLIP)")
        self.check_image_multiple(self.patch_size)

    def to_hf(self, special_ids: dict[str, int]) -> PretrainedConfig:
        return HFPaliGemmaConfig(
            vision_config=self.hf_vit_config(
                model_type="siglip_vision_model",
                patch_size=self.patch_size,
                image_size=self.image_size[0],
                vision_use_head=False,
            ),
            text_config=self.hf_text_config(special_ids, model_type="gemma", head_dim=self.head_dim),
            projection_dim=self.hidden_size,
            hidden_size=self.hidden_size,
            vocab_size=self.vocab_size,
            image_token_index=special_ids["image"],
            tie_word_embeddings=self.tie_word_embeddings,
        )

    @classmethod
    def architecture_from_hf(cls, hf_config: PretrainedConfig) -> dict[str, Any]:
        text, vision = hf_config.text_config, hf_config.vision_config
        return dict(
            **decoder_architecture(hf_config),
            head_dim=text.head_dim,
            **vit_architecture(vision),
            patch_size=vision.patch_size,
            image_size=(vision.image_size, vision.image_size),
        )

    def tiny(self) -> PaliGemmaConfig:
        return self.replace(
            **self.tiny_text(), **self.tiny_vision(), head_dim=32, patch_size=8, image_size=(32, 32)
        )

    @classmethod
    def backbone_class(cls) -> type[VLMBackbone]:
        return PaliGemmaBackbone


class PaliGemmaBackbone(VLMBackbone):
    """PaliGemma behind the VLMBackbone interface."""

    def __init__(self, config: PaliGemmaConfig, model: Any, tokenizer: Any) -> None:
        super().__init__(config, model, tokenizer)
        self.image_id, self.bos_id = model.config.image_token_id, self.text_config().bos_token_id
        self.separator = tokenizer("\n", add_special_tokens=False)["input_ids"]

    def image_tokens_per_image(self) -> int:
        return (self.config.image_size[0] // self.config.patch_size) ** 2

    def prompt_ids(self, text_ids: list[int], num_images: int) -> list[int]:
        return [self.image_id] * (self.image_tokens_per_image() * num_images) + [
            self.bos_id,
            *text_ids,
            *self.separator,
        ]

    def model_inputs(
        self, input_ids: torch.Tensor, mask: torch.Tensor, pixels: torch.Tensor
    ) -> dict[str, Any]:
        return dict(
            input_ids=input_ids,
            attention_mask=mask.long(),
            pixel_values=pixels,
            token_type_ids=torch.zeros_like(input_ids),  # all prefix: bidirectional attention
        )


# -- variant: architecture of the published checkpoint (google/paligemma-3b-pt-224) ---------------------
@register_vlm("paligemma-3b", aliases=("paligemma",))
def paligemma_3b() -> PaliGemmaConfig:
    """PaliGemma-3B (224 px): 2.92 B parameters (SigLIP-So400m 428 M, Gemma-2B 2.5 B)."""
    return PaliGemmaConfig(
        hidden_size=2048,
        num_layers=18,
        num_heads=8,
        num_kv_heads=1,
        head_dim=256,
        intermediate_size=16384,
        vocab_size=257216,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        vision_hidden_size=1152,
        vision_layers=27,
        vision_heads=16,
        vision_intermediate_size=4304,
        patch_size=14,
    )
