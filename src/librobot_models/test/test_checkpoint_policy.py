import json

import numpy as np
import pytest
import torch

from librobot_models.checkpoint import checkpoint_id, load_checkpoint, save_checkpoint
from librobot_models.normalization import NormStats, norm_stats_from_json, norm_stats_to_json
from librobot_models.policy import Policy, TemporalEnsembler


@pytest.fixture
def norm_stats():
    rng = np.random.default_rng(0)
    return {
        "state": NormStats.from_array(rng.normal(1.0, 2.0, size=(100, 4))),
        "actions": NormStats.from_array(rng.normal(-3.0, 0.5, size=(100, 3))),
    }


@pytest.fixture
def checkpoint(tmp_path, tiny_act_config, norm_stats):
    torch.manual_seed(0)
    model = tiny_act_config.create()
    metadata = {"embodiment": "so100", "joint_names": ["a", "b", "c"], "rate_hz": np.float64(10.0)}
    save_checkpoint(tmp_path / "ckpt", model, tiny_act_config, norm_stats, metadata)
    return tmp_path / "ckpt", model


def _obs(rng, state=None):
    return {
        "images": {
            "front": rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8),
            "wrist": rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8),
        },
        "state": rng.normal(size=4) if state is None else state,
    }


# -- normalisation ----------------------------------------------------------------------------
def test_norm_stats_round_trip_and_inverse(norm_stats):
    stats = norm_stats["state"]
    x = np.random.default_rng(1).normal(1.0, 2.0, size=(500, 4)).astype(np.float32)
    z = stats.normalize(x)
    assert abs(z.mean()) < 0.2 and abs(z.std() - 1) < 0.1
    np.testing.assert_allclose(stats.unnormalize(z), x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats.normalize(torch.from_numpy(x)), torch.from_numpy(z))
    again = norm_stats_from_json(norm_stats_to_json(norm_stats))
    for key in norm_stats:
        np.testing.assert_array_equal(again[key].mean, norm_stats[key].mean)
        np.testing.assert_array_equal(again[key].std, norm_stats[key].std)


def test_constant_dimension_does_not_blow_up():
    stats = NormStats.from_array(np.array([[1.0, 0.5], [3.0, 0.5]]))
    assert np.all(np.isfinite(stats.normalize(np.array([2.0, 0.6]))))
    with pytest.raises(ValueError, match="NormStats.mean .* finite 1-D array"):
        NormStats(mean=[np.nan], std=[1.0], min=[0.0], max=[1.0])


# -- checkpoint -------------------------------------------------------------------------------
def test_round_trip_gives_identical_outputs(checkpoint, tiny_act_config):
    path, model = checkpoint
    loaded, config, stats, metadata = load_checkpoint(path)
    assert config == tiny_act_config and not loaded.training
    assert metadata == {"embodiment": "so100", "joint_names": ["a", "b", "c"], "rate_hz": 10.0}
    assert set(stats) == {"state", "actions"}
    obs = tiny_act_config.fake_batch(2)
    model.eval()
    torch.testing.assert_close(loaded.sample_actions(obs), model.sample_actions(obs), rtol=0, atol=0)
    document = json.loads((path / "config.json").read_text())
    assert document["framework"] == "act" and document["model"]["chunk_size"] == 8


def test_saving_again_replaces_files_and_changes_the_id(checkpoint, tiny_act_config, norm_stats):
    path, model = checkpoint
    first = checkpoint_id(path)
    assert first == checkpoint_id(path) and len(first) == 12
    (path / "train_log.jsonl").write_text("{}\n")  # other files in the directory survive
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_checkpoint(path, model, tiny_act_config, norm_stats, {})
    assert checkpoint_id(path) != first
    assert (path / "train_log.jsonl").exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt"]  # no staging directory left behind
    loaded, *_ = load_checkpoint(path)
    torch.testing.assert_close(next(loaded.parameters()), next(model.parameters()))


