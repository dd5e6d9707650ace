"""Nodes started from Python run with DDS on loopback and in this test run's domain."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from librobot_bringup.graph import NodeGraph, ros_environment
from librobot_bringup.system import policy_node, shipped_checkpoints


def child_environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_ros_environment_defaults_to_loopback_but_respects_a_choice():
    assert ros_environment({})["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    chosen = ros_environment({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"})
    assert chosen["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"


def test_every_spawned_node_keeps_dds_on_loopback(ros_context, spin):
    # The parent environment deliberately lacks the variable: the spawner must add it.
    parent = {k: v for k, v in os.environ.items() if k != "ROS_AUTOMATIC_DISCOVERY_RANGE"}
    policy = policy_node("so100")
    nodes = [replace(policy, name="policy_a"), replace(policy, name="policy_b")]
    observer = Node("observer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(observer)
    try:
        with NodeGraph(nodes, env=parent) as graph:
            for name, process in graph.processes.items():
                env = child_environment(process.pid)
                assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST", name
                assert env["ROS_DOMAIN_ID"] == os.environ["ROS_DOMAIN_ID"], name
            # ... and they really joined this run's ROS graph.
            assert spin(executor, lambda: {"policy_a", "policy_b"} <= set(observer.get_node_names()),
                        timeout_s=30.0), observer.get_node_names()
            graph.check_alive()
    finally:
        executor.shutdown()
        observer.destroy_node()


def test_parameter_files_come_first_and_the_overrides_win(tmp_path):
    """As in launch_ros: config/<robot>_policy.yaml, then the values given in system.py."""
    spec = policy_node("so100", tmp_path, replan_steps=3)
    command = spec.command(tmp_path / "overrides.yaml")
    files = [command[i + 1] for i, arg in enumerate(command) if arg == "--params-file"]
    assert files == [str(spec.param_files[0]), str(tmp_path / "overrides.yaml")]
    assert Path(files[0]).name == "so100_policy.yaml" and Path(files[0]).is_file()
    assert spec.parameters == {"checkpoint": str(tmp_path.resolve()), "models": str(shipped_checkpoints()),
                               "replan_steps": 3}
    assert command[command.index("-r") + 1] == "__node:=policy"


def test_a_sigterm_to_the_parent_stops_its_nodes_too(tmp_path):
    """The nodes run in sessions of their own; a `kill` of the session that started them (the
    demo, the recorder) must not leave them running."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import time\n"
        "from librobot_bringup.graph import NodeGraph\n"
        "from librobot_bringup.system import drive_node\n"
        "with NodeGraph([drive_node('wheel_loader')]) as graph:\n"
        "    print(graph.processes['drive'].pid, flush=True)\n"
        "    time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(1.0)
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=20) == 128 + signal.SIGTERM
    for _ in range(50):
        if not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text():
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError(f"node {child} outlived its parent")
