"""`ros2 launch librobot_bringup so100.launch.py` as a ROS user runs it: the default system solves
episodes, the ros2 CLI reads and changes the policy node, and `ros2 bag record` of it trains."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
RECORDED = ["/camera/front/image_raw", "/joint_states", "/arm_controller/joint_trajectory",
            "/instruction", "/episode_events"]


@pytest.fixture(scope="module")
def default_launch(cli, tmp_path_factory):
    """The launch with no argument but rviz:=false, shared by the tests of this module."""
    with cli.launch(tmp_path_factory.mktemp("launch") / "launch.log") as system:
        system.wait_for_log(r"\[policy\]: loaded act checkpoint", timeout_s=120)
        active = system.wait_for_log(r"\[(\d+)\.(\d+)\] \[policy\]: active: commanding", timeout_s=30)
        system.active_ns = int(active.group(1)) * 10**9 + int(active.group(2).ljust(9, "0")[:9])
        yield system


def episode_ends(observer, timeout_s: float, count: int = 1, started_after_ns: int = 0,
                 until_success: bool = False):
    """The END events of the next `count` episodes that started at or after `started_after_ns`
    (the events topic keeps its history: a late subscriber also gets the episodes before), or
    with `until_success` those up to the first successful one."""
    from librobot_msgs.msg import EpisodeEvent

    from librobot_drivers.ros_common import EPISODE_EVENTS

    started, ends = set(), []

    def on_event(m) -> None:
        stamp = m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
        if m.event == EpisodeEvent.START and stamp >= started_after_ns:
            started.add(m.episode_index)
        elif m.event == EpisodeEvent.END and m.episode_index in started:
            ends.append(m)

    sub = observer.create_subscription(EpisodeEvent, "/episode_events", on_event, EPISODE_EVENTS)
    try:
        observer.spin_until(lambda: len(ends) >= count or (until_success and any(e.success for e in ends)),
                            timeout_s)
    finally:
        observer.destroy_subscription(sub)
    return ends


def test_default_launch_runs_the_shipped_policy_and_solves_an_episode(default_launch, observer):
    # Episodes the policy drove from their start (not one that ran while it was still loading),
    # up to its first success. The shipped policy solves most seeds, not each one: seeds 0 and 1
    # both failed in two CI runs (15 s each), the next four were solved (about 8 s each).
    ends = episode_ends(observer, timeout_s=150, count=6, started_after_ns=default_launch.active_ns,
                        until_success=True)
    assert any(e.success for e in ends), ([(e.seed, e.success) for e in ends],
                                          default_launch.log()[-3000:])


def test_every_parameter_reads_back_and_changes_live_or_is_refused_with_a_reason(default_launch, cli):
    names = cli.ros2("param", "list", "/policy").stdout.split()
    for name in ("checkpoint", "device", "embodiment", "execution", "max_observation_age_s",
                 "min_lead_s", "replan_steps", "torch_threads"):
        assert name in names
        assert "value is:" in cli.ros2("param", "get", "/policy", name).stdout
    described = cli.ros2("param", "describe", "/policy", "replan_steps").stdout
    assert "control periods between two inferences" in described and "Min value: 1" in described
    assert "Read only: true" in cli.ros2("param", "describe", "/policy", "device").stdout

    set_ = cli.ros2("param", "set", "/policy", "replan_steps", "8").stdout
    assert "Set parameter successful" in set_
    assert "Integer value is: 8" in cli.ros2("param", "get", "/policy", "replan_steps").stdout
    default_launch.wait_for_log(r"replanning every 800 ms|replan_steps 8", timeout_s=10)

    refused = cli.ros2("param", "set", "/policy", "replan_steps", "20", check=False).stdout
    assert "Setting parameter failed" in refused and "chunks have 20 steps" in refused
    assert "Integer value is: 8" in cli.ros2("param", "get", "/policy", "replan_steps").stdout
    refused = cli.ros2("param", "set", "/policy", "device", "cuda", check=False).stdout
    assert "Setting parameter failed" in refused and "read-only" in refused
    refused = cli.ros2("param", "set", "/policy", "max_observation_age_s", "-1.0", check=False).stdout
    assert "Setting parameter failed" in refused
    refused = cli.ros2("param", "set", "/policy", "checkpoint", "/nonexistent", check=False).stdout
    assert "Setting parameter failed" in refused and "not a checkpoint directory" in refused
    cli.ros2("param", "set", "/policy", "replan_steps", "4")

    assert "Set parameter successful" in cli.ros2("param", "set", "/policy", "execution",
                                                  "temporal_ensemble").stdout
    refused = cli.ros2("param", "set", "/policy", "execution", "blend", check=False).stdout
    assert "Setting parameter failed" in refused and "expected one of receding" in refused
    cli.ros2("param", "set", "/policy", "execution", "receding")


def test_checkpoint_swaps_live(default_launch, cli, tiny_checkpoint):
    assert "Set parameter successful" in cli.ros2(
        "param", "set", "/policy", "checkpoint", str(tiny_checkpoint)).stdout
    default_launch.wait_for_log(rf"loaded act checkpoint \w+ from {re.escape(str(tiny_checkpoint))}", 60)
    status = cli.ros2("topic", "echo", "--once", "/policy/status", "librobot_msgs/msg/PolicyStatus", timeout=30).stdout
    assert "framework: act" in status
    shipped = default_launch.wait_for_log(r"loaded act checkpoint \w+ from (\S+act_so100)", 5).group(1)
    cli.ros2("param", "set", "/policy", "checkpoint", shipped)
    default_launch.wait_for_log(rf"from {re.escape(str(tiny_checkpoint))}[\s\S]*loaded act checkpoint \w+ from \S+act_so100", 60)


def test_framework_swaps_live_between_the_shipped_checkpoints(default_launch, cli):
    """The launch's default `models` is the shipped checkpoints/ directory: a framework name picks one."""
    assert "Set parameter successful" in cli.ros2("param", "set", "/policy", "framework", "openvla").stdout
    default_launch.wait_for_log(r"loaded openvla checkpoint \w+ from \S+openvla_so100", 60)
    status = cli.ros2("topic", "echo", "--once", "/policy/status", "librobot_msgs/msg/PolicyStatus", timeout=30).stdout
    assert "framework: openvla" in status
    refused = cli.ros2("param", "set", "/policy", "framework", "nope", check=False).stdout
    assert "Setting parameter failed" in refused and "no so100 checkpoint of it in models" in refused
    assert "Set parameter successful" in cli.ros2("param", "set", "/policy", "framework", "act").stdout
    default_launch.wait_for_log(r"loaded openvla checkpoint[\s\S]*loaded act checkpoint \w+ from \S+act_so100", 60)


