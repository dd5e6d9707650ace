"""Every registered framework through the same checks (build, loss, gradients, sampling, checkpoint,
Policy), each VLM-based one on a tiny VLM, then the checks particular to one framework.

Tiny VLMs build in ~0.1 s and encode in ~10 ms on one CPU thread; InternVL2's is the fastest, so it
serves every VLM framework. A few run on other families too: pi0 on its own (PaliGemma), GR00T on an
encoder-decoder (Florence-2), RT-2 on one with unused vision layers (LLaVA)."""

import numpy as np
import pytest
import torch

from librobot_models.backbones import create_vlm
from librobot_models.checkpoint import load_checkpoint, save_checkpoint
from librobot_models.frameworks.common import VLMFrameworkConfig
from librobot_models.frameworks.octo import OBSERVATION, READOUT, TASK, block_causal_mask
from librobot_models.normalization import NormStats
from librobot_models.policy import Policy
from librobot_models.registry import create_vla, get_vla_config, list_vlas

VLM = "internvl2-2b"
SHAPES = {
    "state_dim": 4,
    "action_dim": 3,
    "chunk_size": 6,
    "camera_names": ("front", "wrist"),
    "image_size": (32, 32),
}
OTHER_FAMILIES = [("pi0", "paligemma-3b"), ("groot", "florence-2-base"), ("rt2", "llava-1.5-7b")]
CASES = [pytest.param(name, VLM, id=name) for name in list_vlas()] + [
    pytest.param(name, vlm, id=f"{name}-{vlm}") for name, vlm in OTHER_FAMILIES
]


def small_config(name, vlm=VLM, **overrides):
    """The framework's defaults at test shapes; a VLM framework on the tiny `vlm`."""
    config = get_vla_config(name, **SHAPES, **overrides)
    if isinstance(config, VLMFrameworkConfig):
        config = config.replace(vlm=vlm, vlm_tiny=True)
    return config


def build(config, seed=0):
    torch.manual_seed(seed)
    return config.create()


@pytest.fixture
def norm_stats():
    rng = np.random.default_rng(0)
    return {
        "state": NormStats.from_array(rng.normal(0.5, 2.0, size=(64, SHAPES["state_dim"]))),
        "actions": NormStats.from_array(rng.normal(-1.0, 0.5, size=(64, SHAPES["action_dim"]))),
    }


def numpy_obs(rng, instruction="pick up the cube"):
    return {
        "images": {
            "front": rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8),
            "wrist": rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8),
        },
        "state": rng.normal(size=SHAPES["state_dim"]),
        "instruction": instruction,
    }


def sample(model, obs, seed=0):
    """A chunk from a fixed seed (the contract is sample_actions(obs)), with any per-episode state of
    the model forgotten first."""
    if hasattr(model, "reset"):
        model.reset()
    torch.manual_seed(seed)
    return model.sample_actions(obs)


# -- every framework ------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "vlm"), CASES)
def test_loss_gradients_and_sampling(name, vlm):
    """Finite loss; backward reaches exactly the trainable parameters; an optimizer step leaves frozen
    ones bit-identical; sample_actions gives a finite (B, chunk, action_dim) chunk."""
    config = small_config(name, vlm)
    model = build(config).train()
    batch = config.fake_batch(2)
    loss, logs = model.compute_loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert logs and all(isinstance(v, float) and np.isfinite(v) for v in logs.values())

    loss.backward()
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    frozen = set(params) - trainable
    assert trainable
    assert sorted(n for n in trainable if params[n].grad is None) == []
    assert sorted(n for n in frozen if params[n].grad is not None) == []
    before = {n: params[n].detach().clone() for n in params}
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()
    assert all(torch.equal(params[n], before[n]) for n in frozen)
    assert any(not torch.equal(params[n], before[n]) for n in trainable)
    if isinstance(config, VLMFrameworkConfig):
        vlm_trainable = {n for n in trainable if n.startswith("backbone.")}
        if config.freeze_vlm:
            assert not vlm_trainable
        elif config.vlm_lora_rank:
            assert vlm_trainable and all("lora_" in n for n in vlm_trainable)
        else:
            assert any("lora_" not in n for n in vlm_trainable)

    model.eval()
    actions = sample(model, batch)
    assert actions.shape == (2, config.chunk_size, config.action_dim)
    assert torch.isfinite(actions).all()


