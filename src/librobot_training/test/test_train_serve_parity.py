"""Training and serving feed every model alike: a frame of a recorded episode through the trainer's
path (EpisodeDataset -> collate -> to_model_batch) and through the deployed one (the raw frames,
one control step at a time, into Policy), then the model, seeded alike, must give the same chunk.
A skew here (another resize, normalisation or history order) is invisible in the training loss and
ruins closed-loop success."""

import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate

from librobot_models.checkpoint import save_checkpoint
from librobot_models.frameworks.common import VLMFrameworkConfig
from librobot_models.policy import Normalize, Policy
from librobot_models.registry import get_vla_config, list_vlas
from librobot_training.datasets import EpisodeDataset, open_source
from librobot_training.train import to_model_batch

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_episodes import make_synthetic_episodes  # noqa: E402

EPISODE, FRAME = 1, 7  # the frame compared, late enough for a history window


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    path = tmp_path_factory.mktemp("parity")
    make_synthetic_episodes(path, n_episodes=2, length=12, state_dim=6, image_shape=(48, 64))
    return path


def tiny_config(name):
    config = get_vla_config(name, state_dim=6, action_dim=6, chunk_size=4, camera_names=("front",),
                            image_size=(32, 32))
    if isinstance(config, VLMFrameworkConfig):
        config = config.replace(vlm="internvl2-2b", vlm_tiny=True)
    return config


def chunk(model, inputs):
    if hasattr(model, "reset"):
        model.reset()
    torch.manual_seed(0)
    with torch.no_grad():
        return model.sample_actions(inputs)


@pytest.mark.parametrize("name", list_vlas())
def test_training_and_serving_give_the_model_the_same_inputs(name, episodes, tmp_path):
    config = tiny_config(name)
    dataset = EpisodeDataset(episodes, config.chunk_size, ["front"], history=config.observation_history)
    norm_stats = dataset.compute_norm_stats()
    torch.manual_seed(0)
    model = config.create().eval()
    save_checkpoint(tmp_path, model, config, norm_stats, {"camera_names": ["front"], "rate_hz": 10.0})
    policy = Policy.from_checkpoint(tmp_path)

    # training: the sample of that frame, collated and normalised as the training loop does
    index = dataset.episodes[0].length * EPISODE + FRAME
    normalize = Normalize({"state": norm_stats["state"], "actions": norm_stats["actions"]})
    trained_on = to_model_batch(default_collate([dataset[index]]), normalize, torch.device("cpu"))
    trained_on = {k: v for k, v in trained_on.items() if k not in ("actions", "action_is_pad")}

    # serving: the frames up to it, one control step at a time, as the node passes them
    source = open_source(episodes)
    fields = source.read(EPISODE, ["state", "images/front"])
    instruction = source.episode(EPISODE).instruction
    seen = []
    policy.model.sample_actions = lambda inputs, **kw: seen.append(inputs) or chunk(model, inputs)
    policy.reset()
    for t in range(FRAME + 1):
        obs = {"images": {"front": fields["images/front"][t]}, "state": fields["state"][t],
               "instruction": instruction}
        policy.infer(obs) if t == FRAME else policy.observe(obs)
    served = seen[-1]

    assert served["state"].shape == trained_on["state"].shape
    torch.testing.assert_close(served["state"], trained_on["state"])
    assert served.get("instruction") == trained_on["instruction"]
    torch.testing.assert_close(chunk(model, served), chunk(model, trained_on), atol=1e-5, rtol=1e-4)
