"""A robot with a VLA policy: `ros2 launch librobot_bringup robot.launch.py robot:=so100`.

The per-robot launch files (so100.launch.py) are this one with `robot` set. Everything
robot-specific is found by name: the embodiment spec config/embodiments/<robot>.yaml, the
description description/urdf/<robot>.urdf.xacro and config/<robot>_controllers.yaml (package
librobot_drivers), the node parameters config/<robot>_policy.yaml and config/<robot>_sim.yaml,
the RViz config config/<robot>.rviz and the shipped checkpoint checkpoints/act_<robot> (package
librobot_bringup); a robot with a drive (the wheel loader) also gets the drive node with
config/<robot>_drive.yaml, the deadman in front of its wheels' velocity controller. The LibroBot nodes are defined once, in librobot_bringup/system.py, which
`librobot-demo` and `librobot-record` start too.

Modes:
  use_sim:=true  (default)  the MuJoCo twin is the robot (driver node, robot <robot>_sim);
      use_ros2_control:=false (default) the driver follows the policy's trajectories itself,
      with joint_trajectory_controller's semantics; use_ros2_control:=true puts the real
      controller_manager and joint_trajectory_controller between them (the twin is the hardware
      behind the topic-based hardware interface). A twin slower than real time (the wheel
      loader's: `sim_clock` in config/<robot>_sim.yaml) is the graph's clock: its driver
      publishes /clock and every other node gets use_sim_time.
  use_sim:=false            ros2_control on the description: use_mock_hardware:=true (default)
      mock_components/GenericSystem, false the servos through the topic-based hardware interface
      (the driver node serves its topics: robot <robot>_feetech, port and calibration from
      config/<robot>_hardware.yaml or the launch arguments port, calibration); cameras from v4l2_camera (camera_driver:=v4l2), or
      camera_driver:=none when something else publishes the camera topics.
"""

from pathlib import Path

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch.substitutions import Command, LaunchConfiguration

from librobot_bringup import system

ARGUMENTS = {
    "robot": ("so100", "robot name: its embodiment, description and configs are found by it"),
    "use_sim": ("true", "MuJoCo twin (true) or the real robot / mock hardware (false)"),
    "use_ros2_control": ("false", "with use_sim:=true: the twin behind controller_manager and "
                         "the real joint_trajectory_controller (always on with use_sim:=false)"),
    "use_mock_hardware": ("true", "with use_sim:=false: mock_components instead of the servos"),
    "camera_driver": ("v4l2", "with use_sim:=false: v4l2 (v4l2_camera per camera of the "
                      "embodiment) or none (the camera topics come from elsewhere)"),
    "port": ("", "with use_mock_hardware:=false: the arm's serial port (empty: config/<robot>_hardware.yaml's)"),
    "calibration": ("", "with use_mock_hardware:=false: its calibration file (empty: the config's)"),
    "checkpoint": ("", "policy checkpoint directory (empty: the shipped checkpoints/act_<robot>)"),
    "models": ("", "directory of checkpoints, one per subdirectory, that `ros2 param set /policy "
               "framework <name>` swaps between (empty: the shipped checkpoints/)"),
    "policy_endpoint": ("", "grpc://host:port of a policy server (python -m librobot_models.serve) "
                        "that runs the model instead of the node (empty: the checkpoint, locally)"),
    "episodes": ("-1", "simulation: episodes to run (-1: until stopped, 0: none, the scene runs freely)"),
    "first_seed": ("0", "simulation: seed of the first episode (the next ones count up)"),
    "rviz": ("true", "start RViz"),
}


def _flag(context: LaunchContext, name: str) -> bool:
    value = LaunchConfiguration(name).perform(context).strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"launch argument {name}:={value!r}: expected true or false")
    return value == "true"


