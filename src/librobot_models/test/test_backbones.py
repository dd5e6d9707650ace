"""VLM backbones: every registered variant, tiny for behaviour and full size on the meta device for
its architecture. A tiny forward is a few milliseconds on one CPU thread."""

import json

import pytest
import torch
from transformers import AutoTokenizer

from librobot_models.backbones import (
    Florence2Config,
    Qwen2VLConfig,
    Qwen3VLConfig,
    VLMBackbone,
    build_tokenizer,
    create_vlm,
    get_vlm_config,
    list_vlms,
)
from librobot_models.backbones.base import WRAPPER_FILE
from librobot_models.registry import VLMS, register_vlm

# Parameters (billions) of the published checkpoints.
PUBLISHED = {
    "qwen2-vl-2b": 2.21,
    "qwen2-vl-7b": 8.29,
    "qwen3-vl-4b": 4.44,
    "qwen3-vl-8b": 8.77,
    "florence-2-base": 0.23,
    "florence-2-large": 0.77,
    "paligemma-3b": 2.92,
    "internvl2-2b": 2.21,
    "internvl2-8b": 8.08,
    "llava-1.5-7b": 7.06,
    "llava-1.5-13b": 13.35,
}
TEXT = ["pick up the red cube", "open the top drawer and put the spoon inside"]


def images(batch: int = 2, num_images: int = 2, seed: int = 0) -> torch.Tensor:
    """(B, N, 3, 40, 52) in [0, 1]: not the model's size, so the wrapper resizes."""
    return torch.rand(batch, num_images, 3, 40, 52, generator=torch.Generator().manual_seed(seed))


def tiny(name: str, **overrides) -> VLMBackbone:
    torch.manual_seed(0)
    return create_vlm(name, tiny=True, **overrides).eval()


# -- registry ----------------------------------------------------------------------------------------
def test_every_variant_and_alias_is_registered():
    assert list_vlms() == sorted(PUBLISHED)
    aliases = {
        "qwen-vl": "qwen2-vl-2b",
        "qwen2vl": "qwen2-vl-2b",
        "QWEN2_VL": "qwen2-vl-2b",
        "qwen3-vl-7b": "qwen3-vl-8b",
        "qwen3-vl": "qwen3-vl-4b",
        "florence-2": "florence-2-base",
        "paligemma": "paligemma-3b",
        "internvl2": "internvl2-2b",
        "llava-7b": "llava-1.5-7b",
        "llava-13b": "llava-1.5-13b",
    }
    for alias, name in aliases.items():
        assert VLMS.canonical(alias) == name
        assert get_vlm_config(alias) == get_vlm_config(name)


def test_unknown_name_lists_choices_and_closest_match():
    choices = ", ".join(sorted(PUBLISHED))
    with pytest.raises(
        ValueError, match=rf"unknown VLM 'qwen2vl-2b'\. Did you mean 'qwen2-vl-2b'\? Available: {choices}$"
    ):
        create_vlm("qwen2vl-2b", tiny=True)
    with pytest.raises(
        ValueError, match=r"unknown VLM 'lava-7b'\. Did you mean 'llava-1.5-7b'\?"
    ):  # via an alias
        create_vlm("lava-7b")
    with pytest.raises(ValueError, match=r"unknown VLM 'gpt'\. Available: florence-2-base, "):
        create_vlm("gpt")


def test_register_vlm_adds_a_variant_and_rejects_clashes():
    with VLMS.scratch():

        @register_vlm("my-llava", aliases=("mine",))
        def my_llava():
            return get_vlm_config("llava-1.5-7b", tiny=True, pooling="last")

        assert "my-llava" in list_vlms() and "mine" not in list_vlms()
        assert create_vlm("mine").config.pooling == "last"
        with pytest.raises(ValueError, match="'llava-7b' of 'other' is already taken"):
            register_vlm("other", aliases=("llava-7b",))(my_llava)
        with pytest.raises(TypeError, match="is not a callable returning a VLMConfig"):
            register_vlm("broken")(42)
        register_vlm("not-a-config")(dict)
        with pytest.raises(TypeError, match="returning dict, not a VLMConfig"):
            create_vlm("not-a-config")
    assert "my-llava" not in list_vlms()


