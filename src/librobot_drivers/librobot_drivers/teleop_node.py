"""Leader-arm teleoperation: the leader's joint angles become the follower's commands.

The leader (a second SO-100 built alike, torque off, moved by hand) is read at `rate_hz`
(default 60) over its own bus; each reading goes out as a one-point JointTrajectory on the
controller's topic, reached `lead_s` later (default two periods). joint_trajectory_controller
and the driver node's own follower both take it, so teleoperation works with ros2_control or
without, and `ros2 bag record` / `librobot-record --teleop` records the commands as actions.
When the leader stops answering, nothing is published (the follower holds its last goal) and
the node retries four times a second.

    ros2 run librobot_drivers teleop_node --ros-args -p leader_port:=/dev/ttyACM1 \\
        -p leader_calibration:=$HOME/.librobot/calibration/leader.json
"""

from __future__ import annotations

import sys

import numpy as np
from rclpy.node import Node
from trajectory_msgs.msg import JointTrajectory

from librobot_drivers import messages
from librobot_drivers.feetech.arm import FeetechArm
from librobot_drivers.feetech.calibration import load_calibration
from librobot_drivers.feetech.hardware import load_hardware
from librobot_drivers.robot import RobotIOError
from librobot_drivers.ros_common import run_node

RETRY_PERIOD_S = 0.25  # the leader is read again this soon after it did not answer


class TeleopNode(Node):
    def __init__(self, **kwargs):
        super().__init__("teleop", **kwargs)
        hardware = load_hardware(self.declare_parameter("leader_hardware", "so100_feetech").value)
        port = self.declare_parameter("leader_port", "").value
        calibration = self.declare_parameter("leader_calibration", "").value
        rate = self.declare_parameter("rate_hz", 60.0).value
        self.lead_s = self.declare_parameter("lead_s", 2.0 / rate).value
        if not port or not calibration:
            raise ValueError("parameters leader_port and leader_calibration are required "
                             "(the leader arm's serial port and its calibration file)")
        if rate <= 0 or self.lead_s <= 0:
            raise ValueError(f"rate_hz = {rate} and lead_s = {self.lead_s}: expected both > 0")
        self.spec = hardware.spec
        self.leader = FeetechArm(hardware, port, load_calibration(calibration, hardware))
        self.leader.connect(torque=False)
        self._pub = self.create_publisher(JointTrajectory, self.spec.command_topic, 10)
        self._retry_at: float | None = None
        self.create_timer(1.0 / rate, self._on_tick)
        self.get_logger().info(f"leader on {port} -> {self.spec.command_topic} at {rate:.0f} Hz")

    def _on_tick(self) -> None:
        now = self.get_clock().now().nanoseconds * 1e-9
        if self._retry_at is not None and now < self._retry_at:
            return
        try:
            position = self.leader.read_joints().position
        except RobotIOError as err:
            self._retry_at = now + RETRY_PERIOD_S
            self.get_logger().error(f"leader not answering: {err}", throttle_duration_sec=5.0)
            return
        self._retry_at = None
        position = self.spec.clip(position)
        # positions only: the controller interpolates linearly from where the follower is
        self._pub.publish(messages.trajectory_msg(
            self.spec.joint_names, 0, np.array([self.lead_s]), position[None]))

    def destroy_node(self) -> None:
        self.leader.disconnect(torque_off=True)
        super().destroy_node()


def main(args=None) -> int:
    return run_node(TeleopNode, "teleop_node", args=args)


if __name__ == "__main__":
    sys.exit(main())
