"""`ros2 run` of every console script, as a ROS user calls them (the converter and the trainer are
run this way in test_so100_launch.py's bag test)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE_BAG = REPO / "src/librobot_training/test/fixtures/rosbag2/so100_demo_mcap"


def console_scripts() -> list[tuple[str, str]]:
    """(package, executable) of every console script the packages' setup.py declare."""
    found = []
    for setup in sorted(REPO.glob("src/*/setup.py")):
        for name in re.findall(r'"(\w+) = [\w.]+:main"', setup.read_text()):
            found.append((setup.parent.name, name))
    return found


NODES = {("librobot_drivers", "driver_node"), ("librobot_drivers", "expert_node"),
         ("librobot_drivers", "drive_node"), ("librobot_policy_node", "policy_node")}


HARDWARE_NODES = {("librobot_drivers", "teleop_node")}  # needs an arm: started on an emulated one


def test_every_console_script_is_covered_here():
    assert set(console_scripts()) == NODES | HARDWARE_NODES | {
        ("librobot_bringup", "record"), ("librobot_bringup", "demo"),
        ("librobot_training", "bag_to_hdf5"), ("librobot_training", "train"),
        ("librobot_training", "evaluate"), ("librobot_training", "export"),
        ("librobot_training", "export_lerobot"), ("librobot_training", "zoo"), ("librobot_models", "serve"),
        ("librobot_drivers", "calibrate"), ("librobot_drivers", "feetech_emulator")}


@pytest.mark.parametrize("package, executable", sorted(set(console_scripts()) - NODES - HARDWARE_NODES))
def test_command_line_tools_have_help(cli, package, executable):
    done = cli.ros2("run", package, executable, "--help")
    assert done.stdout.startswith("usage: "), done.stdout


@pytest.mark.parametrize("package, executable", sorted(NODES))
def test_nodes_start_join_the_graph_and_stop_on_ctrl_c(cli, tmp_path, package, executable):
    name = f"run_{executable}"
    node = cli.start(["ros2", "run", package, executable, "--ros-args", "-r", f"__node:={name}"],
                     tmp_path / "node.log")
    try:
        for _ in range(30):
            listing = cli.ros2("node", "list", check=False).stdout
            if f"/{name}" in listing.split():
                break
        assert f"/{name}" in listing.split(), listing + node.log()
    finally:
        code = node.interrupt(group=True)  # ros2 run leaves Ctrl-C to the terminal's group signal
    assert code == 0 and "Traceback" not in node.log(), node.log()


def test_evaluate_demo_and_record_run(cli, tiny_checkpoint, tmp_path):
    evaluate = cli.ros2("run", "librobot_training", "evaluate", "--checkpoint", str(tiny_checkpoint),
                        "--episodes", "1", "--time-limit", "2", timeout=180).stdout
    assert re.search(r"success rate: [01]/1", evaluate), evaluate

    # the shipped checkpoint (the default): a random model's chunks are refused by the safety
    # layer's max step, and then there is no latency to report
    demo = cli.ros2("run", "librobot_bringup", "demo", "--episodes", "1", "--time-limit", "3",
                    timeout=240).stdout
    assert re.search(r"success rate: [01]/1", demo) and "inference latency: p50" in demo, demo

    bag = tmp_path / "bag"
    record = cli.ros2("run", "librobot_bringup", "record", "--output", str(bag), "--episodes", "1",
                      "--time-limit", "3", timeout=240).stdout
    assert "recorded 1 episodes" in record, record
    assert (bag / "metadata.yaml").is_file()


def test_a_user_mistake_is_one_line_and_exit_code_2(cli, tmp_path):
    done = cli.ros2("run", "librobot_training", "evaluate", "--checkpoint", str(tmp_path),
                    check=False)
    assert done.returncode == 2, done.stdout
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("librobot-evaluate: error: ") and "config.json" in lines[0], lines
    assert lines[1:] == ["[ros2run]: Process exited with failure 2"], lines  # ros2 run's own line


def test_the_converter_reads_the_shipped_fixture_bag(cli, tmp_path):
    out = tmp_path / "hdf5"
    cli.ros2("run", "librobot_training", "bag_to_hdf5", str(FIXTURE_BAG), "--output", str(out),
             "--sim", "--no-progress", timeout=180)
    assert json.loads((out / "dataset.json").read_text())["episodes"]


def test_emulator_calibrate_and_teleop_node_through_ros2_run(cli, observer, tmp_path):
    """`ros2 run librobot_drivers feetech_emulator` serves a bus; `calibrate` imports a LeRobot
    calibration into it; `teleop_node` reads it as the leader arm at 60 Hz, publishes the
    follower's commands, and stops cleanly on Ctrl-C."""
    import time

    from trajectory_msgs.msg import JointTrajectory

    port_file = tmp_path / "port"
    emulator = cli.start(["ros2", "run", "librobot_drivers", "feetech_emulator", "--port-file", str(port_file)],
                         tmp_path / "emulator.log")
    try:
        for _ in range(100):
            if port_file.is_file() and port_file.read_text().strip():
                break
            time.sleep(0.1)
        port = port_file.read_text().strip()
        motors = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
        lerobot = {m: {"id": i + 1, "drive_mode": 0, "homing_offset": 0, "range_min": 1000, "range_max": 3000}
                   for i, m in enumerate(motors)}
        (tmp_path / "lerobot.json").write_text(json.dumps(lerobot))
        calibration = tmp_path / "leader.json"
        done = cli.ros2("run", "librobot_drivers", "calibrate", "--port", port, "--lerobot",
                        str(tmp_path / "lerobot.json"), "--output", str(calibration))
        assert "calibration written to" in done.stdout, done.stdout + done.stderr

        node = cli.start(["ros2", "run", "librobot_drivers", "teleop_node", "--ros-args",
                          "-p", f"leader_port:={port}", "-p", f"leader_calibration:={calibration}"],
                         tmp_path / "teleop.log")
        commands = []
        observer.create_subscription(JointTrajectory, "/arm_controller/joint_trajectory", commands.append, 100)
        try:
            assert observer.spin_until(lambda: len(commands) > 5, 60), node.log()
            first, start = len(commands), time.monotonic()
            observer.spin_until(lambda: False, 3.0)
            rate = (len(commands) - first) / (time.monotonic() - start)
            # positions only, in the ROS order, from the emulator's rest pose (ticks 2048)
            assert list(commands[-1].joint_names)[0] == "shoulder_pan_joint"
            assert len(commands[-1].points) == 1 and not commands[-1].points[0].velocities
        finally:
            code = node.interrupt(group=True)
        assert code == 0 and "Traceback" not in node.log(), node.log()
        assert rate >= 55, f"leader read at {rate:.0f} Hz"
        print(f"teleop_node: leader read and published at {rate:.1f} Hz")
    finally:
        emulator.interrupt(group=True)