# -- configs -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_config_maps_to_transformers_and_back(name):
    config = get_vlm_config(name)
    assert type(config).from_json(config.to_json()) == config
    ids = {role: i for i, role in enumerate(config.special_tokens)}
    architecture = type(config).architecture_from_hf(config.to_hf(ids))
    assert architecture == {key: getattr(config, key) for key in architecture}
    assert config.tiny().to_dict().keys() == config.to_dict().keys()


def test_config_errors_name_the_field_value_and_expectation():
    qwen2 = get_vlm_config("qwen2-vl-2b")
    with pytest.raises(ValueError, match=r"Qwen2VLConfig.image_size = \(100, 100\) .* multiples of 28"):
        qwen2.replace(image_size=(100, 100))
    with pytest.raises(ValueError, match=r"mrope_section = \(16, 24, 16\) .* summing to head_dim / 2 = 64"):
        qwen2.replace(mrope_section=(16, 24, 16))
    with pytest.raises(
        ValueError, match=r"Qwen3VLConfig.deepstack_visual_indexes = \(8, 30\) .* \[0, vision_layers = 27\)"
    ):
        get_vlm_config("qwen3-vl-8b", deepstack_visual_indexes=(8, 30))
    with pytest.raises(ValueError, match=r"num_position_embeddings = 2000 .* a perfect square"):
        get_vlm_config("qwen3-vl-4b", num_position_embeddings=2000)
    with pytest.raises(ValueError, match=r"Florence2Config.image_size = \(1632, 1632\) .* sides <= 1600"):
        get_vlm_config("florence-2-base", image_size=(1632, 1632))
    with pytest.raises(ValueError, match=r"pooling = 'max' is invalid: expected one of \('mean', 'last'\)"):
        get_vlm_config("llava", pooling="max")
    with pytest.raises(ValueError, match=r"num_kv_heads = 3 .* a divisor of num_heads \(16\)"):
        get_vlm_config("internvl2-2b", num_kv_heads=3)
    with pytest.raises(ValueError, match=r"unknown keys \['hidden'\]"):
        get_vlm_config("paligemma", hidden=8)
    assert type(qwen2) is Qwen2VLConfig and type(get_vlm_config("qwen3-vl-4b")) is Qwen3VLConfig
    assert type(get_vlm_config("florence-2-large")) is Florence2Config


# -- full size on the meta device --------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_full_size_parameter_count_matches_the_published_model(name):
    with torch.device("meta"):
        vlm = create_vlm(name)
    parameters = list(vlm.parameters())
    assert all(p.is_meta for p in parameters)
    billions = sum(p.numel() for p in parameters) / 1e9
    assert abs(billions - PUBLISHED[name]) / PUBLISHED[name] < 0.10, f"{name}: {billions:.3f} B"
    assert vlm.get_embedding_dim() == vlm.model.config.get_text_config().hidden_size


