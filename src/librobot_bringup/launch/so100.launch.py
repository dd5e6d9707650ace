"""SO-100 with a VLA policy: `ros2 launch librobot_bringup so100.launch.py checkpoint:=<dir>`.

use_sim:=true (default) runs the MuJoCo twin through librobot_drivers' driver node, which follows
/arm_controller/joint_trajectory with joint_trajectory_controller semantics. use_sim:=false
starts ros2_control (controller_manager + joint_state_broadcaster + arm_controller) on the
SO-100 description; use_mock_hardware:=true (default) there, or the real servos through
topic_based_ros2_control. RViz shows the robot, the front camera and the policy's status.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import Command, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    use_sim = LaunchConfiguration("use_sim")
    drivers = FindPackageShare("librobot_drivers")
    bringup = FindPackageShare("librobot_bringup")
    robot_description = ParameterValue(
        Command([
            "xacro ", PathJoinSubstitution([drivers, "description", "urdf", "so100.urdf.xacro"]),
            " use_mock_hardware:=", LaunchConfiguration("use_mock_hardware"),
        ]),
        value_type=str,
    )
    controllers = PathJoinSubstitution([drivers, "config", "so100_controllers.yaml"])
    policy_params = PathJoinSubstitution([bringup, "config", "so100_policy.yaml"])

    return LaunchDescription([
        DeclareLaunchArgument("use_sim", default_value="true",
                              description="MuJoCo twin (true) or ros2_control (false)"),
        DeclareLaunchArgument("use_mock_hardware", default_value="true",
                              description="with use_sim:=false: mock_components instead of servos"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="policy checkpoint directory (empty: load later with "
                                          "ros2 param set /policy checkpoint <dir>)"),
        DeclareLaunchArgument("episodes", default_value="0",
                              description="simulation only: run this many episodes (0: free run)"),
        DeclareLaunchArgument("rviz", default_value="true"),

        Node(package="robot_state_publisher", executable="robot_state_publisher",
             parameters=[{"robot_description": robot_description}]),

        # Simulation: our driver plays both hardware and trajectory controller.
        Node(package="librobot_drivers", executable="driver_node", name="driver",
             condition=IfCondition(use_sim),
             parameters=[{"robot": "so100_sim", "embodiment": "so100",
                          "episodes": ParameterValue(LaunchConfiguration("episodes"), value_type=int)}]),

        # Hardware (or mock hardware): ros2_control with the URDF from /robot_description.
        Node(package="controller_manager", executable="ros2_control_node",
             condition=UnlessCondition(use_sim), parameters=[controllers], output="screen"),
        Node(package="controller_manager", executable="spawner", condition=UnlessCondition(use_sim),
             arguments=["joint_state_broadcaster", "arm_controller",
                        "--controller-manager", "/controller_manager"]),

        Node(package="librobot_policy_node", executable="policy_node", name="policy",
             parameters=[policy_params, {"checkpoint": LaunchConfiguration("checkpoint")}],
             output="screen"),

        Node(package="rviz2", executable="rviz2", condition=IfCondition(LaunchConfiguration("rviz")),
             arguments=["-d", PathJoinSubstitution([bringup, "config", "so100.rviz"])]),
    ])
