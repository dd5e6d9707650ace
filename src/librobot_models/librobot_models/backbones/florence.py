"""Florence-2: a DaViT vision encoder (four stages of convolutional patch embedding, then spatial
window attention and channel group attention) whose features, with 2D position and a temporal
token, are projected into the input of a BART encoder-decoder.

transformers class: Florence2ForConditionalGeneration.

The image yields (H / 32) * (W / 32) spatial tokens plus one temporal (mean) token, and the prompt
must hold exactly that many image placeholders: <image> x tokens per image, then <s> text </s>.
The encoder output is what a robot policy wants (the decoder generates captions and boxes), so
`encode` returns `encoder_last_hidden_state`. Every image token plus the text must fit the BART
positions (1024 in the published models: one 768 px image is 577 tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import Florence2Config as HFFlorence2Config
from transformers import PretrainedConfig

from librobot_models.backbones.base import IMAGENET_MEAN, IMAGENET_STD, VLMBackbone, VLMConfig
from librobot_models.config import is_int
from librobot_models.registry import register_vlm

_STRIDE = 32  # DaViT downsampling: patch strides 4, 2, 2, 2
_MAX_GRID = 50  # learned 2D position embeddings of the projector: at most 50 x 50 image tokens


@dataclass(frozen=True, kw_only=True)
class Florence2Config(VLMConfig):
    """Florence-2. The language fields describe BART (same depth for encoder and decoder); the vision
    fields give one value per DaViT stage."""

    family: ClassVar[str] = "florence2"
    model_type: ClassVar[str] = "florence2"
    special_tokens: ClassVar[dict[str, str]] = {
        "bos": "<s>",
        "pad": "<pad>",
        "eos": "</s>",
        "unk": "<unk>",
        "image": "<image>",
    }

    max_position_embeddings: int  # BART positions: image tokens + text must fit

    vision_embed_dims: tuple[int, int, int, int]  # channels of the four DaViT stages
    vision_depths: tuple[int, int, int, int]  # blocks per stage
    vision_heads: tuple[int, int, int, int]  # heads (and channel groups) per stage
    window_size: int = 12  # spatial attention window

    image_size: tuple[int, int] = (768, 768)  # multiples of 32; 768 -> 24 x 24 + 1 = 577 tokens
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD

    def validate(self) -> None:
        super().validate()
        self.check_positive("max_position_embeddings", "window_size")
        self.check(
            "hidden_size",
            self.hidden_size % self.num_heads == 0,
            f"a multiple of num_heads ({self.num_heads})",
        )
        for name in ("vision_embed_dims", "vision_depths", "vision_heads"):
            value = getattr(self, name)
            ok = isinstance(value, tuple) and len(value) == 4 and all(is_int(v) and v > 0 for v in value)
            self.check(name, ok, "four ints > 0, one per DaViT stage")
        self.check(
            "vision_embed_dims",
            all(d % h == 0 for d, h in zip(self.vision_embed_dims, self.vision_heads, strict=True)),
            f"multiples of vision_heads {self.vision_heads}",
        )
        self.check_image_multiple(_STRIDE)
        self.check(
            "image_size", max(self.image_size) <= _STRIDE * _MAX_GRID, f"sides <= {_STRIDE * _MAX_GRID}"
        )

    def to_hf(self, special_ids: dict[str, int]) -> PretrainedConfig:
        return HFFlorence2Config(
            vision_config=dict(
                embed_dim=list(self.vision_embed_dims),
                depths=list(self.vision_depths),
                num_heads=list(self.vision_heads),
                num_groups=list(self.vision_heads),
                window_size=self.window_size,
                projection_dim=self.hidden_size,
                max_position_embeddings=_MAX_GRID,
            ),
            text_config=dict(
                model_type="bart",
                d_model=self.hidden_size,
                encoder_layers=self.num_layers,
                decoder_layers=self.num_layers,
                encoder_attention_heads=self.num_heads,
                decoder_attention_heads=self.num_heads,
                encoder_ffn_dim=self.intermediate_size,
                decoder_ffn_dim=self.intermediate_size,
                vocab_size=self.vocab_size,
                max_position_embeddings=self.max_position_embeddings,
                bos_token_id=special_ids["bos"],
                pad_token_id=special_ids["pad"],
                eos_token_id=special_ids["eos"],
                decoder_start_token_id=special_ids["eos"],
                forced_eos_token_id=special_ids["eos"],
            ),
            image_token_id=special_ids["image"],
        )

    @classmethod
    def architecture_from_hf(cls, hf_config: PretrainedConfig) -> dict[str, Any]:
        text, vision = hf_config.text_config, hf_config.vision_config
        return dict(
            hidden_size=text.d_model,
            num_layers=text.encoder_layers,
            num_heads=text.encoder_attention_heads,
            intermediate_size=text.encoder_ffn_dim,
            vocab_size=text.vocab_size,
            max_position_embeddings=text.max_position_embeddings,
            vision_embed_dims=tuple(vision.embed_dim),
            vision_depths=tuple(vision.depths),
            vision_heads=tuple(vision.num_heads),
            window_size=vision.window_size,
        )

    def tiny(self) -> Florence2Config:
        return self.replace(
            **self.tiny_text(),
            max_position_embeddings=256,
            vision_embed_dims=(16, 32, 64, 128),
            vision_depths=(1, 1, 1, 1),
            vision_heads=(1, 2, 4, 4),
            window_size=4,
            image_size=(64, 64),
        )

    @classmethod
    def backbone_class(cls) -> type[VLMBackbone]:
        return Florence2Backbone


class Florence2Backbone(VLMBackbone):
    """Florence-2 behind the VLMBackbone interface; tokens are the BART encoder output."""

    def __init__(self, config: Florence2Config, model: Any, tokenizer: Any) -> None:
        super().__init__(config, model, tokenizer)
        self.image_id = model.config.image_token_id
        self.bos_id, self.eos_id = self.text_config().bos_token_id, self.text_config().eos_token_id

    def image_tokens_per_image(self) -> int:
        height, width = self.config.image_size
        return (height // _STRIDE) * (width // _STRIDE) + 1  # spatial tokens + the temporal token

    def prompt_ids(self, text_ids: list[int], num_images: int) -> list[int]:
        per_image, limit = self.image_tokens_per_image(), self.config.max_position_embeddings
        ids = [*[self.image_id] * (per_image * num_images), self.bos_id, *text_ids, self.eos_id]
        if len(ids) > limit:
            raise ValueError(
                f"Florence-2 prompt of {len(ids)} tokens ({num_images} images x {per_image} + text) "
                f"exceeds max_position_embeddings = {limit}: use fewer images, a smaller image_size "
                "or a smaller max_text_tokens"
            )
        return ids

    def hidden_states(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.model(**inputs).encoder_last_hidden_state

    def language_layers(self) -> nn.ModuleList:
        return self.model.get_submodule(self.language_model).encoder.layers

    def unused_modules(self) -> list[str]:
        return [*super().unused_modules(), f"{self.language_model}.decoder"]  # encode stops at the encoder


# -- variants: architecture of the published checkpoints (microsoft/Florence-2-base, -large) -------------
@register_vlm("florence-2-base", aliases=("florence-2", "florence"))
def florence_2_base() -> Florence2Config:
    """Florence-2-base: 0.23 B parameters (DaViT 90 M, BART-base 6+6 layers of width 768)."""
    return Florence2Config(
        hidden_size=768,
        num_layers=6,
        num_heads=12,
        intermediate_size=3072,
        vocab_size=51289,
        max_position_embeddings=1024,
        vision_embed_dims=(128, 256, 512, 1024),
        vision_depths=(1, 1, 9, 1),
        vision_heads=(4, 8, 16, 32),
    )


@register_vlm("florence-2-large")
def florence_2_large() -> Florence2Config:
    """Florence-2-large: 0.77 B parameters (DaViT 360 M, BART-large 12+12 layers of width 1024)."""
    return Florence2Config(
        hidden_size=1024,
        num_layers=12,
        num_heads=16,
        intermediate_size=4096,
        vocab_size=51289,
        max_position_embeddings=1024,
        vision_embed_dims=(256, 512, 1024, 2048),
        vision_depths=(1, 1, 9, 1),
        vision_heads=(8, 16, 32, 64),
    )