def test_corrupt_or_missing_files_are_refused(checkpoint):
    path, _ = checkpoint
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # one flipped byte in the tensor data
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match the SHA-256"):
        load_checkpoint(path)
    weights.write_bytes(bytes(data[:100]))  # truncated
    with pytest.raises(ValueError, match="corrupt or half-written"):
        load_checkpoint(path)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        load_checkpoint(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is corrupt"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(path / "nowhere")


def test_config_that_does_not_fit_the_weights_is_refused(checkpoint):
    path, _ = checkpoint
    document = json.loads((path / "config.json").read_text())
    document["model"]["n_encoder_layers"] = 2
    (path / "config.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"does not fit ACT: missing \['encoder\.layers\.1\."):
        load_checkpoint(path)
    document["model"]["n_encoder_layers"] = 1
    document["model"]["dim_feedforward"] = 32
    (path / "config.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match="cannot load .* into ACT"):
        load_checkpoint(path)
    document["model"]["dim_ff"] = 32
    (path / "config.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"config.json: ACTConfig: unknown keys \['dim_ff'\]"):
        load_checkpoint(path)


def test_only_registered_configs_are_saved(tmp_path, tiny_act_config, norm_stats):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Unregistered(type(tiny_act_config)):
        pass

    config = Unregistered(**tiny_act_config.to_dict())
    with pytest.raises(ValueError, match="Unregistered is not the registered config"):
        save_checkpoint(tmp_path / "c", config.create(), config, norm_stats)
    with pytest.raises(ValueError, match="reserved keys"):
        save_checkpoint(tmp_path / "c", tiny_act_config.create(), tiny_act_config, norm_stats, {"model": 1})


# -- policy -----------------------------------------------------------------------------------
def test_policy_infers_a_chunk_in_robot_units(checkpoint, norm_stats):
    path, model = checkpoint
    policy = Policy.from_checkpoint(path)
    assert (policy.framework, policy.chunk_size, policy.action_dim) == ("act", 8, 3)
    assert policy.camera_names == ["front", "wrist"] and policy.joint_names == ["a", "b", "c"]
    assert policy.rate_hz == 10.0 and policy.checkpoint_id == checkpoint_id(path)

    obs = _obs(np.random.default_rng(0))
    out = policy.infer(obs)
    assert out["actions"].shape == (8, 3) and out["actions"].dtype == np.float32

    # the same numbers by hand: normalise the state, run the model, unnormalise the actions
    images = torch.stack(
        [
            torch.nn.functional.interpolate(
                torch.from_numpy(obs["images"][c]).permute(2, 0, 1)[None].float() / 255,
                size=(32, 32),
                mode="bilinear",
                antialias=True,
            )[0]
            for c in ("front", "wrist")
        ]
    )[None]
    state = torch.from_numpy(norm_stats["state"].normalize(obs["state"].astype(np.float32)))[None]
    with torch.no_grad():
        expected = norm_stats["actions"].unnormalize(
            model.eval().sample_actions({"images": images, "state": state})[0]
        )
    np.testing.assert_allclose(out["actions"], expected.numpy(), rtol=1e-4, atol=1e-4)
    assert abs(out["actions"].mean() - norm_stats["actions"].mean.mean()) < 3.0  # robot units, not z-scores


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda o: o["images"].pop("wrist"), r"lacks camera 'wrist'; expected \['front', 'wrist'\]"),
        (
            lambda o: o["images"].update(front=np.zeros((48, 64, 3), np.float32)),
            r"\['front'\] is a float32 array of shape \(48, 64, 3\): expected an \(H, W, 3\) uint8 RGB",
        ),
        (
            lambda o: o["images"].update(front=np.zeros((48, 64), np.uint8)),
            r"is a uint8 array of shape \(48, 64\): expected an \(H, W, 3\)",
        ),
        (lambda o: o.update(state=np.zeros(5)), r"obs\['state'\] has shape \(5,\): expected \(4,\)"),
        (lambda o: o.update(state=np.array([0.0, np.nan, 0.0, 0.0])), r"non-finite values"),
        (lambda o: o.update(state="abc"), r"obs\['state'\] is 'abc': expected \(4,\) floats"),
        (lambda o: o.update(instruction=3), r"obs\['instruction'\] is 3: expected a str"),
        (lambda o: o.pop("images"), r"obs\['images'\] is None: expected a dict"),
    ],
)
def test_policy_rejects_bad_observations(checkpoint, change, message):
    policy = Policy.from_checkpoint(checkpoint[0])
    obs = _obs(np.random.default_rng(0))
    change(obs)
    with pytest.raises(ValueError, match=message):
        policy.infer(obs)


def test_policy_accepts_instruction_and_temporal_ensembling(tmp_path, tiny_act_config, norm_stats):
    config = tiny_act_config.replace(temporal_ensemble_coeff=0.0)
    save_checkpoint(tmp_path / "c", config.create(), config, norm_stats, {})
    policy = Policy.from_checkpoint(tmp_path / "c")
    rng = np.random.default_rng(0)
    first = policy.infer({**_obs(rng), "instruction": "pick"})["actions"]
    second = policy.infer(_obs(rng))["actions"]
    policy.reset()
    assert len(policy.ensembler.chunks) == 0
    fresh = policy.infer(_obs(np.random.default_rng(5)))["actions"]
    assert first.shape == second.shape == fresh.shape == (8, 3)


def test_temporal_ensembler_weights_older_predictions_more():
    uniform = TemporalEnsembler(coeff=0.0, chunk_size=3)
    uniform(np.array([[0.0], [1.0], [2.0]]))
    out = uniform(np.array([[10.0], [11.0], [12.0]]))
    np.testing.assert_allclose(out[:, 0], [(1 + 10) / 2, (2 + 11) / 2, 12])  # rows shifted by one step

    biased = TemporalEnsembler(coeff=1.0, chunk_size=3)
    biased(np.zeros((3, 1)))
    out = biased(np.ones((3, 1)))
    np.testing.assert_allclose(out[0, 0], 1 / (1 + np.e))  # the older chunk (zeros) weighs e times more
    biased.reset()
    np.testing.assert_allclose(biased(np.ones((3, 1))), np.ones((3, 1)))


def test_a_vlm_checkpoint_keeps_the_tokenizer_its_weights_were_trained_with(tmp_path):
    """A VLM framework's token ids travel with its weights: a tokenizer that differs from the
    in-code one (as a real pretrained VLM's does) comes back from the checkpoint."""
    from librobot_models.registry import get_vla_config

    config = get_vla_config("openvla", vlm="llava-1.5-7b", image_size=(32, 32), chunk_size=4,
                            camera_names=("front",), state_dim=3, action_dim=3, cond_dim=32)
    torch.manual_seed(0)
    model = config.create().eval()
    model.backbone.tokenizer.add_tokens(["<grasp>"])  # an id the in-code tokenizer does not have
    stats = {"state": NormStats.from_array(np.zeros((4, 3))), "actions": NormStats.from_array(np.zeros((4, 3)))}
    save_checkpoint(tmp_path / "ckpt", model, config, stats)
    loaded, *_ = load_checkpoint(tmp_path / "ckpt")

    text = "pick <grasp> now"
    ids = lambda m: m.backbone.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids(loaded) == ids(model) and len(ids(model)) < len(text)
    batch = config.fake_batch(batch_size=1)
    with torch.no_grad():
        assert torch.equal(model.backbone.encode(batch["images"], [text]).tokens,
                           loaded.backbone.encode(batch["images"], [text]).tokens)
