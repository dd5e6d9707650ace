"""LoRA and QLoRA on tiny backbones of every registered VLM."""

import builtins
import re
import sys

import pytest
import torch
from torch import nn

from librobot_models.adapters import AdapterReport, apply_lora, apply_qlora, target_pattern
from librobot_models.backbones import VLMBackbone, create_vlm, list_vlms

TEXT = ["pick up the red cube", "open the drawer"]


def tiny(name: str) -> VLMBackbone:
    torch.manual_seed(0)
    return create_vlm(name, tiny=True).eval()


def images() -> torch.Tensor:
    return torch.rand(2, 1, 3, 48, 48, generator=torch.Generator().manual_seed(0))


def linear_names(vlm: VLMBackbone, prefix: str) -> set[str]:
    return {
        n for n, m in vlm.model.named_modules() if isinstance(m, nn.Linear) and n.startswith(prefix + ".")
    }


def adapted_names(vlm: VLMBackbone) -> set[str]:
    return {n for n, m in vlm.model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A) > 0}


@pytest.mark.parametrize("name", list_vlms())
def test_lora_trains_only_adapters_of_the_language_model(name):
    vlm = tiny(name)
    language = linear_names(vlm, vlm.language_model)
    total = sum(p.numel() for p in vlm.parameters())
    with torch.no_grad():
        before = vlm.encode(images(), TEXT).pooled

    report = apply_lora(vlm, rank=4, alpha=8)

    assert isinstance(report, AdapterReport) and report.method == "LoRA" and report.target == "language"
    assert adapted_names(vlm) == language and report.layers == len(language)  # the vision tower is untouched
    assert not any(n.startswith(vlm.vision_model + ".") for n in adapted_names(vlm))
    trainable = [n for n, p in vlm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    assert report.trainable == sum(p.numel() for p in vlm.parameters() if p.requires_grad)
    assert report.total == total + report.trainable and 0 < report.fraction < 0.1
    assert re.match(
        r"LoRA rank 4 on \d+ language-model layers: .* parameters trainable \(\d+\.\d%\)", str(report)
    )

    with torch.no_grad():
        unchanged = vlm.encode(images(), TEXT).pooled  # B starts at zero
        for n, p in vlm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)
        changed = vlm.encode(images(), TEXT).pooled
    torch.testing.assert_close(unchanged, before)
    assert (changed - before).abs().max() > 1e-3

    vlm.train()
    vlm.encode(images(), TEXT).pooled.square().mean().backward()
    with_grad = [n for n, p in vlm.named_parameters() if p.grad is not None]
    assert with_grad and all("lora_" in n for n in with_grad)


@pytest.mark.parametrize("name", ["paligemma-3b", "llava-1.5-7b", "internvl2-2b"])
def test_language_pattern_skips_vision_layers_with_the_same_names(name):
    vlm = tiny(name)
    pattern = target_pattern(vlm, "language")
    vision_q = [n for n in linear_names(vlm, vlm.vision_model) if n.endswith("q_proj")]
    assert vision_q, "these vision towers also have q_proj layers"
    assert not any(re.fullmatch(pattern, n) for n in vision_q)
    assert all(re.fullmatch(target_pattern(vlm, "vision"), n) for n in vision_q)


def test_lora_on_the_vision_tower():
    vlm = tiny("qwen2-vl-2b")
    report = apply_lora(vlm, target="vision")
    assert report.target == "vision" and report.layers > 0
    assert all(n.startswith(vlm.vision_model + ".") for n in adapted_names(vlm))
    assert vlm.encode(images(), TEXT).pooled.isfinite().all()


def test_lora_arguments_are_checked():
    vlm = tiny("llava-1.5-7b")
    with pytest.raises(
        ValueError, match=r"target = 'text' is invalid: expected one of \('language', 'vision'\)"
    ):
        apply_lora(vlm, target="text")
    with pytest.raises(ValueError, match="rank = 0 is invalid: expected an int > 0"):
        apply_lora(vlm, rank=0)
    with pytest.raises(ValueError, match=r"dropout = 1.5 is invalid: expected a number in \[0, 1\)"):
        apply_lora(vlm, dropout=1.5)
    apply_lora(vlm)
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        apply_lora(vlm)


def test_freeze_and_unfreeze_cover_lora_parameters():
    vlm = tiny("qwen3-vl-4b")
    apply_lora(vlm)
    vlm.freeze_backbone()
    assert not any(p.requires_grad for p in vlm.parameters())
    vlm.unfreeze_backbone()
    assert all(p.requires_grad for p in vlm.parameters())


# -- QLoRA ------------------------------------------------------------------------------------------
def test_qlora_without_bitsandbytes_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` fail
    with pytest.raises(
        RuntimeError, match=r"^QLoRA needs bitsandbytes, which is not installed \(pip install"
    ) as info:
        apply_qlora(tiny("llava-1.5-7b"))
    assert "\n" not in str(info.value)


def test_qlora_with_a_broken_bitsandbytes_is_a_one_line_error(monkeypatch):
    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise OSError("libbitsandbytes_cpu.so: cannot open shared object file\nmore detail")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "bitsandbytes", raising=False)
    monkeypatch.setattr(builtins, "__import__", failing_import)
    expected = (
        r"^QLoRA needs bitsandbytes, which cannot run here: libbitsandbytes_cpu.so: cannot open shared object"
    )
    with pytest.raises(RuntimeError, match=expected):
        apply_qlora(tiny("llava-1.5-7b"))


def test_qlora_quantizes_the_language_model_and_trains_adapters():
    bnb = pytest.importorskip("bitsandbytes")
    vlm = tiny("qwen2-vl-2b")
    language = linear_names(vlm, vlm.language_model)
    total = sum(p.numel() for p in vlm.parameters())
    with torch.no_grad():
        before = vlm.encode(images(), TEXT).pooled

    report = apply_qlora(vlm, rank=4)

    assert report.method == "QLoRA" and report.layers == len(language)
    assert all(isinstance(vlm.model.get_submodule(n).base_layer, bnb.nn.Linear4bit) for n in language)
    assert not any(
        isinstance(m, bnb.nn.Linear4bit) for m in vlm.model.get_submodule(vlm.vision_model).modules()
    )
    assert report.total == total + report.trainable  # 4-bit weights counted as the values they hold
    assert all("lora_" in n for n, p in vlm.named_parameters() if p.requires_grad)
    with torch.no_grad():
        after = vlm.encode(images(), TEXT).pooled
    assert torch.nn.functional.cosine_similarity(after, before).min() > 0.95  # 4-bit weights approximate
    vlm.train()
    vlm.encode(images(), TEXT).pooled.square().mean().backward()
    assert any(p.grad is not None for n, p in vlm.named_parameters() if "lora_B" in n)
    vlm.unfreeze_backbone()  # 4-bit weights cannot take gradients and are skipped