def test_the_model_moves_to_a_policy_server_and_back_from_the_cli(default_launch, cli, tmp_path):
    """`ros2 run librobot_models serve` beside the launch, `ros2 param set /policy policy_endpoint`:
    the node drives with the server's chunks; the server killed, the arm holds; '' returns the
    model to the node."""
    shipped = default_launch.wait_for_log(r"loaded act checkpoint \w+ from (\S+act_so100)", 5).group(1)
    server = cli.start(["ros2", "run", "librobot_models", "serve", "--checkpoint", shipped, "--port", "0"],
                       tmp_path / "serve.log")
    try:
        endpoint = "grpc://" + server.wait_for_log(r"on gRPC (127\.0\.0\.1:\d+)", 120).group(1)
        assert "Set parameter successful" in cli.ros2("param", "set", "/policy", "policy_endpoint", endpoint).stdout
        default_launch.wait_for_log(rf"loaded act checkpoint \w+ from {re.escape(endpoint)}", 60)
        chunks = cli.ros2("topic", "echo", "--once", "/policy/action_chunk", "librobot_msgs/msg/ActionChunk",
                          "--field", "sequence", timeout=30).stdout
        assert re.search(r"\d+", chunks), chunks
    finally:
        server.kill(group=True)
    default_launch.wait_for_log(rf"policy server {re.escape(endpoint)}: .*holding, retrying", 30)
    assert "Set parameter successful" in cli.ros2("param", "set", "/policy", "policy_endpoint", "").stdout
    default_launch.wait_for_log(rf"holding, retrying[\s\S]*loaded act checkpoint \w+ from {re.escape(shipped)}", 60)


