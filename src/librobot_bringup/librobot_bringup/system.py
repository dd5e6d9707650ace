"""The LibroBot nodes of a robot's system, defined once.

robot.launch.py turns these NodeSpecs into launch_ros Nodes; `librobot-demo` and
`librobot-record` start the same specs as child processes (graph.NodeGraph). Each node reads the
robot's parameter file from this package's config/ (<robot>_policy.yaml, <robot>_sim.yaml), then
the overrides given here.
"""

from __future__ import annotations

from pathlib import Path

from librobot_bringup.graph import NodeSpec  # noqa: F401 (re-exported for the launch files)
from librobot_drivers.resources import share_path

PACKAGE = "librobot_bringup"


def config_file(name: str) -> Path:
    """A parameter file of this package; FileNotFoundError names it when it is missing."""
    path = share_path("config", name, package=PACKAGE)
    if not path.is_file():
        raise FileNotFoundError(f"no parameter file {path}")
    return path


def _sim_parameters(robot: str) -> dict:
    import yaml

    return yaml.safe_load(config_file(f"{robot}_sim.yaml").read_text())["driver"]["ros__parameters"]


def sim_settings(robot: str) -> tuple[tuple[str, ...], float]:
    """(rendered cameras, episode time limit s) of `robot`'s twin, from config/<robot>_sim.yaml."""
    driver = _sim_parameters(robot)
    return tuple(driver["cameras"]), float(driver["episode_time_limit_s"])


def sim_clock(robot: str) -> bool:
    """Whether `robot`'s twin is the graph's clock (`sim_clock` in config/<robot>_sim.yaml): the
    driver publishes /clock and every other node of the graph needs `use_sim_time`."""
    return bool(_sim_parameters(robot).get("sim_clock", False))


def on_sim_time(spec: NodeSpec) -> NodeSpec:
    """`spec` with use_sim_time: the node follows /clock (a twin that is the clock)."""
    from dataclasses import replace

    return replace(spec, parameters={**spec.parameters, "use_sim_time": True})


def shipped_checkpoint(robot: str) -> Path:
    """The checkpoint the launch file runs when none is given: checkpoints/act_<robot>."""
    return share_path("checkpoints", f"act_{robot}", package=PACKAGE)


def shipped_checkpoints() -> Path:
    """The directory of every shipped checkpoint, one per subdirectory: the policy node's default
    `models`, which `ros2 param set /policy framework <name>` chooses from."""
    return share_path("checkpoints", package=PACKAGE)


def policy_node(robot: str, checkpoint: str | Path | None = None, models: str | Path | None = None,
                **overrides) -> NodeSpec:
    """The policy node with config/<robot>_policy.yaml; `checkpoint` defaults to the shipped one,
    `models` (the checkpoints `framework` swaps between) to the shipped ones."""
    checkpoint = checkpoint or shipped_checkpoint(robot)
    models = models or shipped_checkpoints()
    return NodeSpec(
        package="librobot_policy_node", executable="policy_node",
        module="librobot_policy_node.policy_node", name="policy",
        param_files=(config_file(f"{robot}_policy.yaml"),),
        parameters={"checkpoint": str(Path(checkpoint).resolve()), "models": str(Path(models).resolve()),
                    **overrides},
    )


def sim_driver_node(robot: str, **overrides) -> NodeSpec:
    """The driver node running the robot's simulated twin, with config/<robot>_sim.yaml."""
    return NodeSpec(
        package="librobot_drivers", executable="driver_node",
        module="librobot_drivers.driver_node", name="driver",
        param_files=(config_file(f"{robot}_sim.yaml"),),
        parameters=overrides,
    )


def hardware_driver_node(robot: str, **overrides) -> NodeSpec:
    """The driver node on the real robot, with config/<robot>_hardware.yaml (port, calibration).
    By default it serves the hardware topics (joint commands in, joint states out) of ros2_control's
    topic-based hardware interface; command_interface="trajectory" follows trajectories itself."""
    return NodeSpec(
        package="librobot_drivers", executable="driver_node",
        module="librobot_drivers.driver_node", name="driver",
        param_files=(config_file(f"{robot}_hardware.yaml"),),
        parameters={"command_interface": "joint_commands", **overrides},
    )


def teleop_node(robot: str, **overrides) -> NodeSpec:
    """Leader-arm teleoperation with config/<robot>_hardware.yaml (leader port, calibration)."""
    return NodeSpec(
        package="librobot_drivers", executable="teleop_node",
        module="librobot_drivers.teleop_node", name="teleop",
        param_files=(config_file(f"{robot}_hardware.yaml"),), parameters=overrides,
    )


def drive_node(robot: str, **overrides) -> NodeSpec:
    """The deadman in front of an articulated vehicle's wheels, with config/<robot>_drive.yaml."""
    return NodeSpec(
        package="librobot_drivers", executable="drive_node",
        module="librobot_drivers.drive_node", name="drive",
        param_files=(config_file(f"{robot}_drive.yaml"),), parameters=overrides,
    )


def machine_nodes(robot: str) -> list[NodeSpec]:
    """The nodes a robot needs beside its driver and whatever commands it: the drive node for a
    robot whose embodiment has a drive (the wheel loader), none otherwise."""
    from librobot_drivers.embodiment import load_embodiment

    return [drive_node(robot)] if load_embodiment(robot).drive is not None else []


def expert_node(**overrides) -> NodeSpec:
    """The scripted expert that solves the simulated task (demonstrations for `record`)."""
    return NodeSpec(
        package="librobot_drivers", executable="expert_node",
        module="librobot_drivers.expert_node", name="expert", parameters=overrides,
    )
