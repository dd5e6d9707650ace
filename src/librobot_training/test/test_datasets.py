import json
import pickle
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from librobot_training.datasets import DatasetInfo, EpisodeDataset, describe_dataset, open_source

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_episodes import make_synthetic_episodes  # noqa: E402


@pytest.fixture
def dataset_dir(tmp_path):
    make_synthetic_episodes(tmp_path, n_episodes=2, length=12, state_dim=4, camera_names=("front", "wrist"))
    return tmp_path


def test_describe_reads_the_root_attributes(dataset_dir):
    info = describe_dataset(dataset_dir)
    assert info.joint_names == ["joint_0", "joint_1", "joint_2", "joint_3"]
    assert info.camera_names == ["front", "wrist"]
    assert (info.state_dim, info.action_dim, info.rate_hz, info.embodiment) == (4, 4, 10.0, "synthetic")


def test_samples_index_frames_across_episodes(dataset_dir):
    dataset = EpisodeDataset(dataset_dir, chunk_size=5, camera_names=["wrist"])
    assert len(dataset) == 24
    with h5py.File(dataset_dir / "episode_0001.hdf5") as f:
        qpos, action, wrist = f["observations/qpos"][()], f["action"][()], f["observations/images/wrist"][()]
    sample = dataset[12 + 3]  # episode 1, frame 3
    np.testing.assert_array_equal(sample["state"], qpos[3])
    np.testing.assert_array_equal(sample["actions"], action[3:8])
    assert not sample["action_is_pad"].any()
    assert sample["images"].shape == (1, 3, 48, 64) and sample["images"].dtype == np.uint8
    np.testing.assert_array_equal(sample["images"][0], wrist[3].transpose(2, 0, 1))
    assert sample["instruction"] == "reach the target"
    with pytest.raises(IndexError):
        dataset[24]


def test_episode_end_repeats_the_last_action_and_masks_it(dataset_dir):
    dataset = EpisodeDataset(dataset_dir, chunk_size=5)
    with h5py.File(dataset_dir / "episode_0000.hdf5") as f:
        action = f["action"][()]
    sample = dataset[9]  # frames 9, 10, 11 exist; two steps past the end
    np.testing.assert_array_equal(sample["action_is_pad"], [False, False, False, True, True])
    np.testing.assert_array_equal(sample["actions"][:3], action[9:12])
    np.testing.assert_array_equal(sample["actions"][3:], np.repeat(action[11:12], 2, axis=0))
    last = dataset[11]
    np.testing.assert_array_equal(last["action_is_pad"], [False, True, True, True, True])


def test_history_window_reads_earlier_frames_and_pads_before_the_episode_start(dataset_dir):
    dataset = EpisodeDataset(dataset_dir, chunk_size=4, history=3)
    with h5py.File(dataset_dir / "episode_0001.hdf5") as f:
        qpos, front = f["observations/qpos"][()], f["observations/images/front"][()]
    sample = dataset[12 + 5]  # episode 1, frame 5: frames 3, 4, 5
    assert sample["images"].shape == (3, 2, 3, 48, 64) and sample["state"].shape == (3, 4)
    np.testing.assert_array_equal(sample["state"], qpos[3:6])
    np.testing.assert_array_equal(sample["images"][:, 0], front[3:6].transpose(0, 3, 1, 2))
    assert not sample["observation_is_pad"].any()
    start = dataset[12 + 1]  # frame 1: frame -1 does not exist, the first frame stands in, masked
    np.testing.assert_array_equal(start["observation_is_pad"], [True, False, False])
    np.testing.assert_array_equal(start["state"], qpos[[0, 0, 1]])
    # the current frame and the actions are those of the sample without history
    plain = EpisodeDataset(dataset_dir, chunk_size=4)[12 + 5]
    np.testing.assert_array_equal(sample["images"][-1], plain["images"])
    np.testing.assert_array_equal(sample["actions"], plain["actions"])
    assert "observation_is_pad" not in plain
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert batch["observation_is_pad"].shape == (2, 3) and batch["observation_is_pad"].dtype == torch.bool
    with pytest.raises(ValueError, match="history = 0: expected an int >= 1"):
        EpisodeDataset(dataset_dir, chunk_size=4, history=0)


def test_cache_subset_and_pickling_give_the_same_samples(dataset_dir):
    lazy = EpisodeDataset(dataset_dir, chunk_size=4)
    cached = EpisodeDataset(dataset_dir, chunk_size=4, episodes=[1], cache_in_memory=True)
    for key in ("images", "state", "actions", "action_is_pad"):
        np.testing.assert_array_equal(lazy[12 + 5][key], cached[5][key])
    lazy[0]  # opens a file handle; a pickled copy (spawned worker) must reopen its own
    clone = pickle.loads(pickle.dumps(lazy))
    np.testing.assert_array_equal(clone[3]["state"], lazy[3]["state"])
    batch = next(iter(torch.utils.data.DataLoader(lazy, batch_size=3)))
    assert batch["images"].shape == (3, 2, 3, 48, 64) and batch["action_is_pad"].dtype == torch.bool
    assert batch["instruction"] == ["reach the target"] * 3
    lazy.close()


