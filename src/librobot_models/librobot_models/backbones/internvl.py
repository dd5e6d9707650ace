"""InternVL2: an InternViT-300M vision encoder whose patch grid is pixel-shuffled (2 x 2 patches ->
one token of 4x the channels) and fed through an MLP projector into a decoder language model.

transformers class: InternVLForConditionalGeneration (the native port of InternVL).

The published InternVL2-2B and -8B language models are InternLM2 (1.8 B) and InternLM2.5 (7 B).
transformers has no InternLM2 class; its layers are those of Llama (RMSNorm, SwiGLU, grouped-query
attention, rotary positions, untied embeddings) with fused q/k/v weights, so the language model is
built as a Llama of InternLM2's sizes, with the same parameter count. A pretrained directory must
therefore be in transformers' native InternVL layout (the published repositories use remote code
and need converting: split InternLM2's `wqkv` into q/k/v projections).

Prompt per sample: for each image <img> <IMG_CONTEXT> x tokens </img>, then the text, where tokens =
(image_size / patch)^2 * downsample_ratio^2 (256 at 448 px). Positions of the InternViT are
learned for one resolution: image_size is part of the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from transformers import InternVLConfig as HFInternVLConfig
from transformers import PretrainedConfig

from librobot_models.backbones.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DecoderVLMConfig,
    VLMBackbone,
    decoder_architecture,
)
from librobot_models.backbones.tokenizer import token_id
from librobot_models.config import is_number
from librobot_models.registry import register_vlm


@dataclass(frozen=True, kw_only=True)
class InternVL2Config(DecoderVLMConfig):
    """InternVL2 (448 px tiles; this wrapper feeds each image as one tile, without dynamic tiling)."""

    family: ClassVar[str] = "internvl"
    model_type: ClassVar[str] = "internvl"
    special_tokens: ClassVar[dict[str, str]] = {
        "unk": "<unk>",
        "bos": "<s>",
        "eos": "</s>",
        "pad": "<pad>",
        "im_start": "<|im_start|>",
        "im_end": "<|im_end|>",
        "image_start": "<img>",
        "image_end": "</img>",
        "image": "<IMG_CONTEXT>",
    }

    downsample_ratio: float = 0.5  # pixel shuffle: (grid * ratio)^2 tokens of grid^2 patches

    image_size: tuple[int, int] = (448, 448)  # fixed by the InternViT position embeddings
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD

    def validate(self) -> None:
        super().validate()
        self.check(
            "downsample_ratio",
            is_number(self.downsample_ratio) and 0 < self.downsample_ratio <= 1,
            "in (0, 1]",
        )
        self.check("image_size", self.image_size[0] == self.image_size[1], "a square (InternViT)")
        grid = self.image_size[0] // self.patch_size
        self.check(
            "image_size",
            self.image_size[0] % self.patch_size == 0 and (grid * self.downsample_ratio).is_integer(),
            f"a multiple of patch_size ({self.patch_size}) whose grid times downsample_ratio is whole",
        )

    def to_hf(self, special_ids: dict[str, int]) -> PretrainedConfig:
        return HFInternVLConfig(
            vision_config=dict(
                hidden_size=self.vision_hidden_size,
                intermediate_size=self.vision_intermediate_size,
                num_hidden_layers=self.vision_layers,
                num_attention_heads=self.vision_heads,
                attention_bias=True,
                image_size=list(self.image_size),
                patch_size=[self.patch_size, self.patch_size],
            ),
            text_config=dict(
                model_type="llama",
                hidden_size=self.hidden_size,
                intermediate_size=self.intermediate_size,
                num_hidden_layers=self.num_layers,
                num_attention_heads=self.num_heads,
                num_key_value_heads=self.num_kv_heads,
                vocab_size=self.vocab_size,
                max_position_embeddings=32768,
                rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
                tie_word_embeddings=self.tie_word_embeddings,
                pad_token_id=special_ids["pad"],
                bos_token_id=special_ids["bos"],
                eos_token_id=special_ids["eos"],
            ),
            image_token_id=special_ids["image"],
            image_seq_length=self.tokens_per_image(),
            downsample_ratio=self.downsample_ratio,
            tie_word_embeddings=self.tie_word_embeddings,
        )

    def tokens_per_image(self) -> int:
        return int(self.image_size[0] // self.patch_size * self.downsample_ratio) ** 2

    @classmethod
    def architecture_from_hf(cls, hf_config: PretrainedConfig) -> dict[str, Any]:
        vision = hf_config.vision_config
        return dict(
            **decoder_architecture(hf_config),
            vision_hidden_size=vision.hidden_size,
            vision_layers=vision.num_hidden_layers,
            vision_heads=vision.num_attention_heads,
            vision_intermediate_size=vision.intermediate_size,
            patch_size=vision.patch_size[0],
            image_size=tuple(vision.image_size),
            downsample_ratio=float(hf_config.downsample_ratio),
        )

    def tiny(self) -> InternVL2Config:
        return self.replace(**self.tiny_text(), **self.tiny_vision(), image_size=(56, 56))

    @classmethod
    def backbone_class(cls) -> type[VLMBackbone]:
        return InternVL2Backbone


class InternVL2Backbone(VLMBackbone):
    """InternVL2 behind the VLMBackbone interface."""

    def __init__(self, config: InternVL2Config, model: Any, tokenizer: Any) -> None:
        super().__init__(config, model, tokenizer)
        self.image_id = model.config.image_token_id
        self.start_id, self.end_id = token_id(tokenizer, "<img>"), token_id(tokenizer, "</img>")

    def image_tokens_per_image(self) -> int:
        return self.config.tokens_per_image()

    def prompt_ids(self, text_ids: list[int], num_images: int) -> list[int]:
        image = [self.start_id] + [self.image_id] * self.image_tokens_per_image() + [self.end_id]
        return image * num_images + list(text_ids)

    def model_inputs(
        self, input_ids: torch.Tensor, mask: torch.Tensor, pixels: torch.Tensor
    ) -> dict[str, Any]:
        return dict(input_ids=input_ids, attention_mask=mask.long(), pixel_values=pixels)


# -- variants: architecture of the published checkpoints (OpenGVLab/InternVL2-2B, -8B) -------------------
@register_vlm("internvl2-2b", aliases=("internvl2", "internvl"))
def internvl2_2b() -> InternVL2Config:
    """InternVL2-2B: 2.21 B parameters (InternViT-300M, InternLM2-1.8B)."""
    return InternVL2Config(
        hidden_size=2048,
        num_layers=24,
        num_heads=16,
        num_kv_heads=8,
        intermediate_size=8192,
        vocab_size=92553,
        tie_word_embeddings=False,
        rope_theta=1e6,
        vision_hidden_size=1024,
        vision_layers=24,
        vision_heads=16,
        vision_intermediate_size=4096,
        patch_size=14,
    )


@register_vlm("internvl2-8b")
def internvl2_8b() -> InternVL2Config:
    """InternVL2-8B: 8.08 B parameters (InternViT-300M, InternLM2.5-7B)."""
    return InternVL2Config(
        hidden_size=4096,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        intermediate_size=14336,
        vocab_size=92553,
        tie_word_embeddings=False,
        rope_theta=1e6,
        vision_hidden_size=1024,
        vision_layers=24,
        vision_heads=16,
        vision_intermediate_size=4096,
        patch_size=14,
    )
