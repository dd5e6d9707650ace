"""Offline evaluation: a policy's chunks against recorded actions, per joint, in robot units."""

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from librobot_models.checkpoint import load_checkpoint, save_checkpoint
from librobot_models.policy import Policy
from librobot_training.evaluate import main, offline_errors
from librobot_training.train import main as train_main

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_episodes import make_synthetic_episodes  # noqa: E402

TINY_ACT = ["framework=act", "model.state_dim=null", "model.action_dim=null", "model.image_size=[32,32]",
            "model.vision_channels=[16,32]", "model.dim_model=32", "model.n_heads=4", "model.dim_feedforward=64",
            "model.n_encoder_layers=1", "model.n_vae_encoder_layers=1", "model.chunk_size=4",
            "train.batch_size=8", "train.lr=1e-3", "train.warmup_steps=5", "train.log_every=50",
            "train.cpu_threads=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(dataset, a tiny ACT trained on it, the same model untrained with the same normalisation)."""
    root = tmp_path_factory.mktemp("offline")
    data = root / "data"
    make_synthetic_episodes(data, n_episodes=3, length=20, state_dim=4)
    assert train_main([f"dataset={data}", f"output_dir={root / 'trained'}", *TINY_ACT, "train.steps=150"]) == 0
    _, config, norm_stats, metadata = load_checkpoint(root / "trained")
    save_checkpoint(root / "untrained", config.create(), config, norm_stats, metadata)
    return data, root / "trained", root / "untrained"


def test_errors_match_a_hand_computation(trained):
    """A policy that always answers the same chunk: its errors are those of that chunk, by numpy."""
    data, checkpoint, _ = trained
    policy = Policy.from_checkpoint(checkpoint)
    constant = np.array([0.1, -0.2, 0.3, 0.0], np.float32)
    policy.infer = lambda obs, **kw: {"actions": np.tile(constant, (policy.chunk_size, 1))}
    errors = offline_errors(policy, data, episodes=[0, 2], stride=3)

    diffs = []
    for path in sorted(data.glob("*.hdf5"))[::2]:
        with h5py.File(path) as f:
            actions = f["action"][()].astype(np.float64)
        for t in range(0, len(actions), 3):
            diffs.append(constant - actions[t : t + policy.chunk_size])
    diffs = np.concatenate(diffs)
    assert errors.steps == len(diffs) and errors.observations == 2 * 7 and errors.episodes == 2
    assert np.allclose(errors.mse, (diffs**2).mean(0)) and np.allclose(errors.l1, np.abs(diffs).mean(0))
    assert errors.joint_names == [f"joint_{i}" for i in range(4)]


def test_a_trained_policy_errs_less_than_an_untrained_one(trained, capsys):
    data, checkpoint, untrained = trained
    assert main(["--checkpoint", str(checkpoint), "--offline", str(data), "--offline-episodes", "1"]) == 0
    out = capsys.readouterr().out
    assert "offline action error: 1 episodes, 20 observations, 74 chunk steps" in out
    assert all(f"joint_{i}" in out for i in range(4)) and "MSE" in out and "mean" in out

    good = offline_errors(Policy.from_checkpoint(checkpoint), data)
    bad = offline_errors(Policy.from_checkpoint(untrained), data)
    assert good.l1.mean() < 0.5 * bad.l1.mean() and good.mse.mean() < 0.25 * bad.mse.mean()


def test_bad_offline_arguments_are_one_line_and_exit_2(trained, tmp_path, capsys):
    data, checkpoint, _ = trained
    for args, message in [
        (["--offline", str(tmp_path / "none")], f"dataset directory {tmp_path / 'none'} does not exist"),
        (["--offline", str(data), "--offline-episodes", "3"], "episodes [3] are not in 0..2"),
        (["--offline", str(data), "--stride", "0"], "stride = 0: expected an int >= 1"),
    ]:
        assert main(["--checkpoint", str(checkpoint), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