def test_norm_stats_cover_every_frame(dataset_dir):
    stats = EpisodeDataset(dataset_dir, chunk_size=4).compute_norm_stats()
    qpos = []
    for name in ("episode_0000.hdf5", "episode_0001.hdf5"):
        with h5py.File(dataset_dir / name) as f:
            qpos.append(f["observations/qpos"][()])
    qpos = np.concatenate(qpos)
    np.testing.assert_allclose(stats["state"].mean, qpos.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["state"].max, qpos.max(0))
    assert stats["actions"].dim == 4


def test_bad_datasets_fail_with_a_clear_message(tmp_path, dataset_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EpisodeDataset(tmp_path / "missing", chunk_size=4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no episodes"):
        EpisodeDataset(tmp_path / "empty", chunk_size=4)
    with pytest.raises(ValueError, match=r"cameras \['top'\] are not in the dataset"):
        EpisodeDataset(dataset_dir, chunk_size=4, camera_names=["top"])


def test_dummy_source_is_deterministic_informative_and_shaped_by_its_options():
    options = {"episodes": 3, "length": 8, "state_dim": 3, "action_dim": 2, "cameras": ["top", "side"],
               "image_size": [24, 40], "rate_hz": 5, "instruction": "wave", "seed": 7}
    source = open_source("dummy", options)
    assert len(source) == 3 and source.info == DatasetInfo(
        joint_names=["joint_0", "joint_1", "joint_2"], camera_names=["top", "side"], rate_hz=5.0,
        state_dim=3, action_dim=2, embodiment=None)
    dataset = EpisodeDataset(source, chunk_size=4)
    sample = dataset[8 + 2]
    assert sample["images"].shape == (2, 3, 24, 40) and sample["actions"].shape == (4, 2)
    assert sample["instruction"] == "wave"
    again = EpisodeDataset(open_source("dummy", options), chunk_size=4)[8 + 2]
    for key in ("images", "state", "actions"):
        np.testing.assert_array_equal(sample[key], again[key])  # the same seed, the same episodes
    other = EpisodeDataset(open_source("dummy", {**options, "seed": 8}), chunk_size=4)[8 + 2]
    assert not np.array_equal(sample["state"], other["state"])
    episode = source.read(1, ["state", "action", "images/top"])
    np.testing.assert_array_equal(episode["state"][1:, :2], episode["action"][:-1])  # state lags the command
    bright = (episode["images/top"][:, 12, :, 0] == 230).argmax(1)  # the square's column follows joint 0
    assert np.corrcoef(bright, episode["state"][:, 0])[0, 1] > 0.99
    assert len(EpisodeDataset(source, chunk_size=4, cache_in_memory=True)) == 24


def test_open_source_rejects_bad_specs_and_options(dataset_dir):
    with pytest.raises(ValueError, match=r"dummy dataset_options: unknown keys \['lenght'\]"):
        open_source("dummy", {"lenght": 3})
    with pytest.raises(ValueError, match=r"dummy dataset: image_size = \[4, 4\], expected \[H, W\], both ints >= 8"):
        open_source("dummy", {"image_size": [4, 4]})
    with pytest.raises(ValueError, match=r"dataset_options \['seed'\] given, but HDF5 dataset .* takes none"):
        open_source(str(dataset_dir), {"seed": 1})
    assert open_source(f"hdf5:{dataset_dir}").info == describe_dataset(dataset_dir)
    with pytest.raises(ValueError, match=r"episodes \[5\] are out of range for the 2 episodes"):
        EpisodeDataset(dataset_dir, chunk_size=2, episodes=[5])


def test_the_trainer_runs_on_the_dummy_dataset(tmp_path):
    from librobot_training.train import main

    out = tmp_path / "run"
    args = ["dataset=dummy", "dataset_options={episodes: 3, length: 10, state_dim: 4, image_size: [32, 32]}",
            f"output_dir={out}", "model.image_size=[32,32]", "model.vision_channels=[16,32]", "model.dim_model=32",
            "model.n_heads=4", "model.dim_feedforward=64", "model.n_encoder_layers=1",
            "model.n_vae_encoder_layers=1", "model.chunk_size=4", "train.steps=2", "train.batch_size=4",
            "train.log_every=1", "train.eval.episodes=1", "train.eval.every=2", "train.eval.batches=1"]
    assert main(args) == 0
    assert json.loads((out / "config.json").read_text())["model"]["state_dim"] == 4