@pytest.mark.parametrize(("name", "vlm"), CASES)
def test_checkpoint_round_trip_and_policy(name, vlm, tmp_path, norm_stats):
    config = small_config(name, vlm)
    model = build(config).eval()
    save_checkpoint(tmp_path / "ckpt", model, config, norm_stats, {"rate_hz": 10.0})
    loaded, loaded_config, _, metadata = load_checkpoint(tmp_path / "ckpt")
    assert loaded_config == config and metadata == {"rate_hz": 10.0} and not loaded.training
    obs = config.fake_batch(2, seed=1)
    torch.testing.assert_close(sample(loaded, obs), sample(model, obs), rtol=0, atol=0)

    policy = Policy.from_checkpoint(tmp_path / "ckpt")
    rng = np.random.default_rng(0)
    policy.reset()
    for _ in range(2):  # the second call meets any cached state (Helix's latent, Octo's window)
        out = policy.infer(numpy_obs(rng))
        assert out["actions"].shape == (config.chunk_size, config.action_dim)
        assert out["actions"].dtype == np.float32 and np.isfinite(out["actions"]).all()


def test_a_framework_built_around_a_vlm_module_records_its_variant(tmp_path, norm_stats):
    torch.manual_seed(0)
    vlm = create_vlm("qwen2-vl-2b", tiny=True)
    model = create_vla("groot", vlm=vlm, **SHAPES).eval()
    assert model.backbone is vlm
    assert (model.config.vlm, model.config.vlm_tiny, model.config.vlm_dtype) == ("qwen2-vl-2b", True, "float32")
    save_checkpoint(tmp_path / "ckpt", model, model.config, norm_stats, {})
    loaded = load_checkpoint(tmp_path / "ckpt")[0]
    obs = model.config.fake_batch(2, seed=1)
    torch.testing.assert_close(sample(loaded, obs), sample(model, obs), rtol=0, atol=0)

    with pytest.raises(ValueError, match="matches no registered VLM variant"):
        create_vla("groot", vlm=create_vlm("qwen2-vl-2b", tiny=True, max_text_tokens=7))
    with pytest.raises(ValueError, match="framework 'act' has no VLM"):
        create_vla("act", vlm=vlm)
    config = small_config("pi0", vlm="qwen2-vl-2b").replace(vlm_tiny=False)
    with pytest.raises(ValueError, match="the VLM passed is .*'qwen2-vl-2b', True.*but Pi0Config has .*False"):
        config.create(vlm_pretrained=vlm)


def test_unknown_framework_names_the_closest_match():
    with pytest.raises(ValueError, match="unknown framework 'octoo'. Did you mean 'octo'\\?"):
        create_vla("octoo")
    with pytest.raises(ValueError, match="unknown framework 'groot_n2'. Did you mean 'groot'\\?"):
        get_vla_config("groot_n2")
    with pytest.raises(ValueError, match="GR00TConfig.vlm = 'qwen9-vl' is invalid: unknown VLM"):
        get_vla_config("groot-n1", vlm="qwen9-vl")


def test_aliases_and_the_nested_head_follow_the_framework():
    assert type(get_vla_config("groot-n1")) is type(get_vla_config("groot"))
    assert type(get_vla_config("openvla-oft")) is type(get_vla_config("openvla"))
    config = get_vla_config("pi0", chunk_size=7, action_dim=5, cond_dim=64)
    assert (config.head.chunk_size, config.head.action_dim, config.head.cond_dim) == (7, 5, 64)
    again = type(config).from_json(config.to_json())
    assert again == config and again.replace(chunk_size=9).head.chunk_size == 9
    with pytest.raises(ValueError, match="RectifiedFlowConfig.n_sample_steps = 0 is invalid"):
        get_vla_config("pi0", head={"n_sample_steps": 0})
    with pytest.raises(ValueError, match="CustomConfig.head_config = .* no \\['chunk_size'\\]"):
        get_vla_config("custom", head_config={"chunk_size": 3})


def test_pretrained_vlm_is_a_build_argument_not_a_config_field(tmp_path):
    torch.manual_seed(1)
    create_vlm(VLM, tiny=True).save_pretrained(tmp_path / "vlm")
    config = small_config("openvla", vlm_lora_rank=0)
    with pytest.raises(ValueError, match="vlm_tiny = True builds a random tiny VLM: set vlm_tiny to false"):
        config.create(vlm_pretrained=tmp_path / "vlm")
    model = config.replace(vlm_tiny=False).create(vlm_pretrained=tmp_path / "vlm")
    saved = create_vlm(VLM, pretrained=tmp_path / "vlm").state_dict()
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in saved.items())
    assert str(tmp_path) not in config.to_json()


