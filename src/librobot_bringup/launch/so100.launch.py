"""SO-100 with a VLA policy: `ros2 launch librobot_bringup so100.launch.py`.

robot.launch.py with robot:=so100; every argument of it passes through (use_sim, use_ros2_control,
use_mock_hardware, camera_driver, checkpoint, models, policy_endpoint, episodes, rviz: `ros2 launch
librobot_bringup so100.launch.py --show-args`). With no argument: the MuJoCo twin, the shipped ACT
checkpoint, episodes until stopped, RViz.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource


def generate_launch_description():
    robot_launch = str(Path(__file__).with_name("robot.launch.py"))
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(robot_launch),
                                 launch_arguments={"robot": "so100"}.items()),
    ])