def _node(spec: system.NodeSpec, sim_time: bool = False) -> Node:
    """A LibroBot node as system.py defines it (the demo and record start the same); `sim_time`:
    on the twin's /clock."""
    spec = system.on_sim_time(spec) if sim_time else spec
    return Node(package=spec.package, executable=spec.executable, name=spec.name,
                parameters=[*map(str, spec.param_files), spec.parameters],
                remappings=list(spec.remappings), output="screen")


def _nodes(context: LaunchContext) -> list:
    robot = LaunchConfiguration("robot").perform(context)
    use_sim, use_rviz = _flag(context, "use_sim"), _flag(context, "rviz")
    use_ros2_control = not use_sim or _flag(context, "use_ros2_control")
    # the twin behind ros2_control speaks the topic-based hardware interface, like the servos
    mock_hardware = _flag(context, "use_mock_hardware") and not use_sim
    drivers = Path(get_package_share_directory("librobot_drivers"))
    bringup = Path(get_package_share_directory("librobot_bringup"))
    spec = yaml.safe_load((drivers / "config" / "embodiments" / f"{robot}.yaml").read_text())
    checkpoint = LaunchConfiguration("checkpoint").perform(context) or None
    # a twin that is the graph's clock (the wheel loader's): every other node on its /clock
    sim_time = use_sim and system.sim_clock(robot)
    clock = [{"use_sim_time": True}] if sim_time else []

    description = ParameterValue(
        Command(["xacro ", str(drivers / "description" / "urdf" / f"{robot}.urdf.xacro"),
                 " use_mock_hardware:=", str(mock_hardware).lower()]),
        value_type=str)
    nodes = [
        Node(package="robot_state_publisher", executable="robot_state_publisher",
             parameters=[{"robot_description": description}, *clock]),
        _node(system.policy_node(robot, checkpoint, LaunchConfiguration("models").perform(context) or None,
                                 policy_endpoint=LaunchConfiguration("policy_endpoint").perform(context)),
              sim_time),
    ]
    nodes += [_node(n, sim_time) for n in system.machine_nodes(robot)]  # the wheel loader's drive node (deadman)
    if use_sim:
        nodes.append(_node(system.sim_driver_node(
            robot, embodiment=robot, episodes=int(LaunchConfiguration("episodes").perform(context)),
            first_seed=int(LaunchConfiguration("first_seed").perform(context)),
            command_interface="joint_commands" if use_ros2_control else "trajectory")))
    elif not mock_hardware:
        overrides = {name: LaunchConfiguration(name).perform(context) for name in ("port", "calibration")}
        nodes.append(_node(system.hardware_driver_node(robot, **{k: v for k, v in overrides.items() if v})))
    if use_ros2_control:
        controllers = str(drivers / "config" / f"{robot}_controllers.yaml")
        nodes += [
            # controller_manager takes the URDF from /robot_description (robot_state_publisher)
            Node(package="controller_manager", executable="ros2_control_node",
                 parameters=[controllers, *clock], output="screen"),
            Node(package="controller_manager", executable="spawner",
                 arguments=["joint_state_broadcaster", *(group["controller"] for group in spec["groups"]),
                            "--controller-manager", "/controller_manager"]),
        ]
    if not use_sim and LaunchConfiguration("camera_driver").perform(context) == "v4l2":
        for index, camera in enumerate(c for c in spec.get("cameras", ()) if not c.get("optional")):
            nodes.append(Node(
                package="v4l2_camera", executable="v4l2_camera_node", name=f"{camera['name']}_camera",
                parameters=[{"video_device": camera.get("device", f"/dev/video{index}"),
                             "output_encoding": "rgb8",
                             "camera_frame_id": f"{camera['name']}_camera"}],
                remappings=[("image_raw", camera["topic"])]))
    if use_rviz:
        nodes.append(Node(package="rviz2", executable="rviz2",
                          arguments=["-d", str(bringup / "config" / f"{robot}.rviz")], parameters=clock))
    return nodes


def generate_launch_description():
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=text)
          for name, (default, text) in ARGUMENTS.items()),
        OpaqueFunction(function=_nodes),
    ])
