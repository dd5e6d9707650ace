"""What several frameworks share, written once: a nested action-head config kept in step with the
framework's shapes, the VLM fields and how the VLM is built, and how an observation is encoded.

    HeadedConfig        a VLAConfig with a `head` field (a HeadConfig): the head's action_dim, chunk_size
                        and cond_dim always equal the framework's, so they are never set twice
    VLMFrameworkConfig  + vlm, vlm_tiny, freeze_vlm, vlm_lora_rank, vlm_dtype, cond_dim (the fields of every
                        VLM-based framework: GR00T, pi0, OpenVLA-OFT, RT-2, Helix)
    HeadedFramework     base nn.Module: compute_loss / sample_actions are the head's, on `conditioning(batch)`
    VLMFramework        + `self.backbone`, the VLM (so the trainer gives it lr_backbone); `encode(batch)`
                        runs it on every camera image and the instruction
    check_positive_ints, check_vision_channels   validation shared by several configs

Pretrained VLM weights are an argument of `create` (`config.create(vlm_pretrained="/models/paligemma")`,
or a VLM already built with create_vlm), never a path in the config, so a saved config carries no
I/O: a checkpoint holds every weight, VLM included, and loads with `config.create()` alone.
`vlm_tiny` must be false to load pretrained weights.
"""

from __future__ import annotations

import abc
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from librobot_models.adapters import apply_lora
from librobot_models.backbones import VLMBackbone, VLMOutput, create_vlm, get_vlm_config, variant_of
from librobot_models.backbones.base import DTYPES
from librobot_models.config import VLAConfig, is_int, is_number
from librobot_models.heads import ActionHead, Conditioning, Inpainting
from librobot_models.layers import resize_images
from librobot_models.registry import VLMS


def check_positive_ints(config: VLAConfig, *names: str) -> None:
    for name in names:
        config.check(name, is_int(getattr(config, name)) and getattr(config, name) > 0, "an int > 0")


def check_bools(config: VLAConfig, *names: str) -> None:
    for name in names:
        config.check(name, isinstance(getattr(config, name), bool), "true or false")


def check_dropout(config: VLAConfig, name: str = "dropout") -> None:
    config.check(name, is_number(getattr(config, name)) and 0.0 <= getattr(config, name) < 1.0,
                 "a number in [0, 1)")


def check_attention_width(config: VLAConfig, dim: str, n_heads: str = "n_heads") -> None:
    """A transformer width with 2D sinusoidal positions: divisible by the heads and by 4."""
    heads = getattr(config, n_heads)
    config.check(dim, getattr(config, dim) % heads == 0, f"a multiple of {n_heads} ({heads})")
    config.check(dim, getattr(config, dim) % 4 == 0, "a multiple of 4 (2D sinusoidal positions)")


def check_vision_channels(config: VLAConfig, name: str = "vision_channels") -> None:
    """The stage widths of a ConvImageEncoder: a non-empty tuple of ints, each a multiple of its 8 groups."""
    value = getattr(config, name)
    config.check(
        name,
        isinstance(value, tuple)
        and len(value) > 0
        and all(is_int(v) and v > 0 and v % 8 == 0 for v in value),
        "a non-empty list of channel counts, each a multiple of 8",
    )


@dataclass(frozen=True)
class HeadedConfig(VLAConfig):
    """A framework config with a nested `head` (declared by the subclass with its HeadConfig type).

    After validation the head's action_dim, chunk_size and cond_dim are set to the framework's
    (`head_cond_dim()`), so the saved JSON is consistent and `replace(chunk_size=...)` reaches the head.
    """

    @abc.abstractmethod
    def head_cond_dim(self) -> int:
        """Width of the Conditioning the framework hands its head."""

    def __post_init__(self) -> None:
        super().__post_init__()
        shapes = {
            "action_dim": self.action_dim,
            "chunk_size": self.chunk_size,
            "cond_dim": self.head_cond_dim(),
        }
        if any(getattr(self.head, name) != value for name, value in shapes.items()):
            object.__setattr__(self, "head", self.head.replace(**shapes))

    def validate(self) -> None:
        super().validate()
        head_type = typing.get_type_hints(type(self))["head"]
        expected = f"a {head_type.__name__} or a mapping of its fields"
        self.check("head", isinstance(self.head, head_type), expected)


