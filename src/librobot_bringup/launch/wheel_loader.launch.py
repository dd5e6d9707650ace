"""Wheel loader with a VLA policy: `ros2 launch librobot_bringup wheel_loader.launch.py`.

robot.launch.py with robot:=wheel_loader; every argument of it passes through (use_sim,
use_ros2_control, use_mock_hardware, checkpoint, models, policy_endpoint, episodes, rviz:
`ros2 launch librobot_bringup wheel_loader.launch.py --show-args`). The policy is the shipped
checkpoints/act_wheel_loader unless `checkpoint:=<dir>` (or `policy_endpoint:=`) says otherwise.
By default the MuJoCo twin in its yard (a bay of material, a hopper) is the machine and the
graph's clock (/clock, the other nodes on use_sim_time); use_sim:=false runs on mock hardware. Both are tested
(tests/integration/test_wheel_loader_launch.py). Beside the policy it starts the drive node, the
deadman in front of the wheels: without a fresh command within 0.25 s the wheels stop and the
implements hold; /cmd_vel drives by hand.
With ros2_control it spawns the hydraulics' joint_trajectory_controller (articulation, lift arm,
bucket) and the wheels' velocity controller. There is no hardware driver for a real machine:
use_sim:=false runs on mock hardware only.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource


def generate_launch_description():
    robot_launch = str(Path(__file__).with_name("robot.launch.py"))
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(robot_launch),
                                 launch_arguments={"robot": "wheel_loader"}.items()),
    ])
