"""The one interface every VLM backbone offers, over the native transformers model of its family.

A backbone is a thin wrapper: `self.model` is the family's transformers `...ForConditionalGeneration`
(built from a config or loaded from a directory, never copied or patched), `self.tokenizer` its
tokenizer. The wrapper adds what a robot policy needs and transformers leaves to processors:

    images (B, N_img, 3, H, W) float in [0, 1] or uint8  --resize, normalise, patch (torch)--> pixels
    text   list[str] of length B                          --tokenize, truncate-------------> ids
    [image placeholder tokens of every image, then the text], right-padded --> base model
    --> VLMOutput(tokens (B, L, D), mask (B, L) bool, pooled (B, D))

`tokens` are the final-norm hidden states of the language model (for Florence-2, encoder-decoder:
its encoder output); `mask` is True on real tokens, False on padding; `pooled` is the masked mean
over real tokens (`pooling="mean"`) or the last real token (`pooling="last"`).

A family module defines a `VLMConfig` subclass (its architecture as plain fields, the mapping to and
from the transformers config, and a tiny variant) and a `VLMBackbone` subclass (prompt layout and
pixel inputs). Variants register by name in librobot_models.backbones.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)

from librobot_models.backbones.tokenizer import build_tokenizer
from librobot_models.config import Config, is_int, is_number
from librobot_models.layers import resize_images

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
POOLINGS = ("mean", "last")
ATTENTION = ("sdpa", "eager")
WRAPPER_FILE = "librobot_vlm.json"  # wrapper settings saved next to the transformers files
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
TOKENIZER_VOCAB = 1024  # size bound of the in-code tokenizer of models built without a directory

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass
class VLMOutput:
    """What `VLMBackbone.encode` returns."""

    tokens: torch.Tensor  # (B, L, D) final hidden states of the prompt: image placeholders, then text
    mask: torch.Tensor  # (B, L) bool, True on real tokens
    pooled: torch.Tensor  # (B, D)


@dataclass(frozen=True, kw_only=True)
class VLMConfig(Config, abc.ABC):
    """What every VLM has: a language model of some width and depth, fed images by the wrapper.

    Fields without a default describe the architecture; a registered variant gives them all (see
    librobot_models.backbones). Family subclasses add their own fields; fields with defaults are the
    wrapper's and may change even for a pretrained model.
    """

    family: ClassVar[str] = ""  # e.g. "qwen2_vl"
    model_type: ClassVar[str] = ""  # transformers `model_type` in config.json
    special_tokens: ClassVar[Mapping[str, str]] = {}  # role -> token text for the in-code tokenizer

    # -- language model -----------------------------------------------------------------------------
    hidden_size: int  # D, the width of the output tokens
    num_layers: int
    num_heads: int
    intermediate_size: int  # feed-forward width
    vocab_size: int

    # -- images -------------------------------------------------------------------------------------
    image_size: tuple[int, int] = (224, 224)  # (H, W) every image is resized to
    image_mean: tuple[float, float, float] = HALF  # per-channel normalisation of [0, 1] pixels
    image_std: tuple[float, float, float] = HALF

    # -- wrapper ------------------------------------------------------------------------------------
    max_text_tokens: int = 64  # text longer than this is truncated (image tokens not counted)
    pooling: str = "mean"  # "mean" over real tokens or the "last" real token
    dtype: str = "float32"  # parameter dtype: float32, bfloat16, float16
    attn_implementation: str = "sdpa"  # "sdpa" or "eager"

    def validate(self) -> None:
        self.check(
            "image_size",
            isinstance(self.image_size, tuple)
            and len(self.image_size) == 2
            and all(is_int(v) and v > 0 for v in self.image_size),
            "(height, width), both ints > 0",
        )
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            ok = isinstance(value, tuple) and len(value) == 3 and all(is_number(v) for v in value)
            self.check(
                name, ok and (name == "image_mean" or min(value) > 0), "three numbers (R, G, B), std > 0"
            )
        self.check_positive("hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size")
        self.check_positive("max_text_tokens")
        self.check("pooling", self.pooling in POOLINGS, f"one of {POOLINGS}")
        self.check("dtype", self.dtype in DTYPES, f"one of {tuple(DTYPES)}")
        self.check("attn_implementation", self.attn_implementation in ATTENTION, f"one of {ATTENTION}")

    def check_positive(self, *names: str) -> None:
        for name in names:
            self.check(name, is_int(getattr(self, name)) and getattr(self, name) > 0, "an int > 0")

    def check_image_multiple(self, factor: int) -> None:
        self.check(
            "image_size",
            all(v % factor == 0 for v in self.image_size),
            f"both sides multiples of {factor}",
        )

    # -- family hooks -------------------------------------------------------------------------------
    @abc.abstractmethod
    def to_hf(self, special_ids: Mapping[str, int]) -> PretrainedConfig:
        """The transformers config of this architecture; `special_ids` maps each role of
        `special_tokens` to its id in the tokenizer the model is built with."""

    @classmethod
    @abc.abstractmethod
    def architecture_from_hf(cls, hf_config: PretrainedConfig) -> dict[str, Any]:
        """The architecture fields of a transformers config (the inverse of `to_hf`)."""

    @abc.abstractmethod
    def tiny(self) -> VLMConfig:
        """The same architecture shrunk for tests and CPU demos (2 layers, width 128, vocab 1024,
        images of at most 64 px): under 2 M parameters, a forward in milliseconds."""

    @classmethod
    @abc.abstractmethod
    def backbone_class(cls) -> type[VLMBackbone]:
        """The VLMBackbone subclass that wraps this family's transformers model."""

    def create(
        self, pretrained: str | Path | None = None, *, tokenizer: Any = None, **overrides: Any
    ) -> VLMBackbone:
        """A randomly initialised backbone of this config, or the one saved in directory `pretrained`
        (its architecture comes from the directory; `overrides` may change wrapper fields only).
        `tokenizer`: with random weights, the tokenizer to build around instead of the in-code one
        (a checkpoint's, so that its token ids are the ones the weights were trained with)."""
        backbone = self.backbone_class()
        if pretrained is None:
            return backbone.from_config(self.replace(**overrides) if overrides else self, tokenizer)
        return backbone.from_pretrained(pretrained, self, **overrides)

    def tiny_text(self) -> dict[str, Any]:
        """Tiny language-model sizes shared by the families; grouped-query attention stays grouped."""
        sizes = dict(
            hidden_size=128, num_layers=2, num_heads=4, intermediate_size=256, vocab_size=TOKENIZER_VOCAB
        )
        if isinstance(self, DecoderVLMConfig):
            sizes["num_kv_heads"] = max(1, 4 // (self.num_heads // self.num_kv_heads))
        return sizes


@dataclass(frozen=True, kw_only=True)
class DecoderVLMConfig(VLMConfig):
    """A ViT vision tower feeding a decoder-only language model (every family here but Florence-2)."""

    # -- language model -----------------------------------------------------------------------------
    num_kv_heads: int  # < num_heads: grouped-query attention
    tie_word_embeddings: bool  # LM head shares the input embedding
    rope_theta: float

    # -- vision tower -------------------------------------------------------------------------------
    vision_hidden_size: int
    vision_layers: int
    vision_heads: int
    vision_intermediate_size: int
    patch_size: int

    def validate(self) -> None:
        super().validate()
        self.check_positive(
            "num_kv_heads",
            "vision_hidden_size",
            "vision_layers",
            "vision_heads",
            "vision_intermediate_size",
            "patch_size",
        )
        self.check(
            "num_kv_heads",
            self.num_heads % self.num_kv_heads == 0,
            f"a divisor of num_heads ({self.num_heads})",
        )
        self.check(
            "vision_hidden_size",
            self.vision_hidden_size % self.vision_heads == 0,
            f"a multiple of vision_heads ({self.vision_heads})",
        )
        self.check("rope_theta", is_number(self.rope_theta) and self.rope_theta > 0, "a number > 0")
        self.check("tie_word_embeddings", isinstance(self.tie_word_embeddings, bool), "true or false")

    def tiny_vision(self) -> dict[str, Any]:
        """Tiny vision-tower sizes shared by the families (the patch size stays)."""
        return dict(vision_hidden_size=64, vision_layers=2, vision_heads=2, vision_intermediate_size=128)

    def hf_text_config(self, special_ids: Mapping[str, int], **fields: Any) -> dict[str, Any]:
        """The language model's fields of a transformers `text_config` (the inverse of
        decoder_architecture); `fields` add the family's own or replace these. A family without a
        bos token (Qwen) starts sequences with its pad token, as the published configs do."""
        return {
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "vocab_size": self.vocab_size,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "pad_token_id": special_ids["pad"],
            "bos_token_id": special_ids.get("bos", special_ids["pad"]),
            "eos_token_id": special_ids["eos"],
            **fields,
        }

    def hf_vit_config(self, **fields: Any) -> dict[str, Any]:
        """The fields of a standard ViT `vision_config` (SigLIP, CLIP, InternViT; the inverse of
        vit_architecture); `fields` add the family's own."""
        return {
            "hidden_size": self.vision_hidden_size,
            "intermediate_size": self.vision_intermediate_size,
            "num_hidden_layers": self.vision_layers,
            "num_attention_heads": self.vision_heads,
            **fields,
        }


class VLMBackbone(nn.Module, abc.ABC):
    """`encode(images, text) -> VLMOutput` over a transformers VLM; see the module docstring.

    Subclasses implement `image_tokens_per_image`, `prompt_ids` and `model_inputs`, and set the
    module paths of the language model and the vision tower inside `self.model` where they differ.
    """

    language_model: ClassVar[str] = "model.language_model"
    vision_model: ClassVar[str] = "model.vision_tower"

    def __init__(self, config: VLMConfig, model: PreTrainedModel, tokenizer: Any) -> None:
        super().__init__()
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.pad_id = self._pad_id()

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: VLMConfig, tokenizer: Any = None) -> VLMBackbone:
        """Random weights around `tokenizer`, by default the in-code one (honours an enclosing
        `torch.device(...)`)."""
        if tokenizer is None:
            tokenizer = build_tokenizer(config.special_tokens, vocab_size=min(TOKENIZER_VOCAB, config.vocab_size))
        special_ids = {
            role: tokenizer.convert_tokens_to_ids(tok) for role, tok in config.special_tokens.items()
        }
        model = AutoModelForImageTextToText.from_config(
            config.to_hf(special_ids),
            dtype=DTYPES[config.dtype],
            attn_implementation=config.attn_implementation,
        )
        return cls(config, model, tokenizer)

    @classmethod
    def from_pretrained(cls, path: str | Path, defaults: VLMConfig, **overrides: Any) -> VLMBackbone:
        """Load weights, config and tokenizer from a save_pretrained directory. The architecture comes
        from its config.json; wrapper fields from `defaults`, then the directory's librobot_vlm.json
        (when a backbone saved it), then `overrides`."""
        path = Path(path).expanduser()
        _check_directory(path)
        hf_config = AutoConfig.from_pretrained(path)
        if hf_config.model_type != defaults.model_type:
            raise ValueError(
                f"{path}/config.json has model_type {hf_config.model_type!r}, "
                f"expected {defaults.model_type!r} for a {defaults.family} backbone"
            )
        architecture = type(defaults).architecture_from_hf(hf_config)
        fixed = sorted(set(overrides) & set(architecture))
        if fixed:
            raise ValueError(f"cannot override architecture fields {fixed} of the pretrained model in {path}")
        saved = {}
        if (path / WRAPPER_FILE).is_file():
            document = json.loads((path / WRAPPER_FILE).read_text())
            saved = {k: v for k, v in document.get("config", {}).items() if k not in architecture}
        config = type(defaults).from_dict({**defaults.to_dict(), **saved, **architecture, **overrides})
        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=DTYPES[config.dtype], attn_implementation=config.attn_implementation
        )
        return cls(config, model, AutoTokenizer.from_pretrained(path))

    def save_pretrained(self, path: str | Path) -> None:
        """Write model (config.json, model.safetensors), tokenizer and wrapper settings to `path`."""
        path = Path(path)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        document = {"family": self.config.family, "config": self.config.to_dict()}
        (path / WRAPPER_FILE).write_text(json.dumps(document, indent=2))

    # -- the interface ------------------------------------------------------------------------------
    def encode(self, images: torch.Tensor, text: Sequence[str]) -> VLMOutput:
        """images (B, N_img, 3, H, W) float in [0, 1] or uint8, text list[str] of length B ->
        VLMOutput(tokens (B, L, D), mask (B, L) bool, pooled (B, D))."""
        if not (isinstance(images, torch.Tensor) and images.ndim == 5 and images.shape[2] == 3):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a tensor (B, N_img, 3, H, W), got {shape}")
        batch, num_images = images.shape[:2]
        if isinstance(text, str) or len(text) != batch or not all(isinstance(t, str) for t in text):
            raise ValueError(f"text must be a list of {batch} strings (one per sample), got {text!r}")
        if num_images < 1:
            raise ValueError("images must hold at least one image per sample (N_img >= 1), got 0")

        pixels = self.preprocess_images(images)  # (B * N_img, 3, h, w)
        text_ids = self.tokenizer(
            list(text), add_special_tokens=False, truncation=True, max_length=self.config.max_text_tokens
        )["input_ids"]
        rows = [self.prompt_ids(ids, num_images) for ids in text_ids]
        length = max(map(len, rows))
        input_ids = torch.full((batch, length), self.pad_id, dtype=torch.long)
        mask = torch.zeros(batch, length, dtype=torch.bool)
        for i, row in enumerate(rows):  # right padding
            input_ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = True
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)

        tokens = self.hidden_states(self.model_inputs(input_ids, mask, pixels))  # (B, L, D)
        if self.config.pooling == "mean":
            weights = mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)
        else:
            pooled = tokens[torch.arange(batch, device=tokens.device), mask.sum(1) - 1]
        return VLMOutput(tokens=tokens, mask=mask, pooled=pooled)

    def forward(self, images: torch.Tensor, text: Sequence[str]) -> VLMOutput:
        return self.encode(images, text)

    def get_embedding_dim(self) -> int:
        """D, the width of `tokens` and `pooled`."""
        return self.config.hidden_size

    def freeze_backbone(self) -> None:
        """No parameter of the backbone (LoRA ones included) gets gradients."""
        self.requires_grad_(False)

    def unfreeze_backbone(self) -> None:
        """Every parameter of the backbone gets gradients again (4-bit quantised weights excepted)."""
        for parameter in self.parameters():
            if parameter.is_floating_point():
                parameter.requires_grad_(True)

    def unused_modules(self) -> list[str]:
        """Paths (inside `self.model`) of modules `encode` never runs, so they never get a gradient:
        here an LM head not tied to the input embedding; families add theirs."""
        head, embedding = self.model.get_output_embeddings(), self.model.get_input_embeddings()
        if head is None or head.weight is embedding.weight:
            return []
        return [name for name, module in self.model.named_modules() if module is head]

    def freeze_unused(self) -> None:
        """Stop gradients to the parameters of the `unused_modules` (an optimizer then keeps no state
        for them), except those a used module shares (Florence-2's decoder embeds with the encoder's)."""
        paths = self.unused_modules()

        def unused(name: str) -> bool:
            return any(name.startswith(path + ".") for path in paths)

        named = list(self.model.named_parameters(remove_duplicate=False))  # tied weights under each name
        used = {id(p) for name, p in named if not unused(name)}
        for name, parameter in named:
            if unused(name) and id(parameter) not in used:
                parameter.requires_grad_(False)

    def language_layers(self) -> nn.ModuleList:
        """The stack of transformer layers whose output `encode` returns (the language model's)."""
        return self.model.get_submodule(self.language_model).layers

    def keep_language_layers(self, n_layers: int) -> None:
        """Drop every language-model layer after the first `n_layers`: `encode` then returns the
        (final-normed) features of layer n_layers, as GR00T N1 uses a middle layer of its VLM.
        The config still describes the architecture the weights were built or loaded as."""
        layers = self.language_layers()
        if not (isinstance(n_layers, int) and 1 <= n_layers <= len(layers)):
            raise ValueError(f"n_layers = {n_layers!r} is invalid: expected an int in [1, {len(layers)}]")
        del layers[n_layers:]

    def gradient_checkpointing_enable(self) -> None:
        """Recompute activations in the backward pass (training mode only): less memory, same result.
        Non-reentrant, so it also works when the inputs of a layer need no gradient (frozen, LoRA)."""
        self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    def gradient_checkpointing_disable(self) -> None:
        self.model.activation_checkpointing_disable()

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.model.is_activation_checkpointing

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # -- steps shared by the families -----------------------------------------------------------------
    def preprocess_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N, 3, H, W) uint8 or float in [0, 1] -> (B * N, 3, *image_size), normalised with the
        family's mean and std, in the model's dtype and on its device."""
        pixels = images.to(self.device).flatten(0, 1)
        pixels = pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels.float()
        pixels = resize_images(pixels, self.config.image_size)
        mean = torch.tensor(self.config.image_mean, device=pixels.device).view(3, 1, 1)
        std = torch.tensor(self.config.image_std, device=pixels.device).view(3, 1, 1)
        return ((pixels - mean) / std).to(self.dtype)

    def hidden_states(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run the base model (no LM head) -> final hidden states (B, L, D)."""
        return self.model.model(**inputs).last_hidden_state

    def text_config(self) -> PretrainedConfig:
        return self.model.config.get_text_config()

    def _pad_id(self) -> int:
        candidates = (
            self.tokenizer.pad_token_id,
            self.text_config().pad_token_id,
            self.tokenizer.eos_token_id,
            0,
        )
        pad = next(int(c) for c in candidates if c is not None)
        if pad == self.model.config.image_token_id:
            raise ValueError(f"the padding id {pad} is the image token id; give the tokenizer a pad token")
        return pad

    # -- family hooks -------------------------------------------------------------------------------
    @abc.abstractmethod
    def image_tokens_per_image(self) -> int:
        """Placeholder tokens one image takes in the prompt."""

    @abc.abstractmethod
    def prompt_ids(self, text_ids: list[int], num_images: int) -> list[int]:
        """One sample's input ids: the image placeholders of `num_images` images, then the text
        (with the family's separators and begin/end tokens)."""

    def model_inputs(
        self, input_ids: torch.Tensor, mask: torch.Tensor, pixels: torch.Tensor
    ) -> dict[str, Any]:
        """Keyword arguments of the base model for ids (B, L), mask (B, L) and pixels (B * N, 3, h, w);
        these three suit most families."""
        return dict(input_ids=input_ids, attention_mask=mask.long(), pixel_values=pixels)


