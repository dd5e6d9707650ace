"""The real ROS graph end to end at small scale: record a bag in each storage format, convert it,
and run a policy closed-loop on the simulated arm."""

import json

import h5py
import numpy as np
import pytest

from librobot_bringup import demo, record
from librobot_training.bag_to_hdf5 import main as bag_to_hdf5

@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_record_then_convert(tmp_path, storage, capsys):
    bag = tmp_path / "bag"
    assert record.main(["--output", str(bag), "--episodes", "1", "--time-limit", "4",
                        "--storage", storage]) == 0
    assert "recorded 1 episodes" in capsys.readouterr().out
    suffix = {"mcap": ".mcap", "sqlite3": ".db3"}[storage]
    assert list(bag.glob(f"*{suffix}")) and (bag / "metadata.yaml").is_file()

    out = tmp_path / "hdf5"
    assert bag_to_hdf5([str(bag), "--output", str(out), "--sim", "--no-progress"]) == 0
    summary = json.loads((out / "dataset.json").read_text())
    assert len(summary["episodes"]) == 1
    with h5py.File(out / "episode_000000.hdf5") as f:
        frames = f.attrs["num_frames"]
        # 4 s at 10 Hz, less the time before every stream (the expert's first command) is there
        assert 15 <= frames <= 41
        assert np.all(np.diff(f["/timestamps/sample_ns"][()]) == 100_000_000)
        assert f["/observations/images/front"].shape == (frames, 120, 160, 3)
        assert f["/action"].shape == (frames, 6) and np.all(np.isfinite(f["/action"][()]))
        assert f.attrs["instruction"] == "put the red cube in the green square"
        assert f.attrs["success"] in (0, 1) and bool(f.attrs["sim"])
        # the expert moved the arm: commanded targets change over the episode
        assert np.ptp(f["/action"][()], axis=0).max() > 0.1


def test_closed_loop_demo_runs_episodes_and_reports_latency(capsys):
    # the shipped checkpoint (the default): a random model's chunks may be refused by the safety
    # layer's max step, and then there is no latency to report
    assert demo.main(["--episodes", "1", "--time-limit", "3"]) == 0
    out = capsys.readouterr().out
    assert "success rate: " in out and "/1 = " in out
    assert "inference latency: p50" in out and "observation-to-command latency" in out


def test_demo_rejects_a_directory_that_is_not_a_checkpoint(tmp_path, capsys):
    assert demo.main(["--checkpoint", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err


# -- the humanoid: several controllers, the same node, converter and recorder --------------------
def test_humanoid_expert_recorded_through_ros_converts_to_its_commanded_joints(tmp_path, capsys):
    """The scripted expert drives the humanoid's twin through ROS, one trajectory per commanded
    group; the bag converts to the 19 commanded joints (legs held, left out) and solves the task."""
    bag = tmp_path / "bag"
    assert record.main(["--robot", "humanoid", "--output", str(bag), "--episodes", "1", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "expert success 1/1" in out
    for group in ("waist", "left_arm", "left_gripper", "right_arm", "right_gripper"):
        assert f"/{group}_controller/joint_trajectory: " in out
    assert "legs_controller" not in out

    hdf5 = tmp_path / "hdf5"
    assert bag_to_hdf5([str(bag), "--output", str(hdf5), "--embodiment", "humanoid", "--sim", "--no-progress"]) == 0
    with h5py.File(hdf5 / "episode_000000.hdf5") as f:
        frames = f.attrs["num_frames"]
        assert 100 <= frames <= 200  # about 13 s of the expert at 10 Hz
        joints = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["joint_names"]]
        assert len(joints) == 19 and joints[0] == "waist_yaw_joint" and "left_knee_joint" not in joints
        action, qpos = f["/action"][()], f["/observations/qpos"][()]
        assert action.shape == qpos.shape == (frames, 19)
        assert f["/observations/images/head"].shape == (frames, 120, 160, 3)
        assert int(f.attrs["success"]) == 1
        # every group's commands are in the action: the waist turned, both hands moved and gripped
        for name in ("waist_yaw_joint", "left_shoulder_pitch_joint", "right_shoulder_pitch_joint",
                     "left_gripper_joint", "right_gripper_joint"):
            assert np.ptp(action[:, joints.index(name)]) > 0.02, name
        # and the arm followed them: the measured joints track the commanded ones
        assert np.abs(qpos[5:] - action[4:-1]).mean() < 0.05


def test_humanoid_closed_loop_demo_commands_every_group(tiny_humanoid_checkpoint, capsys):
    assert demo.main(["--robot", "humanoid", "--checkpoint", str(tiny_humanoid_checkpoint),
                      "--episodes", "1", "--time-limit", "3"]) == 0
    out = capsys.readouterr().out
    assert "success rate: 0/1" in out and "observation-to-command latency" in out


# -- the wheel loader: a drive's speed channel through the drive node -----------------------------
def test_wheel_loader_expert_recorded_through_ros_converts_to_the_policy_view(tmp_path, capsys):
    """The expert drives the loader's twin through ROS: the hydraulics through their trajectory
    controller's topic, the speed as wheel trajectories to the drive node. The bag converts to
    [articulation, ground_speed, boom, bucket]: the commanded speed from the wheel trajectories,
    the measured one from the wheels, and the machine drove as commanded."""
    bag = tmp_path / "bag"
    assert record.main(["--robot", "wheel_loader", "--output", str(bag), "--episodes", "1", "--seed", "3",
                        "--time-limit", "8"]) == 0
    out = capsys.readouterr().out
    for topic in ("/hydraulics_controller/joint_trajectory", "/drive/joint_trajectory", "/drive/wheel_commands"):
        assert f"{topic}: " in out, out

    hdf5 = tmp_path / "hdf5"
    assert bag_to_hdf5([str(bag), "--output", str(hdf5), "--embodiment", "wheel_loader", "--sim",
                        "--no-progress"]) == 0
    with h5py.File(hdf5 / "episode_000000.hdf5") as f:
        frames = f.attrs["num_frames"]
        assert 50 <= frames <= 81  # 8 s at 10 Hz, less the start-up
        joints = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["joint_names"]]
        assert joints == ["articulation_joint", "ground_speed", "boom_joint", "bucket_joint"]
        action, qpos = f["/action"][()], f["/observations/qpos"][()]
        assert f["/observations/images/cab"].shape == (frames, 120, 160, 3)
        assert np.isfinite(action).all() and np.isfinite(qpos).all()
        # the expert drives into the pile: commanded forward, and the machine moved as commanded
        speed = action[:, 1]
        assert speed.max() > 0.5
        assert np.abs(qpos[5:, 1] - speed[4:-1]).mean() < 0.3