def test_a_bfloat16_vlm_feeds_float32_heads():
    config = small_config("pi0", vlm_dtype="bfloat16")
    model = build(config)
    assert (
        model.backbone.dtype == torch.bfloat16
        and model.head.denoiser.action_out.weight.dtype == torch.float32
    )
    loss, _ = model.compute_loss(config.fake_batch(2))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert sample(model.eval(), config.fake_batch(1)).dtype == torch.float32


def test_policy_passes_the_instruction_to_the_model(norm_stats):
    config = small_config("openvla")
    model = build(config)
    seen = []
    sample_actions = model.sample_actions
    model.sample_actions = lambda batch: seen.append(batch) or sample_actions(batch)
    policy = Policy(model, config, norm_stats)
    rng = np.random.default_rng(0)
    obs = numpy_obs(rng, "open the drawer")
    first = policy.infer(obs)["actions"]
    assert seen[-1]["instruction"] == ["open the drawer"]
    other = policy.infer({**obs, "instruction": "close the drawer"})["actions"]
    assert not np.allclose(first, other)  # the text reaches the VLM
    policy.infer({key: value for key, value in obs.items() if key != "instruction"})
    assert "instruction" not in seen[-1]


# -- framework-specific ---------------------------------------------------------------------------
def test_groot_reads_a_middle_layer_of_a_frozen_vlm():
    config = small_config("groot")
    model = build(config)
    assert config.freeze_vlm and len(model.backbone.language_layers()) == 1  # round(0.5 * 2) of 2
    model.train()
    assert not model.backbone.training and model.vl_adapter.training  # a frozen VLM stays in eval mode


def test_helix_refreshes_its_latent_only_at_the_slow_rate(norm_stats):
    config = small_config("helix", fast_rate_hz=10.0, slow_rate_hz=2.5)
    model = build(config).eval()
    calls = []
    system2 = model.system2
    model.system2 = lambda batch: calls.append(len(calls)) or system2(batch)
    obs = config.fake_batch(1)
    outputs = [model.sample_actions(obs) for _ in range(10)]
    assert len(calls) == 3  # calls 0, 4 and 8 run the VLM
    torch.testing.assert_close(outputs[1], outputs[0])  # same latent, same observation
    model.sample_actions({**obs, "instruction": ["stack the cups"]})
    assert len(calls) == 4  # a new instruction refreshes at once

    policy = Policy(model, config, norm_stats)
    rng = np.random.default_rng(0)
    policy.reset()
    for _ in range(5):
        policy.infer(numpy_obs(rng))
    assert len(calls) == 6  # the first call after the reset and the fifth
    policy.reset()
    assert model._latent is None

    # with the observation time, the slow rate holds whatever the call rate: 2.5 Hz is every 0.4 s
    del calls[:]
    for t in (0.0, 0.4, 0.8, 1.0, 1.1, 1.2):  # replanning every 0.4 s, then every 0.1 s
        policy.infer({**numpy_obs(rng), "time_s": 100.0 + t})
    assert len(calls) == 4  # at 0.0, 0.4, 0.8 and 1.2
    policy.infer({**numpy_obs(rng), "time_s": 50.0})  # time went back (a new episode without reset)
    assert len(calls) == 5
    with pytest.raises(ValueError, match=r"obs\['time_s'\] is 'soon': expected a finite number"):
        policy.infer({**numpy_obs(rng), "time_s": "soon"})


def test_octo_mask_is_block_causal():
    n_task, n_obs, n_readouts, window = 2, 3, 1, 2
    mask = block_causal_mask(n_task, n_obs, n_readouts, window)
    kinds = [TASK] * 2 + ([OBSERVATION] * 3 + [READOUT]) * 2
    steps = [-1] * 2 + [0] * 4 + [1] * 4
    for q in range(len(kinds)):
        for k in range(len(kinds)):
            if kinds[q] == TASK:
                expected = kinds[k] == TASK
            elif kinds[k] == TASK:
                expected = True
            elif kinds[k] == OBSERVATION:
                expected = steps[k] <= steps[q]
            else:  # nothing but a readout of the same or a later step sees a readout
                expected = kinds[q] == READOUT and steps[k] <= steps[q]
            assert mask[q, k].item() == expected, (q, k)


def test_octo_history_window():
    config = small_config("octo", history_window=2)
    model = build(config).eval()
    batch = config.fake_batch(2)
    assert batch["images"].shape[:2] == (2, 2) and batch["observation_is_pad"][0, 0]
    changed = batch["images"].clone()
    changed[:, 0] = torch.rand_like(changed[:, 0])  # the earlier step, padded for sample 0 only
    a, b = (model.conditioning({**batch, "images": images}).tokens for images in (batch["images"], changed))
    torch.testing.assert_close(a[0], b[0])  # padded history does not matter
    assert not torch.allclose(a[1], b[1])  # real history does

    current = {**batch, "images": batch["images"][:, 1], "state": batch["state"][:, 1]}  # one step
    with pytest.raises(ValueError, match="history_window = 2 needs observation windows"):
        model.compute_loss(current)


