"""VLM backbones: one interface over the transformers vision-language models, one file per family.

    from librobot_models.backbones import create_vlm, list_vlms

    vlm = create_vlm("qwen2-vl-2b", tiny=True)          # same architecture, 2 layers, width 128
    out = vlm.encode(images, ["pick up the cube"] * B)    # images (B, N_img, 3, H, W) in [0, 1]
    out.tokens, out.mask, out.pooled                      # (B, L, D), (B, L) bool, (B, D)
    vlm = create_vlm("qwen2-vl-2b", pretrained="/models/Qwen2-VL-2B-Instruct")   # a local directory
    with torch.device("meta"):
        create_vlm("llava-1.5-13b")                       # full size, no memory: count parameters

Variants (aliases in brackets):
    qwen2-vl-2b [qwen-vl, qwen2-vl, qwen2vl]  qwen2-vl-7b
    qwen3-vl-4b [qwen3-vl]                    qwen3-vl-8b [qwen3-vl-7b: no 7B was published]
    florence-2-base [florence-2, florence]    florence-2-large
    paligemma-3b [paligemma]
    internvl2-2b [internvl2, internvl]        internvl2-8b
    llava-1.5-7b [llava, llava-7b, llava-1.5] llava-1.5-13b [llava-13b]

Without `pretrained` the weights are random and the tokenizer is the small byte-level BPE of
backbones/tokenizer.py (there is no model hub here). With `pretrained=<dir>` weights, config and
tokenizer come from a directory in save_pretrained layout (config.json, model.safetensors,
tokenizer files): a downloaded hub snapshot in transformers' native format, or one written by
`VLMBackbone.save_pretrained`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from librobot_models.backbones.base import DecoderVLMConfig, VLMBackbone, VLMConfig, VLMOutput
from librobot_models.backbones.florence import Florence2Backbone, Florence2Config
from librobot_models.backbones.internvl import InternVL2Backbone, InternVL2Config
from librobot_models.backbones.llava import LlavaBackbone, LlavaConfig
from librobot_models.backbones.paligemma import PaliGemmaBackbone, PaliGemmaConfig
from librobot_models.backbones.qwen_vl import Qwen2VLConfig, Qwen3VLConfig, QwenVLBackbone
from librobot_models.backbones.tokenizer import build_tokenizer
from librobot_models.registry import VLMS, register_vlm


def get_vlm_config(name: str, tiny: bool = False, **overrides: Any) -> VLMConfig:
    """The config of variant `name` (or alias), shrunk by `tiny=True`, with field `overrides`."""
    config = VLMS.get(name)()
    if not isinstance(config, VLMConfig):
        raise TypeError(
            f"VLM {name!r} is registered with a callable returning {type(config).__name__}, not a VLMConfig"
        )
    if tiny:
        config = config.tiny()
    return config.replace(**overrides) if overrides else config


def create_vlm(
    name: str, pretrained: str | Path | None = None, tiny: bool = False, **overrides: Any
) -> VLMBackbone:
    """A backbone of variant `name` (or alias).

    pretrained: None for random weights, or a local directory in save_pretrained layout; the
                architecture then comes from the directory and `overrides` may change wrapper fields
                (image_size, max_text_tokens, pooling, dtype, ...) only.
    tiny:       the same architecture with 2 layers, width 128, vocab 1024 and images of 32-64 px,
                for tests and CPU demos (not with `pretrained`, whose architecture is fixed).
    overrides:  any field of the variant's config (see its class), validated.
    """
    if pretrained is not None:
        if not isinstance(pretrained, (str, Path)):
            raise ValueError(
                f"pretrained must be a local directory (there is no model hub here), got {pretrained!r}"
            )
        if tiny:
            raise ValueError("tiny=True builds random weights; it cannot be combined with pretrained")
        return get_vlm_config(name).create(pretrained, **overrides)
    return get_vlm_config(name, tiny=tiny, **overrides).create()


def variant_of(vlm: VLMBackbone) -> tuple[str, bool]:
    """(name, tiny) of the registered variant `vlm` was built as (create_vlm(name, tiny=...) or
    create_vlm(name, pretrained=...)), its parameter dtype aside; a ValueError when none matches."""
    config = vlm.config.replace(dtype="float32")
    for name in list_vlms():
        for tiny in (False, True):
            if get_vlm_config(name, tiny=tiny) == config:
                return name, tiny
    raise ValueError(
        f"the {type(vlm).__name__} passed as vlm matches no registered VLM variant (tiny or full size, "
        f"with default wrapper fields): a framework records its VLM by variant name, so build it with "
        f"create_vlm(<one of {list_vlms()}>) or register its config with @register_vlm"
    )


def list_vlms() -> list[str]:
    """Registered VLM variant names (aliases not included)."""
    return VLMS.names()


__all__ = [
    "DecoderVLMConfig",
    "Florence2Backbone",
    "Florence2Config",
    "InternVL2Backbone",
    "InternVL2Config",
    "LlavaBackbone",
    "LlavaConfig",
    "PaliGemmaBackbone",
    "PaliGemmaConfig",
    "Qwen2VLConfig",
    "Qwen3VLConfig",
    "QwenVLBackbone",
    "VLMBackbone",
    "VLMConfig",
    "VLMOutput",
    "build_tokenizer",
    "create_vlm",
    "get_vlm_config",
    "list_vlms",
    "register_vlm",
    "variant_of",
]