def decoder_architecture(hf_config: PretrainedConfig) -> dict[str, Any]:
    """The language-model fields every decoder-only family shares (all but Florence-2), read from a
    transformers config whose `text_config` is a Llama/Qwen/Gemma-style decoder."""
    text = hf_config.text_config
    return dict(
        hidden_size=text.hidden_size,
        num_layers=text.num_hidden_layers,
        num_heads=text.num_attention_heads,
        num_kv_heads=text.num_key_value_heads,
        intermediate_size=text.intermediate_size,
        vocab_size=text.vocab_size,
        tie_word_embeddings=bool(hf_config.tie_word_embeddings),
        rope_theta=float(text.rope_parameters["rope_theta"]),
    )


def vit_architecture(vision: PretrainedConfig) -> dict[str, Any]:
    """The vision-tower fields of a standard ViT config (SigLIP, CLIP, InternViT)."""
    return dict(
        vision_hidden_size=vision.hidden_size,
        vision_layers=vision.num_hidden_layers,
        vision_heads=vision.num_attention_heads,
        vision_intermediate_size=vision.intermediate_size,
    )


def _check_directory(path: Path) -> None:
    """A one-line error naming what a pretrained directory lacks."""
    if not path.is_dir():
        raise FileNotFoundError(f"pretrained VLM directory {path} does not exist")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / name).is_file() for name in _WEIGHT_FILES):
        missing.append("weights (" + " or ".join(_WEIGHT_FILES[:2]) + ")")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        missing.append("a tokenizer (" + " or ".join(_TOKENIZER_FILES) + ")")
    if missing:
        raise FileNotFoundError(
            f"pretrained VLM directory {path} is incomplete: missing {', '.join(missing)} "
            "(expected the save_pretrained layout of a model and its tokenizer)"
        )
