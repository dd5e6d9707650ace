"""Parameter-efficient fine-tuning of VLM backbones: LoRA through peft, QLoRA through bitsandbytes.

    report = apply_lora(vlm, rank=8, alpha=16, target="language")
    print(report)   # LoRA rank 8 on 14 language-model layers: 31.7 K of 683 K parameters trainable (4.6%)

LoRA adds a trainable low-rank update B @ A (rank r, scaled by alpha / r, B starting at zero, so the
output is unchanged until training moves it) to every linear layer of the chosen part and freezes
everything else. The layers are picked by a regular expression on module names rooted at the part's
module path: the same names (q_proj, v_proj, fc1, ...) also occur in the vision towers of PaliGemma,
LLaVA and InternVL, so a bare list of names would adapt those too.

QLoRA first stores those linear layers' weights in 4 bits (NF4 by default, dequantised on the fly
in `compute_dtype`), then adds LoRA on top; bitsandbytes 0.50 does this on CPU as well as CUDA.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from librobot_models.backbones.base import VLMBackbone

TARGETS = ("language", "vision")
QUANT_TYPES = ("nf4", "fp4")


@dataclass(frozen=True)
class AdapterReport:
    """What an adapter did: which layers it wrapped and how many parameters now train."""

    method: str  # "LoRA" or "QLoRA"
    target: str  # "language" or "vision"
    rank: int
    pattern: str  # regular expression of the adapted module names
    layers: int  # linear layers adapted
    trainable: int  # parameters with requires_grad
    total: int  # all parameters (4-bit weights counted as the values they hold)

    @property
    def fraction(self) -> float:
        return self.trainable / self.total

    def __str__(self) -> str:
        share = f"{_human(self.trainable)} of {_human(self.total)} parameters trainable"
        return (
            f"{self.method} rank {self.rank} on {self.layers} {self.target}-model layers: "
            f"{share} ({100 * self.fraction:.1f}%)"
        )


def apply_lora(
    backbone: VLMBackbone, rank: int = 8, alpha: float = 16, dropout: float = 0.0, target: str = "language"
) -> AdapterReport:
    """Add LoRA to every linear layer of the backbone's language model (or vision tower) and freeze
    all other parameters. Modifies `backbone` in place."""
    _check_arguments(backbone, rank, alpha, dropout)
    pattern = target_pattern(backbone, target)
    _inject_lora(backbone, pattern, rank, alpha, dropout)
    return _report(backbone, "LoRA", target, rank, pattern)


def apply_qlora(
    backbone: VLMBackbone,
    rank: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
    target: str = "language",
    quant_type: str = "nf4",
    compute_dtype: torch.dtype | None = None,
) -> AdapterReport:
    """Quantise the targeted linear layers to 4 bits (bitsandbytes), then add LoRA as `apply_lora`.
    compute_dtype: dtype the 4-bit weights are dequantised to for matmuls (default: the backbone's).
    Raises RuntimeError in one line where bitsandbytes is missing or cannot run."""
    if quant_type not in QUANT_TYPES:
        raise ValueError(f"quant_type = {quant_type!r} is invalid: expected one of {QUANT_TYPES}")
    bnb = _bitsandbytes()
    _check_arguments(backbone, rank, alpha, dropout)
    pattern = target_pattern(backbone, target)
    compute_dtype = compute_dtype or backbone.dtype
    for name, module in list(backbone.model.named_modules()):
        if re.fullmatch(pattern, name):
            _set_module(backbone.model, name, _quantized(bnb, module, quant_type, compute_dtype))
    backbone.model.is_loaded_in_4bit = True  # the flag transformers sets: peft then uses its 4-bit LoRA layer
    _inject_lora(backbone, pattern, rank, alpha, dropout)
    return _report(backbone, "QLoRA", target, rank, pattern)


def target_pattern(backbone: VLMBackbone, target: str = "language") -> str:
    """The regular expression (full match on module names inside `backbone.model`) of every linear
    layer of the language model ("language") or the vision tower ("vision"): the paths of those
    layers below the part's module path, with layer numbers (not a last index) generalised to \\d+."""
    prefixes = {"language": backbone.language_model, "vision": backbone.vision_model}
    if target not in prefixes:
        raise ValueError(f"target = {target!r} is invalid: expected one of {TARGETS}")
    prefix = prefixes[target] + "."
    paths = sorted(
        {
            re.sub(r"(?<=\.)\d+(?=\.)", "#", name[len(prefix) :])
            for name, module in backbone.model.named_modules()
            if isinstance(module, nn.Linear) and name.startswith(prefix)
        }
    )
    if not paths:
        raise ValueError(f"{type(backbone).__name__} has no linear layers under {prefixes[target]!r}")
    alternatives = "|".join(re.escape(path).replace("\\#", r"\d+") for path in paths)
    pattern = rf"{re.escape(prefix)}(?:{alternatives})"
    for name, module in backbone.model.named_modules():
        if re.fullmatch(pattern, name) and not isinstance(module, nn.Linear):
            raise ValueError(
                f"pattern {pattern!r} would adapt {name!r}, a {type(module).__name__}, not a linear layer"
            )
    return pattern


# -- helpers ----------------------------------------------------------------------------------------
def _check_arguments(backbone: VLMBackbone, rank: int, alpha: float, dropout: float) -> None:
    if any("lora_" in name for name, _ in backbone.named_parameters()):
        raise ValueError(f"{type(backbone).__name__} already has LoRA adapters; apply them once")
    if not (isinstance(rank, int) and rank > 0):
        raise ValueError(f"rank = {rank!r} is invalid: expected an int > 0")
    if not (isinstance(alpha, (int, float)) and alpha > 0):
        raise ValueError(f"alpha = {alpha!r} is invalid: expected a number > 0")
    if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise ValueError(f"dropout = {dropout!r} is invalid: expected a number in [0, 1)")


def _inject_lora(backbone: VLMBackbone, pattern: str, rank: int, alpha: float, dropout: float) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern)
    inject_adapter_in_model(config, backbone.model)
    for name, parameter in backbone.named_parameters():
        parameter.requires_grad_("lora_" in name)


