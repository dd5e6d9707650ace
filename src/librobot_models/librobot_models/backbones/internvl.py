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

from transformers import InternVLConfig as HFInternVLConfig
from transformers import PretrainedConfig

from librobot_models.backbones.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DecoderVLMConfig,
    VLMBackbone,
    decoder_architecture,
    vit_architecture,
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
            vision_config=self.hf_vit_config(
                attention_bias=True,
                image_size=list(self.image_size),
                patch_size=[self.patch_size, self.patch_size],
            ),
            text_config=self.hf_text_config(
                special_ids,
                model_type="llama",
                max_position_embeddings=32768,
                tie_word_embeddings=self.tie_word_embeddings,
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
            **vit_architecture(vision),
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


# -- variants: architecture of the published checkpoints (OpenGVLab/InternVL2-2B, -8B) -------------------
INTERN_VIT_300M = dict(
    vision_hidden_size=1024, vision_layers=24, vision_heads=16, vision_intermediate_size=4096, patch_size=14
)

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
        **INTERN_VIT_300M,
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
        **INTERN_VIT_300M,
    )
