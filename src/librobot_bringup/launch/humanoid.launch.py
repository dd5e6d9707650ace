"""Humanoid with a VLA policy: `ros2 launch librobot_bringup humanoid.launch.py`.

robot.launch.py with robot:=humanoid; every argument of it passes through (use_sim,
use_ros2_control, use_mock_hardware, camera_driver, checkpoint, models, policy_endpoint, episodes,
rviz: `ros2 launch librobot_bringup humanoid.launch.py --show-args`). With no argument: the MuJoCo
twin (on its fixed stand), the shipped checkpoint, episodes until stopped, RViz. With ros2_control
it spawns one joint_trajectory_controller per joint group (legs held, waist, arms, grippers).
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource


def generate_launch_description():
    robot_launch = str(Path(__file__).with_name("robot.launch.py"))
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(robot_launch),
                                 launch_arguments={"robot": "humanoid"}.items()),
    ])