def _bitsandbytes() -> Any:
    try:
        import bitsandbytes
    except ImportError:
        raise RuntimeError(
            "QLoRA needs bitsandbytes, which is not installed (pip install bitsandbytes==0.50.2)"
        ) from None
    except Exception as err:  # installed but broken: missing native library, unsupported platform
        raise RuntimeError(
            f"QLoRA needs bitsandbytes, which cannot run here: {err}".splitlines()[0]
        ) from None
    return bitsandbytes


def _quantized(bnb: Any, linear: nn.Linear, quant_type: str, compute_dtype: torch.dtype) -> nn.Module:
    """A bitsandbytes 4-bit copy of `linear` (weights quantised when moved to their device)."""
    device = linear.weight.device
    layer = bnb.nn.Linear4bit(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        compute_dtype=compute_dtype,
        quant_type=quant_type,
        device=device,
    )
    layer.weight = bnb.nn.Params4bit(linear.weight.data.float(), requires_grad=False, quant_type=quant_type)
    if linear.bias is not None:
        layer.bias = nn.Parameter(linear.bias.data.to(compute_dtype), requires_grad=False)
    layer = layer.to(device)  # quantises
    if not getattr(layer.weight, "bnb_quantized", False):
        raise RuntimeError(f"bitsandbytes did not quantise a layer on {device}")
    return layer


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def _numel(parameter: torch.Tensor) -> int:
    quant_state = getattr(parameter, "quant_state", None)  # 4-bit weights pack two values per byte
    return int(quant_state.shape.numel()) if quant_state is not None else parameter.numel()


def _report(backbone: VLMBackbone, method: str, target: str, rank: int, pattern: str) -> AdapterReport:
    layers = sum(1 for name, _ in backbone.model.named_modules() if re.fullmatch(pattern, name))
    parameters = list(backbone.parameters())
    return AdapterReport(
        method=method,
        target=target,
        rank=rank,
        pattern=pattern,
        layers=layers,
        trainable=sum(_numel(p) for p in parameters if p.requires_grad),
        total=sum(_numel(p) for p in parameters),
    )


def _human(count: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return str(count)
