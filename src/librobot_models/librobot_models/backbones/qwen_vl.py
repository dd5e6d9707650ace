"""Qwen2-VL and Qwen3-VL: a ViT over 2D patches whose 2x2 neighbours are merged into one token,
feeding a Qwen language model with multimodal rotary positions (M-RoPE).

transformers classes: Qwen2VLForConditionalGeneration, Qwen3VLForConditionalGeneration.

Inputs the model wants (built here with torch, no image processor):
    pixel_values    (sum of patches, 3 * temporal_patch * patch * patch): every image cut into
                    patch x patch squares, each merge x merge group of patches consecutive, a still
                    image repeated over the `temporal_patch` frames a video patch spans
    image_grid_thw  (N_images, 3): (1, H / patch, W / patch) per image
    mm_token_type_ids (B, L): 1 on image placeholders, 0 elsewhere (drives M-RoPE)
Prompt per sample: for each image <|vision_start|> <|image_pad|> x (H/patch * W/patch / merge^2)
<|vision_end|>, then the text.

Qwen3-VL differs by a 16 px patch, learned position embeddings interpolated to the image grid
(`num_position_embeddings`, a perfect square), "deepstack" features of a few vision layers added to
the first language layers, interleaved M-RoPE, and an explicit `head_dim`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from transformers import PretrainedConfig
from transformers import Qwen2VLConfig as HFQwen2VLConfig
from transformers import Qwen3VLConfig as HFQwen3VLConfig

from librobot_models.backbones.base import (
    CLIP_MEAN,
    CLIP_STD,
    HALF,
    DecoderVLMConfig,
    VLMBackbone,
    decoder_architecture,
)
from librobot_models.config import is_int
from librobot_models.registry import register_vlm

QWEN_SPECIAL_TOKENS = {
    "pad": "<|endoftext|>",
    "im_start": "<|im_start|>",
    "eos": "<|im_end|>",
    "vision_start": "<|vision_start|>",
    "vision_end": "<|vision_end|>",
    "image": "<|image_pad|>",
    "video": "<|video_pad|>",
}


def _rope(theta: float, mrope_section: tuple[int, ...]) -> dict[str, Any]:
    return {"rope_type": "default", "rope_theta": theta, "mrope_section": list(mrope_section)}


def _special_kwargs(special_ids: dict[str, int]) -> dict[str, int]:
    return dict(
        image_token_id=special_ids["image"],
        video_token_id=special_ids["video"],
        vision_start_token_id=special_ids["vision_start"],
        vision_end_token_id=special_ids["vision_end"],
    )


@dataclass(frozen=True, kw_only=True)
class QwenVLConfig(DecoderVLMConfig):
    """What Qwen2-VL and Qwen3-VL share: merged patches and multimodal rotary positions."""

    special_tokens: ClassVar[dict[str, str]] = QWEN_SPECIAL_TOKENS

    mrope_section: tuple[int, int, int]  # rotary pairs for (time, height, width), summing to head_dim / 2
    spatial_merge_size: int = 2  # merge x merge patches -> one language token
    temporal_patch_size: int = 2  # frames per video patch (a still image is repeated)

    def validate(self) -> None:
        super().validate()
        self.check_positive("spatial_merge_size", "temporal_patch_size")
        self.check_image_multiple(self.patch_size * self.spatial_merge_size)
        half_head = self.attention_head_dim() // 2
        self.check(
            "mrope_section",
            isinstance(self.mrope_section, tuple)
            and len(self.mrope_section) == 3
            and all(is_int(v) and v > 0 for v in self.mrope_section)
            and sum(self.mrope_section) == half_head,
            f"three ints > 0 summing to head_dim / 2 = {half_head}",
        )

    def attention_head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def backbone_class(cls) -> type[VLMBackbone]:
        return QwenVLBackbone


@dataclass(frozen=True, kw_only=True)
class Qwen2VLConfig(QwenVLConfig):
    """Qwen2-VL. `vision_hidden_size` is the ViT width (`embed_dim` in transformers); the merger
    projects merged patches to the language width."""

    family: ClassVar[str] = "qwen2_vl"
    model_type: ClassVar[str] = "qwen2_vl"

    image_size: tuple[int, int] = (224, 224)  # any multiple of patch * merge (28); 224 -> 64 tokens
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD

    def validate(self) -> None:
        super().validate()
        self.check(
            "vision_intermediate_size",
            self.vision_intermediate_size % self.vision_hidden_size == 0,
            f"a multiple of vision_hidden_size ({self.vision_hidden_size}): Qwen2-VL sets an MLP ratio",
        )

    def to_hf(self, special_ids: dict[str, int]) -> PretrainedConfig:
        return HFQwen2VLConfig(
            text_config=self.hf_text_config(
                special_ids, rms_norm_eps=1e-6, rope_parameters=_rope(self.rope_theta, self.mrope_section)
            ),
            vision_config=dict(
                depth=self.vision_layers,
                embed_dim=self.vision_hidden_size,
                hidden_size=self.hidden_size,
                mlp_ratio=self.vision_intermediate_size // self.vision_hidden_size,
                num_heads=self.vision_heads,
                patch_size=self.patch_size,
                spatial_merge_size=self.spatial_merge_size,
                temporal_patch_size=self.temporal_patch_size,
            ),
            tie_word_embeddings=self.tie_word_embeddings,
            **_special_kwargs(special_ids),
        )

    @classmethod
    def architecture_from_hf(cls, hf_config: PretrainedConfig) -> dict[str, Any]:
        text, vision = hf_config.text_config, hf_config.vision_config
        return dict(
            **decoder_architecture(hf_config),
            mrope_section=tuple(text.rope_parameters["mrope_section"]),
            vision_hidden_size=vision.embed_dim,
            vision_layers=vision.depth,
            vision_heads=vision.num_heads,
            vision_intermediate_size=vision.embed_dim * vision.mlp_ratio,
            patch_size=vision.patch_size,
            spatial_merge_size=vision.spatial_merge_size,
            temporal_patch_size=vision.temporal_patch_size,
        )

    def tiny(self) -> Qwen2VLConfig:
        # head_dim 32: the published (16, 24, 24) split of 64 rotary pairs, scaled to 16
        return self.replace(
            **self.tiny_text(), **self.tiny_vision(), mrope_section=(4, 6, 6), image_size=(56, 56)
        )


@dataclass(frozen=True, kw_only=True)
class Qwen3VLConfig(QwenVLConfig):
    """Qwen3-VL: see the module docstring for what changes from Qwen2-VL."""

    family: ClassVar[str] = "qwen3_vl"
    model_type: ClassVar[str] = "qwen3_vl"

    head_dim: int  # attention head width, independent of hidden_size / num_heads
    deepstack_visual_indexes: tuple[int, ...]  # vision layers whose features join the first LM layers
    num_position_embeddings: int = 2304  # learned vision positions, a 48 x 48 grid (interpolated)

    image_size: tuple[int, int] = (224, 224)  # any multiple of patch * merge (32); 224 -> 49 tokens
    image_mean: tuple[float, float, float] = HALF
    image_std: tuple[float, float, float] = HALF

    def validate(self) -> None:
        super().validate()
        self.check_positive("head_dim", "num_position_embeddings")
        side = math.isqrt(self.num_position_embeddings)
        self.check("num_position_embeddings", side * side == self.num_position_embeddings, "a perfect square")
        self.check(
            "deepstack_visual_indexes",
            isinstance(self.deepstack_visual_indexes, tuple)
            and all(is_int(i) and 0 <= i < self.vision_layers for i in self.deepstack_visual_indexes),
            f"vision layer indexes in [0, vision_layers = {self.vision_layers})",
        )

    def attention_head_dim(self) -> int:
        return self.head_dim

    def to_hf(self, special_ids: dict[str, int]) -> PretrainedConfig:
        return HFQwen3VLConfig(
            text_config=self.hf_text_config(
                special_ids,
                head_dim=self.head_dim,
                max_position_embeddings=262144,
                rope_parameters=_rope(self.rope_theta, self.mrope_section),
            ),
            vision_config=dict(
                depth=self.vision_layers,
                hidden_size=self.vision_hidden_size,
                intermediate_size=self.vision_intermediate_size,
                num_heads=self.vision_heads,
                out_hidden_size=self.hidden_size,
                patch_size=self.patch_size,
                spatial_merge_size=self.spatial_merge_size,
                temporal_patch_size=self.temporal_patch_size,
                num_position_embeddings=self.num_position_embeddings,
                deepstack_visual_indexes=list(self.deepstack_visual_indexes),
            ),
            tie_word_embeddings=self.tie_word_embeddings,
            **_special_kwargs(special_ids),
        )

    @classmethod
    def architecture_from_hf(cls, hf_config: PretrainedConfig) -> dict[str, Any]:
        text, vision = hf_config.text_config, hf_config.vision_config
        return dict(
            **decoder_architecture(hf_config),
            head_dim=text.head_dim,
            mrope_section=tuple(text.rope_parameters["mrope_section"]),
            vision_hidden_size=vision.hidden_size,
            vision_layers=vision.depth,
            vision_heads=vision.num_heads,
            vision_intermediate_size=vision.intermediate_size,
            patch_size=vision.patch_size,
            spatial_merge_size=vision.spatial_merge_size,
            temporal_patch_size=vision.temporal_patch_size,
            num_position_embeddings=vision.num_position_embeddings,
            deepstack_visual_indexes=tuple(vision.deepstack_visual_indexes),
        )

    def tiny(self) -> Qwen3VLConfig:
        # head_dim 32: the published (24, 20, 20) split of 64 rotary pairs, scaled to 16
        return self.replace(
            **self.tiny_text(),
            **self.tiny_vision(),
            head_dim=32,
            mrope_section=(6, 5, 5),
            num_position_embeddings=16,
            deepstack_visual_indexes=(0,),
            image_size=(64, 64),
        )


class QwenVLBackbone(VLMBackbone):
    """Qwen2-VL and Qwen3-VL behind the VLMBackbone interface."""

    vision_model: ClassVar[str] = "model.visual"

    def __init__(self, config: Qwen2VLConfig, model: Any, tokenizer: Any) -> None:
        super().__init__(config, model, tokenizer)
        self.image_id = model.config.image_token_id
        self.start_id, self.end_id = model.config.vision_start_token_id, model.config.vision_end_token_id

    def grid(self) -> tuple[int, int]:
        """(H / patch, W / patch) of every image."""
        height, width = self.config.image_size
        return height // self.config.patch_size, width // self.config.patch_size

    def image_tokens_per_image(self) -> int:
        grid_h, grid_w = self.grid()
        return grid_h * grid_w // self.config.spatial_merge_size**2

    def prompt_ids(self, text_ids: list[int], num_images: int) -> list[int]:
        image = [self.start_id] + [self.image_id] * self.image_tokens_per_image() + [self.end_id]
        return image * num_images + list(text_ids)

    def patchify(self, pixels: torch.Tensor) -> torch.Tensor:
        """(M, C, H, W) -> (M * H/p * W/p, C * T * p * p): the flattened patches of every image,
        each merge x merge block of patches consecutive, rows of the block first."""
        count, channels = pixels.shape[:2]
        p, m, frames = self.config.patch_size, self.config.spatial_merge_size, self.config.temporal_patch_size
        grid_h, grid_w = self.grid()
        video = pixels.unsqueeze(1).expand(-1, frames, -1, -1, -1)  # a still image: T equal frames
        blocks = video.reshape(count, frames, channels, grid_h // m, m, p, grid_w // m, m, p)
        # (M, blocks_h, blocks_w, m_h, m_w, C, T, p_h, p_w)
        blocks = blocks.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return blocks.reshape(count * grid_h * grid_w, channels * frames * p * p)

    def model_inputs(
        self, input_ids: torch.Tensor, mask: torch.Tensor, pixels: torch.Tensor
    ) -> dict[str, Any]:
        grid_h, grid_w = self.grid()
        grid_thw = torch.tensor([[1, grid_h, grid_w]], device=input_ids.device).expand(pixels.shape[0], 3)
        return dict(
            input_ids=input_ids,
            attention_mask=mask.long(),
            pixel_values=self.patchify(pixels),
            image_grid_thw=grid_thw,
            mm_token_type_ids=(input_ids == self.image_id).int(),
        )


# -- variants: architecture of the published checkpoints (config.json of Qwen/Qwen2-VL-*-Instruct and
# Qwen/Qwen3-VL-*-Instruct) ---------------------------------------------------------------------------
QWEN2_VIT = dict(  # the 675 M ViT of both Qwen2-VL sizes
    vision_hidden_size=1280, vision_layers=32, vision_heads=16, vision_intermediate_size=5120, patch_size=14
)

@register_vlm("qwen2-vl-2b", aliases=("qwen-vl", "qwen2-vl", "qwen2vl"))
def qwen2_vl_2b() -> Qwen2VLConfig:
    """Qwen2-VL-2B: 2.21 B parameters (675 M ViT, 1.54 B Qwen2 language model with tied embeddings)."""
    return Qwen2VLConfig(
        hidden_size=1536,
        num_layers=28,
        num_heads=12,
        num_kv_heads=2,
        intermediate_size=8960,
        vocab_size=151936,
        tie_word_embeddings=True,
        rope_theta=1e6,
        mrope_section=(16, 24, 24),
        **QWEN2_VIT,
    )


@register_vlm("qwen2-vl-7b")
def qwen2_vl_7b() -> Qwen2VLConfig:
    """Qwen2-VL-7B: 8.29 B parameters (675 M ViT, 7.6 B Qwen2 language model)."""
    return Qwen2VLConfig(
        hidden_size=3584,
        num_layers=28,
        num_heads=28,
        num_kv_heads=4,
        intermediate_size=18944,
        vocab_size=152064,
        tie_word_embeddings=False,
        rope_theta=1e6,
        mrope_section=(16, 24, 24),
        **QWEN2_VIT,
    )


@register_vlm("qwen3-vl-4b", aliases=("qwen3-vl",))
def qwen3_vl_4b() -> Qwen3VLConfig:
    """Qwen3-VL-4B: 4.44 B parameters (24-layer ViT, 36-layer Qwen3 language model, tied embeddings)."""
    return Qwen3VLConfig(
        hidden_size=2560,
        num_layers=36,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=9728,
        vocab_size=151936,
        tie_word_embeddings=True,
        rope_theta=5e6,
        mrope_section=(24, 20, 20),
        vision_hidden_size=1024,
        vision_layers=24,
        vision_heads=16,
        vision_intermediate_size=4096,
        patch_size=16,
        deepstack_visual_indexes=(5, 11, 17),
    )


# The published Qwen3-VL dense sizes are 2B, 4B, 8B and 32B: there is no 7B. "qwen3-vl-7b" (the name
# the seed's model table used) is kept as an alias of the 8B, the closest published size.
@register_vlm("qwen3-vl-8b", aliases=("qwen3-vl-7b",))
def qwen3_vl_8b() -> Qwen3VLConfig:
    """Qwen3-VL-8B: 8.77 B parameters (27-layer ViT, 36-layer Qwen3 language model)."""
    return Qwen3VLConfig(
        hidden_size=4096,
        num_layers=36,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=12288,
        vocab_size=151936,
        tie_word_embeddings=False,
        rope_theta=5e6,
        mrope_section=(24, 20, 20),
        vision_hidden_size=1152,
        vision_layers=27,
        vision_heads=16,
        vision_intermediate_size=4304,
        patch_size=16,
        deepstack_visual_indexes=(8, 16, 24),
    )
