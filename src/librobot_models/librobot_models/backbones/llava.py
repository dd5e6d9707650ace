"""LLaVA-1.5: a CLIP ViT-L/14 at 336 px whose second-to-last layer's patch tokens (CLS dropped)
go through a two-layer MLP into a Vicuna (Llama-2) language model.

transformers class: LlavaForConditionalGeneration.

Prompt per sample: <s>, <image> x (image_size / patch)^2 per image (576 at 336 px), then the text.
The CLIP position embeddings are learned for one resolution: image_size is part of the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from transformers import LlavaConfig as HFLlavaConfig
from transformers import PretrainedConfig

from librobot_models.backbones.base import (
    CLIP_MEAN,
    CLIP_STD,
    DecoderVLMConfig,
    VLMBackbone,
    decoder_architecture,
    vit_architecture,
)
from librobot_models.registry import register_vlm


@dataclass(frozen=True, kw_only=True)
class LlavaConfig(DecoderVLMConfig):
    """LLaVA-1.5."""

    family: ClassVar[str] = "llava"
    model_type: ClassVar[str] = "llava"
    special_tokens: ClassVar[dict[str, str]] = {
        "unk": "<unk>",
        "bos": "<s>",
        "eos": "</s>",
        "image": "<image>",
        "pad": "<pad>",
    }

    vision_feature_layer: int = -2  # which CLIP layer's tokens feed the projector

    image_size: tuple[int, int] = (336, 336)  # fixed by the CLIP position embeddings
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD

    def validate(self) -> None:
        super().validate()
        self.check("image_size", self.image_size[0] == self.image_size[1], "a square (CLIP)")
        self.check_image_multiple(self.patch_size)
        self.check(
            "vision_feature_layer",
            -self.vision_layers <= self.vision_feature_layer < 0,
            f"a negative layer index in [-{self.vision_layers}, -1]",
        )

    def to_hf(self, special_ids: dict[str, int]) -> PretrainedConfig:
        return HFLlavaConfig(
            vision_config=self.hf_vit_config(
                model_type="clip_vision_model", patch_size=self.patch_size, image_size=self.image_size[0]
            ),
            text_config=self.hf_text_config(special_ids, model_type="llama", max_position_embeddings=4096),
            image_token_index=special_ids["image"],
            image_seq_length=(self.image_size[0] // self.patch_size) ** 2,
            vision_feature_layer=self.vision_feature_layer,
            vision_feature_select_strategy="default",
            tie_word_embeddings=self.tie_word_embeddings,
        )

    @classmethod
    def architecture_from_hf(cls, hf_config: PretrainedConfig) -> dict[str, Any]:
        vision = hf_config.vision_config
        return dict(
            **decoder_architecture(hf_config),
            **vit_architecture(vision),
            patch_size=vision.patch_size,
            image_size=(vision.image_size, vision.image_size),
            vision_feature_layer=hf_config.vision_feature_layer,
        )

    def tiny(self) -> LlavaConfig:
        return self.replace(**self.tiny_text(), **self.tiny_vision(), image_size=(56, 56))

    @classmethod
    def backbone_class(cls) -> type[VLMBackbone]:
        return LlavaBackbone


class LlavaBackbone(VLMBackbone):
    """LLaVA-1.5 behind the VLMBackbone interface."""

    def __init__(self, config: LlavaConfig, model: Any, tokenizer: Any) -> None:
        super().__init__(config, model, tokenizer)
        self.image_id, self.bos_id = model.config.image_token_id, self.text_config().bos_token_id

    def image_tokens_per_image(self) -> int:
        return (self.config.image_size[0] // self.config.patch_size) ** 2

    def prompt_ids(self, text_ids: list[int], num_images: int) -> list[int]:
        return [self.bos_id] + [self.image_id] * (self.image_tokens_per_image() * num_images) + list(text_ids)

    def unused_modules(self) -> list[str]:
        """Also the CLIP layers after `vision_feature_layer` and CLIP's post-norm (of its pooled output)."""
        first_unused = self.config.vision_layers + self.config.vision_feature_layer + 1
        tower = self.vision_model
        layers = [f"{tower}.encoder.layers.{i}" for i in range(first_unused, self.config.vision_layers)]
        return [*super().unused_modules(), *layers, f"{tower}.post_layernorm"]


# -- variants: architecture of the published checkpoints (llava-hf/llava-1.5-7b-hf, -13b-hf) ------------
CLIP_VIT_L14 = dict(
    vision_hidden_size=1024, vision_layers=24, vision_heads=16, vision_intermediate_size=4096, patch_size=14
)

@register_vlm("llava-1.5-7b", aliases=("llava-7b", "llava", "llava-1.5"))
def llava_15_7b() -> LlavaConfig:
    """LLaVA-1.5-7B: 7.06 B parameters (CLIP ViT-L/14-336 304 M, Vicuna-7B 6.7 B, MLP projector 21 M)."""
    return LlavaConfig(
        hidden_size=4096,
        num_layers=32,
        num_heads=32,
        num_kv_heads=32,
        intermediate_size=11008,
        vocab_size=32064,
        tie_word_embeddings=False,
        rope_theta=10000.0,
        **CLIP_VIT_L14,
    )


@register_vlm("llava-1.5-13b", aliases=("llava-13b",))
def llava_15_13b() -> LlavaConfig:
    """LLaVA-1.5-13B: 13.35 B parameters (CLIP ViT-L/14-336 304 M, Vicuna-13B 13 B, MLP projector 31 M)."""
    return LlavaConfig(
        hidden_size=5120,
        num_layers=40,
        num_heads=40,
        num_kv_heads=40,
        intermediate_size=13824,
        vocab_size=32064,
        tie_word_embeddings=False,
        rope_theta=10000.0,
        **CLIP_VIT_L14,
    )