def test_lifecycle_e_stop_and_diagnostics_from_the_cli(default_launch, cli):
    # the lifecycle services `ros2 lifecycle get/set` call (the shared ROS has no ros2lifecycle)
    def lifecycle_state() -> str:
        return cli.ros2("service", "call", "/policy/get_state", "lifecycle_msgs/srv/GetState",
                        timeout=30).stdout

    def transition(transition_id: int) -> str:  # 3 activate, 4 deactivate (lifecycle_msgs/Transition)
        return cli.ros2("service", "call", "/policy/change_state", "lifecycle_msgs/srv/ChangeState",
                        f"{{transition: {{id: {transition_id}}}}}", timeout=30).stdout

    assert "label='active'" in lifecycle_state()
    assert "success=True" in transition(4)
    assert "label='inactive'" in lifecycle_state()
    assert "success=True" in transition(3)
    default_launch.wait_for_log(r"active: commanding the robot[\s\S]*active: commanding the robot", 10)

    latched = cli.ros2("service", "call", "/policy/estop", "std_srvs/srv/Trigger", timeout=30).stdout
    assert "success=True" in latched and "e-stop latched" in latched
    status = cli.ros2("topic", "echo", "--once", "/policy/status", "librobot_msgs/msg/PolicyStatus",
                      timeout=30).stdout
    assert "e-stop latched" in status
    diagnostics = cli.ros2("topic", "echo", "--once", "/diagnostics",
                           "diagnostic_msgs/msg/DiagnosticArray", timeout=30).stdout
    assert "/policy: policy" in diagnostics and "/policy: input front" in diagnostics
    released = cli.ros2("service", "call", "/policy/release", "std_srvs/srv/Trigger", timeout=30).stdout
    assert "success=True" in released
    default_launch.wait_for_log(r"e-stop released", 10)


@pytest.mark.parametrize("qos", [[], ["--qos-durability", "transient_local"]], ids=["volatile", "latched"])
def test_an_instruction_from_the_cli_reaches_the_policy(default_launch, cli, qos):
    text = f"stack the cubes ({'latched' if qos else 'volatile'})"
    cli.ros2("topic", "pub", "--once", "-w", "1", *qos, "/instruction", "std_msgs/msg/String",
         f"{{data: '{text}'}}", timeout=60)
    default_launch.wait_for_log(re.escape(f"instruction: '{text}'"), timeout_s=10)


def test_node_info_shows_the_policy_wiring(default_launch, cli):
    info = cli.ros2("node", "info", "/policy").stdout
    for line in ("/camera/front/image_raw: sensor_msgs/msg/Image", "/joint_states: sensor_msgs/msg/JointState",
                 "/instruction: std_msgs/msg/String",
                 "/arm_controller/joint_trajectory: trajectory_msgs/msg/JointTrajectory",
                 "/policy/action_chunk: librobot_msgs/msg/ActionChunk"):
        assert line in info, info


def test_ros2_bag_record_of_the_running_system_converts_and_trains(default_launch, cli, tmp_path):
    """Four real recorders at once: mcap and sqlite3, each stopped cleanly and killed."""
    recorders = {}
    for storage in ("mcap", "sqlite3"):
        for ending in ("clean", "killed"):
            bag = tmp_path / f"{storage}_{ending}"
            recorders[bag] = (ending, cli.start(["ros2", "bag", "record", "-s", storage, "-o", str(bag),
                                              *RECORDED], tmp_path / f"{bag.name}.log"))
    for _, recorder in recorders.values():
        recorder.wait_for_log(r"Recording\.\.\.|Subscribed to topic", timeout_s=60)
    time.sleep(25)  # two to three episodes of the running system
    for ending, recorder in recorders.values():
        if ending == "clean":
            assert recorder.interrupt() == 0
        else:
            recorder.kill()

    # the user's next steps, with the entry points they would type
    for bag, (ending, _) in recorders.items():
        out = tmp_path / f"{bag.name}_hdf5"
        cli.ros2("run", "librobot_training", "bag_to_hdf5", str(bag), "--output", str(out), "--sim",
                 "--no-progress", timeout=300)
        dataset = json.loads((out / "dataset.json").read_text())
        assert dataset["episodes"], bag
        with h5py.File(out / dataset["episodes"][0]["file"]) as f:
            assert f["/observations/images/front"].shape[1:] == (120, 160, 3)
            assert np.all(np.isfinite(f["/action"][()]))

    checkpoint = tmp_path / "trained"
    cli.ros2("run", "librobot_training", "train", "--config", str(REPO / "src/librobot_training/config/act_so100.yaml"),
             f"dataset={tmp_path / 'mcap_clean_hdf5'}", f"output_dir={checkpoint}",
             "train.steps=3", "train.log_every=1", "train.warmup_steps=0", "train.eval.every=0",
             "train.eval.episodes=0",  # the recipe holds out two; a loaded CI machine may record only two
             timeout=300)
    assert (checkpoint / "model.safetensors").is_file()


def test_ctrl_c_stops_everything_cleanly(cli, tmp_path):
    with cli.launch(tmp_path / "launch.log") as system:
        system.wait_for_log(r"\[policy\]: loaded act checkpoint", timeout_s=120)
    log = system.log()
    for node in ("policy_node", "driver_node"):
        assert re.search(rf"\[{node}-\d+\]: process has finished cleanly", log), log[-3000:]