# -- tiny behaviour ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_encode_shapes_mask_and_pooling(name):
    vlm = tiny(name)
    assert sum(p.numel() for p in vlm.parameters()) < 2_000_000
    x = images()
    with torch.no_grad():
        out = vlm.encode(x, TEXT)
        as_uint8 = vlm.encode((x * 255).round().to(torch.uint8), TEXT)
    batch, length, dim = out.tokens.shape
    assert (batch, dim) == (2, vlm.get_embedding_dim()) and dim == 128
    assert out.mask.shape == (2, length) and out.mask.dtype == torch.bool
    assert out.pooled.shape == (2, dim) and out.pooled.isfinite().all() and out.tokens.isfinite().all()
    # right padding: every row is real tokens then padding; the longer text fills the batch
    assert torch.equal(out.mask, out.mask.cummin(dim=1).values) and out.mask[1].all()
    assert out.mask.sum(1)[0] < length
    assert out.mask.sum(1)[0] >= 2 * vlm.image_tokens_per_image()
    mean = (out.tokens * out.mask[..., None]).sum(1) / out.mask.sum(1, keepdim=True)
    torch.testing.assert_close(out.pooled, mean)
    torch.testing.assert_close(as_uint8.pooled, out.pooled, atol=2e-2, rtol=0)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_padding_does_not_change_a_sample(name):
    vlm = tiny(name, pooling="last")
    x = images()
    with torch.no_grad():
        batched = vlm.encode(x, TEXT)
        alone = vlm.encode(x[:1], TEXT[:1])
    real = int(batched.mask[0].sum())
    assert alone.tokens.shape[1] == real
    torch.testing.assert_close(batched.tokens[0, :real], alone.tokens[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batched.pooled[0], alone.tokens[0, -1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_freeze_and_unfreeze(name):
    vlm = tiny(name)
    vlm.freeze_backbone()
    assert not any(p.requires_grad for p in vlm.parameters())
    vlm.unfreeze_backbone()
    assert all(p.requires_grad for p in vlm.parameters())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_unused_modules_are_exactly_those_without_gradient_and_layers_can_be_cut(name):
    vlm = tiny(name).train()
    out = vlm.encode(images(), TEXT)
    (out.tokens.sum() + out.pooled.sum()).backward()
    unused = {n for n, p in vlm.named_parameters() if p.grad is None or not p.grad.any()}
    vlm.freeze_unused()
    assert unused == {n for n, p in vlm.named_parameters() if not p.requires_grad}

    cut = tiny(name)
    cut.keep_language_layers(1)
    assert len(cut.language_layers()) == 1 and cut.encode(images(), TEXT).tokens.isfinite().all()
    with pytest.raises(ValueError, match=r"n_layers = 2 is invalid: expected an int in \[1, 1\]"):
        cut.keep_language_layers(2)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_gradient_checkpointing_gives_the_same_output_and_gradients(name):
    vlm = tiny(name).train()
    x = images(num_images=1)

    def run():
        torch.manual_seed(1)  # Florence-2 has dropout; the same seed gives the same masks
        vlm.zero_grad()
        out = vlm.encode(x, TEXT)
        out.pooled.square().mean().backward()
        grads = [p.grad.clone() for p in vlm.parameters() if p.grad is not None]
        return out.pooled.detach(), grads

    plain, plain_grads = run()
    vlm.gradient_checkpointing_enable()
    assert vlm.is_gradient_checkpointing
    checkpointed, checkpointed_grads = run()
    torch.testing.assert_close(checkpointed, plain)
    assert len(checkpointed_grads) == len(plain_grads) > 0
    for a, b in zip(checkpointed_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    vlm.gradient_checkpointing_disable()
    assert not vlm.is_gradient_checkpointing


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_local_directory_round_trip(name, tmp_path):
    vlm = tiny(name, pooling="last", max_text_tokens=12)
    vlm.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer.json", WRAPPER_FILE} <= {
        p.name for p in tmp_path.iterdir()
    }
    assert json.loads((tmp_path / WRAPPER_FILE).read_text())["family"] == vlm.config.family

    loaded = create_vlm(name, pretrained=tmp_path).eval()
    assert loaded.config == vlm.config and type(loaded) is type(vlm)
    assert loaded.tokenizer(TEXT).input_ids == vlm.tokenizer(TEXT).input_ids
    x = images()
    with torch.no_grad():
        expected, actual = vlm.encode(x, TEXT), loaded.encode(x, TEXT)
    assert torch.equal(actual.tokens, expected.tokens) and torch.equal(actual.mask, expected.mask)
    # wrapper fields may change for a pretrained model, the architecture may not
    assert create_vlm(name, pretrained=tmp_path, pooling="mean").config.pooling == "mean"
    with pytest.raises(ValueError, match=r"cannot override architecture fields \['hidden_size'\]"):
        create_vlm(name, pretrained=tmp_path, hidden_size=256)


def test_pretrained_directory_errors_say_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"directory .*nowhere does not exist"):
        create_vlm("llava", pretrained=tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(
        FileNotFoundError, match=r"incomplete: missing weights \(model.safetensors or .*\), a tokenizer"
    ):
        create_vlm("llava", pretrained=tmp_path)
    with pytest.raises(ValueError, match="pretrained must be a local directory .* got True"):
        create_vlm("qwen2-vl-2b", pretrained=True)
    with pytest.raises(ValueError, match="tiny=True .* cannot be combined with pretrained"):
        create_vlm("qwen2-vl-2b", pretrained=tmp_path, tiny=True)
    tiny("paligemma-3b").save_pretrained(tmp_path / "paligemma")
    with pytest.raises(ValueError, match=r"model_type 'paligemma', expected 'llava' for a llava backbone"):
        create_vlm("llava", pretrained=tmp_path / "paligemma")


def test_bad_inputs_name_what_was_expected():
    vlm = tiny("llava-1.5-7b")
    with pytest.raises(
        ValueError, match=r"images must be a tensor \(B, N_img, 3, H, W\), got \(2, 3, 40, 52\)"
    ):
        vlm.encode(images()[:, 0], TEXT)
    with pytest.raises(ValueError, match="text must be a list of 2 strings"):
        vlm.encode(images(), TEXT[:1])
    with pytest.raises(ValueError, match="text must be a list of 2 strings"):
        vlm.encode(images(), "pick")


def test_florence_rejects_prompts_longer_than_its_positions():
    vlm = tiny("florence-2-base", image_size=(512, 512))  # 16 x 16 + 1 = 257 tokens > 256 positions
    with pytest.raises(
        ValueError,
        match=r"prompt of \d+ tokens \(1 images x 257 \+ text\) exceeds max_position_embeddings = 256",
    ):
        vlm.encode(images(num_images=1), TEXT)


@pytest.mark.parametrize("name", ["qwen2-vl-2b", "qwen3-vl-4b"])
def test_qwen_patches_keep_merge_blocks_together(name):
    """Row k of pixel_values is patch (r, c) with merge blocks in raster order and the patches of a
    block consecutive; each row is (channel, frame, y, x) with the image repeated over frames."""
    vlm = tiny(name)
    c = vlm.config
    p, m, frames = c.patch_size, c.spatial_merge_size, c.temporal_patch_size
    height, width = 2 * p * m, 3 * p * m
    channel, y, x = torch.meshgrid(torch.arange(3), torch.arange(height), torch.arange(width), indexing="ij")
    pixels = (channel * 1_000_000 + y * 1000 + x).double()[None]  # (1, 3, H, W), value encodes position
    vlm.config = c.replace(image_size=(height, width))
    rows = vlm.patchify(pixels)
    assert rows.shape == (height // p * width // p, 3 * frames * p * p)
    for k in range(rows.shape[0]):
        block, inner = divmod(k, m * m)
        block_row, block_col = divmod(block, width // p // m)
        r, col = block_row * m + inner // m, block_col * m + inner % m
        expected = pixels[0, :, r * p : (r + 1) * p, col * p : (col + 1) * p]  # (3, p, p)
        assert torch.equal(rows[k].view(3, frames, p, p), expected[:, None].expand(3, frames, p, p))


# -- tokenizer ---------------------------------------------------------------------------------------
def test_in_code_tokenizer_saves_reloads_and_is_deterministic(tmp_path):
    specials = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "image": "<image>", "image_start": "<img>"}
    tok = build_tokenizer(specials, vocab_size=600)
    assert tok.convert_tokens_to_ids(list(specials.values())) == [0, 1, 2, 3, 4]
    assert (tok.pad_token_id, tok.bos_token_id, tok.image_token, tok.image_token_id) == (0, 1, "<image>", 3)
    assert len(tok) <= 600
    text = "Pick up the ÜBER-cube <image> 🤖"
    ids = tok(text, add_special_tokens=False).input_ids
    assert 3 in ids and tok.decode(ids) == text
    assert build_tokenizer(specials, vocab_size=600).get_vocab() == tok.get_vocab()
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text, add_special_tokens=False).input_ids == ids and again.image_token_id == 3
    with pytest.raises(ValueError, match="distinct non-empty strings"):
        build_tokenizer({"pad": "<x>", "eos": "<x>"})
    with pytest.raises(ValueError, match=r"vocab_size = 100 is too small: expected >= 261"):
        build_tokenizer(specials, vocab_size=100)


def test_every_family_tokenizer_knows_its_prompt_tokens():
    for name in ("qwen2-vl-2b", "florence-2-base", "paligemma-3b", "internvl2-2b", "llava-1.5-7b"):
        config = get_vlm_config(name)
        vlm = tiny(name)
        assert vlm.model.config.image_token_id == vlm.tokenizer.convert_tokens_to_ids(
            config.special_tokens["image"]
        )
        assert vlm.pad_id != vlm.model.config.image_token_id