def test_policy_feeds_a_history_window_the_observations_of_consecutive_control_steps(norm_stats):
    config = small_config("octo", history_window=2)
    model = build(config).eval()
    policy = Policy(model, config, norm_stats)
    rng = np.random.default_rng(0)
    a, b, c = (numpy_obs(rng) for _ in range(3))
    windows = []
    model.sample_actions = lambda batch: windows.append(batch) or torch.zeros(1, 6, 3)

    policy.infer(a)  # nothing before the episode start: padded
    policy.observe(b)  # a control step without inference
    policy.infer(c)
    policy.reset()
    policy.infer(b)
    first, second, after_reset = windows
    assert first["images"].shape == (1, 2, 2, 3, 32, 32) and first["state"].shape == (1, 2, 4)
    assert first["observation_is_pad"].tolist() == [[True, False]]
    assert torch.equal(first["images"][:, 0], torch.zeros_like(first["images"][:, 0]))
    assert torch.equal(first["images"][:, 1], policy._preprocess(a)["images"])
    assert second["observation_is_pad"].tolist() == [[False, False]]
    for step, obs in enumerate((b, c)):  # the step before is the observed one, not the last inference
        assert torch.equal(second["images"][:, step], policy._preprocess(obs)["images"])
        assert torch.equal(second["state"][:, step], policy._preprocess(obs)["state"])
    assert after_reset["observation_is_pad"].tolist() == [[True, False]]


def test_rt2_action_tokens_round_trip():
    config = small_config("rt2")
    model = build(config)
    r, bins = config.action_range, config.head.n_bins
    actions = (torch.rand(2, config.chunk_size, config.action_dim) * 2 - 1) * r  # inside the range
    tokens = model.actions_to_tokens(actions)
    assert tokens.shape == (2, config.chunk_size * config.action_dim) and tokens.dtype == torch.long
    assert 0 <= tokens.min() and tokens.max() < bins
    assert (model.tokens_to_actions(tokens) - actions).abs().max() <= r / bins + 1e-6  # half a bin
    torch.testing.assert_close(model.actions_to_tokens(model.tokens_to_actions(tokens)), tokens)
    outside = model.tokens_to_actions(model.actions_to_tokens(torch.full((1, config.chunk_size, 3), 10.0)))
    torch.testing.assert_close(outside, torch.full_like(outside, r - r / bins))  # clipped to the top bin
    model.eval()
    obs = config.fake_batch(1)
    torch.testing.assert_close(model.sample_actions(obs), model.sample_actions(obs))  # greedy


@pytest.mark.parametrize("name", ["pi0", "groot", "octo"])
def test_policy_inpaints_a_chunk_in_robot_units(name, norm_stats):
    """RTC's guidance through Policy.infer (flow matching: pi0, GR00T; DDPM: Octo): targets in
    robot units, frozen steps met."""
    config = small_config(name)
    policy = Policy(build(config), config, norm_stats)
    assert policy.supports_inpainting
    obs = numpy_obs(np.random.default_rng(0))
    k, a = config.chunk_size, config.action_dim
    targets = np.full((k, a), -1.2, np.float32)
    weights = np.array([1.0, 1.0, 0.5, 0.0, 0.0, 0.0][:k])
    torch.manual_seed(0)
    free = policy.infer(obs)["actions"]
    torch.manual_seed(0)
    guided = policy.infer(obs, inpaint=(targets, weights))["actions"]
    assert np.abs(guided[:2] - targets[:2]).mean() < 0.2 * np.abs(free[:2] - targets[:2]).mean()
    with pytest.raises(ValueError, match=r"inpainting targets \(2, 3\)"):
        policy.infer(obs, inpaint=(targets[:2], weights))


def test_a_policy_without_a_flow_head_refuses_to_inpaint(norm_stats):
    config = small_config("openvla")
    policy = Policy(build(config), config, norm_stats)
    assert not policy.supports_inpainting
    with pytest.raises(ValueError, match="cannot inpaint a chunk"):
        policy.infer(numpy_obs(np.random.default_rng(0)),
                     inpaint=(np.zeros((config.chunk_size, config.action_dim)), np.ones(config.chunk_size)))