@dataclass(frozen=True)
class VLMFrameworkConfig(HeadedConfig):
    """The fields of every VLM-based framework (a subclass sets its own defaults and `head`)."""

    # -- VLM ------------------------------------------------------------------------------------------
    vlm: str = "paligemma-3b"  # a registered VLM variant (librobot_models.backbones.list_vlms())
    vlm_tiny: bool = True  # the variant's tiny config (2 layers, width 128): tests and CPU demos;
    #                        false for the real architecture (with create(vlm_pretrained=<dir>))
    freeze_vlm: bool = False  # true: no VLM weight trains, and the VLM stays in eval mode
    vlm_lora_rank: int = 0  # > 0: LoRA of this rank on the language model, only it trains in the VLM
    vlm_dtype: str = "float32"  # the VLM's parameters: float32, bfloat16 or float16 (the rest stays float32)
    cond_dim: int = 256  # VLM features are projected to this width, the head's cond_dim

    def head_cond_dim(self) -> int:
        return self.cond_dim

    def create(self, vlm_pretrained: str | Path | None = None, vlm_tokenizer: Any = None) -> VLMFramework:
        """The framework around its VLM: random weights, or the VLM's from a local directory
        (`vlm_pretrained`), with a tokenizer of the caller's if given."""
        return self._model_class()(self, vlm_pretrained, vlm_tokenizer)

    def validate(self) -> None:
        super().validate()
        try:
            VLMS.canonical(self.vlm)
        except ValueError as err:
            raise ValueError(f"{type(self).__name__}.vlm = {self.vlm!r} is invalid: {err}") from None
        for name in ("vlm_tiny", "freeze_vlm"):
            self.check(name, isinstance(getattr(self, name), bool), "true or false")
        rank = self.vlm_lora_rank
        self.check("vlm_lora_rank", is_int(rank) and rank >= 0, "an int >= 0")
        self.check("vlm_lora_rank", not (rank and self.freeze_vlm), "0 when freeze_vlm is true (LoRA trains)")
        check_positive_ints(self, "cond_dim")
        self.check("vlm_dtype", self.vlm_dtype in DTYPES, f"one of {list(DTYPES)}")


def build_vlm(
    config: VLMFrameworkConfig, pretrained: str | Path | VLMBackbone | None = None, tokenizer: Any = None
) -> VLMBackbone:
    """The framework's VLM: random (tiny or full size), loaded from directory `pretrained`, or
    `pretrained` itself when it is a VLMBackbone of the configured variant; then frozen,
    LoRA-adapted or left fully trainable as configured. Modules `encode` never runs (an untied LM
    head, ...) are frozen in every case."""
    if isinstance(pretrained, VLMBackbone):
        vlm = pretrained
        built_as = (*variant_of(vlm), vlm.config.dtype)
        expected = (VLMS.canonical(config.vlm), config.vlm_tiny, config.vlm_dtype)
        if built_as != expected:
            raise ValueError(
                f"the VLM passed is (variant, tiny, dtype) = {built_as}, but {type(config).__name__} "
                f"has {expected}"
            )
    elif pretrained is not None and config.vlm_tiny:
        raise ValueError(
            f"{type(config).__name__}.vlm_tiny = True builds a random tiny VLM: set vlm_tiny to false "
            f"to load pretrained weights from {pretrained}"
        )
    elif pretrained is not None:
        vlm = create_vlm(config.vlm, pretrained=pretrained, dtype=config.vlm_dtype)
    else:
        vlm = get_vlm_config(config.vlm, tiny=config.vlm_tiny, dtype=config.vlm_dtype).create(tokenizer=tokenizer)
    if config.vlm_lora_rank:
        apply_lora(vlm, rank=config.vlm_lora_rank, alpha=2 * config.vlm_lora_rank)
    elif config.freeze_vlm:
        vlm.freeze_backbone()
    vlm.freeze_unused()
    return vlm


def instructions(batch: dict[str, Any], batch_size: int) -> list[str]:
    """batch["instruction"] as a list of `batch_size` strings; "" for every sample when absent."""
    text = batch.get("instruction")
    if text is None:
        return [""] * batch_size
    if isinstance(text, str) or len(text) != batch_size or not all(isinstance(t, str) for t in text):
        raise ValueError(f"batch['instruction'] is {text!r:.80}: expected a list of {batch_size} strings")
    return list(text)


class VLMProjection(nn.Module):
    """VLMOutput -> Conditioning: tokens layer-normed and projected to cond_dim, padding carried over."""

    def __init__(self, vlm_dim: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(vlm_dim)
        self.proj = nn.Linear(vlm_dim, cond_dim)

    def forward(self, out: VLMOutput, pooled: torch.Tensor | None = None) -> Conditioning:
        """pooled: an optional (B, cond_dim) vector (e.g. the encoded state) put in front of the tokens."""
        tokens = self.proj(self.norm(out.tokens.to(self.proj.weight.dtype)))  # (B, L, cond_dim)
        return Conditioning(tokens=tokens, padding_mask=~out.mask, pooled=pooled)


class HeadedFramework(nn.Module, abc.ABC):
    """The model contract for a framework that turns a batch into a Conditioning for its action head.

    A subclass sets `self.head` (an ActionHead) and defines `conditioning(batch) -> Conditioning`;
    the loss and the sampling are then the head's.
    """

    head: ActionHead

    @abc.abstractmethod
    def conditioning(self, batch: dict[str, Any]) -> Conditioning:
        """What the head is conditioned on, from a batch of the VLAConfig contract."""

    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """batch: the VLAConfig contract with "actions" (B, k, A) and optionally "action_is_pad" (B, k)."""
        return self.head.loss(self.conditioning(batch), batch["actions"], batch.get("action_is_pad"))

    @torch.no_grad()
    def sample_actions(self, obs: dict[str, Any], generator: torch.Generator | None = None,
                       inpaint: Inpainting | None = None) -> torch.Tensor:
        """Action chunk (B, chunk_size, action_dim); the same generator state gives the same chunk.
        `inpaint`: RTC's guidance towards a target (heads whose `supports_inpainting`)."""
        if inpaint is None:
            return self.head.sample(self.conditioning(obs), generator)
        if not self.head.supports_inpainting:
            raise ValueError(f"{type(self.head).__name__} cannot inpaint a chunk (RTC guidance needs a "
                             "flow-matching, DDPM/DDIM or EDM head)")
        return self.head.sample(self.conditioning(obs), generator, inpaint=inpaint)


class VLMFramework(HeadedFramework):
    """Base module of the VLM-based frameworks: holds the config and the VLM as `self.backbone`."""

    def __init__(
        self, config: VLMFrameworkConfig, vlm_pretrained: str | Path | None = None, vlm_tokenizer: Any = None
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = build_vlm(config, vlm_pretrained, vlm_tokenizer)

    def train(self, mode: bool = True) -> VLMFramework:
        """A frozen VLM stays in eval mode (no dropout), as GR00T keeps its frozen modules."""
        super().train(mode)
        if self.config.freeze_vlm:
            self.backbone.eval()
        return self

    def encode(self, batch: dict[str, Any]) -> VLMOutput:
        """Every camera image (B, N_cam, 3, H, W) as one image of the prompt, then the instruction.
        Images are brought to `image_size` first, as Policy brings them when serving, so the VLM's
        own resize sees the same pixels in training and deployment. Runs without autograd when no
        VLM parameter trains."""
        images = resize_images(batch["images"], self.config.image_size)  # (B, N_cam, 3, H', W')
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.backbone.parameters())
        with torch.set_grad_enabled(needs_grad):
            return self.backbone.encode(images, instructions(batch, images.shape[0]))
