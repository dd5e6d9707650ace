"""The drive node: the only commander of an articulated vehicle's wheels, with a deadman.

Wiring over `librobot_drivers.drive.DriveGuard`. At `rate_hz` it sends the wheels' velocity
controller (forward_command_controller/ForwardCommandController, which keeps its last command for
ever) four wheel speeds, and a stamped copy on the drive's wheel_commands topic (what the
recorder keeps in a demonstration bag). The speeds come from

- the policy's wheel trajectories (the drive's trajectory topic, JointTrajectory with velocities:
  the policy node turns its ground-speed channel into them), or
- geometry_msgs/Twist on /cmd_vel, for driving by hand: linear.x is the ground speed (rear axle
  centre, m/s), angular.z the rear frame's yaw rate; the node articulates to the angle that
  turns the machine so (at most at the articulation's rate limit, through the hydraulics'
  trajectory controller) and the wheels follow the measured angle and rate.

Without a fresh command within the drive's `command_timeout_s` the wheels stop and the node sends
the implements' controller one hold at the measured pose (the rest of an old plan never plays).
`~/estop` (std_msgs/Bool true, or the Trigger service) latches a stop that only `~/release` clears.

    ros2 run librobot_drivers drive_node --ros-args -p embodiment:=wheel_loader
"""

from __future__ import annotations

import sys

import numpy as np
from geometry_msgs.msg import Twist
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from librobot_drivers import messages
from librobot_drivers.articulated import articulation_for_yaw_rate
from librobot_drivers.drive import DRIVING, DriveGuard
from librobot_drivers.embodiment import load_embodiment
from librobot_drivers.ros_common import run_node

HOLD_DELAY_S = 0.05  # a hold's one point lies this far ahead (reached at once, then held)


class DriveNode(Node):
    def __init__(self, **kwargs):
        super().__init__("drive", **kwargs)
        self.spec = load_embodiment(self.declare_parameter("embodiment", "wheel_loader").value)
        drive = self.spec.drive
        if drive is None:
            raise ValueError(f"embodiment {self.spec.name!r} has no drive: section; the drive node "
                             "commands an articulated vehicle's wheels")
        self.drive = drive
        rate = self.declare_parameter("rate_hz", 50.0).value
        wheel_limits = self.spec.velocity_limits[[self.spec.joint_names.index(w) for w in drive.wheels]]
        # default: the speed channel's acceleration at the wheels, with room for the outer wheels of a turn
        default_acceleration = 2.0 * drive.speed.velocity / drive.geometry.wheel_radius
        self.guard = DriveGuard(drive, wheel_limits,
                                self.declare_parameter("max_wheel_acceleration", default_acceleration).value)
        self._implements = next(g for g in self.spec.groups if g.commanded and g.interface == "position")
        self._articulation = self.spec.joint_names.index(drive.articulation_joint)
        self._measured: JointState | None = None
        self._state = None

        wheels_group = self.spec.group(drive.group)
        self._wheels_pub = self.create_publisher(Float64MultiArray, wheels_group.controller_commands_topic, 10)
        self._record_pub = self.create_publisher(JointState, drive.wheel_commands_topic, 10)
        self._hold_pub = self.create_publisher(JointTrajectory, self._implements.command_topic, 10)
        self.create_subscription(JointTrajectory, drive.trajectory_topic, self._on_trajectory, 10)
        self.create_subscription(Twist, drive.cmd_vel_topic, self._on_twist, 10)
        self.create_subscription(JointState, self.spec.topic("joint_states"), self._on_joint_state, 10)
        self.create_subscription(Bool, "~/estop", self._on_estop_topic, 10)
        self.create_service(Trigger, "~/estop", self._on_estop_service)
        self.create_service(Trigger, "~/release", self._on_release)
        self.create_timer(1.0 / rate, self._on_tick)
        self.get_logger().info(
            f"{self.spec.name}: wheels {list(drive.wheels)} on {wheels_group.controller_commands_topic} at "
            f"{rate:g} Hz; commands from {drive.trajectory_topic} and {drive.cmd_vel_topic}; deadman "
            f"{drive.command_timeout_s:g} s")

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- inputs ------------------------------------------------------------------------------------
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            index = self.spec.joint_index(list(msg.joint_names), self.drive.wheels)
            if not all(len(p.velocities) == len(msg.joint_names) for p in msg.points):
                raise ValueError("every point needs one velocity per joint")
            velocities = np.array([p.velocities for p in msg.points], dtype=np.float64).reshape(len(msg.points), -1)
            times = np.array([messages.to_seconds(p.time_from_start) for p in msg.points])
            self.guard.set_trajectory(self._now(), messages.to_seconds(msg.header.stamp), times,
                                      velocities[:, index])
        except (KeyError, ValueError) as err:
            self.get_logger().error(f"rejected wheel trajectory: {err}", throttle_duration_sec=1.0)

    def _on_twist(self, msg: Twist) -> None:
        try:
            self.guard.set_twist(self._now(), msg.linear.x)
        except ValueError as err:
            self.get_logger().error(f"rejected {self.drive.cmd_vel_topic}: {err}", throttle_duration_sec=1.0)
            return
        measured = self._measured_positions()
        if measured is None:
            return
        target = articulation_for_yaw_rate(self.drive.geometry, msg.linear.x, msg.angular.z)
        if target is None or not np.isfinite(msg.angular.z):
            return  # standing (or a bad turn): the articulation stays where it is
        joint = self.spec.joints[self._articulation]
        positions = measured.copy()
        positions[self._articulation] = float(np.clip(target, joint.lower, joint.upper))
        seconds = max(abs(positions[self._articulation] - measured[self._articulation]) / joint.velocity,
                      HOLD_DELAY_S)
        self._send_implements(positions, seconds)

    def _on_joint_state(self, msg: JointState) -> None:
        self._measured = msg

    def _measured_positions(self) -> np.ndarray | None:
        """(dof,) measured positions of every joint, spec order, or None before any joint state."""
        if self._measured is None:
            return None
        try:
            return messages.joint_positions(self.spec, self._measured)
        except (KeyError, ValueError) as err:
            self.get_logger().error(f"unusable joint state: {err}", throttle_duration_sec=2.0)
            return None

    # -- e-stop ----------------------------------------------------------------------------------
    def _estop(self, reason: str) -> None:
        if self.guard.estop_reason is None:
            self.get_logger().error(f"e-stop: {reason}; wheels stopped, implements held")
        self.guard.estop(reason)
        self._on_tick()  # stop now, not at the next tick

    def _on_estop_topic(self, msg: Bool) -> None:
        if msg.data:
            self._estop(f"{self.get_fully_qualified_name()}/estop topic")

    def _on_estop_service(self, request, response):
        self._estop(f"{self.get_fully_qualified_name()}/estop service")
        response.success, response.message = True, f"e-stop latched: {self.guard.estop_reason}"
        return response

    def _on_release(self, request, response):
        if self.guard.estop_reason is None:
            response.success, response.message = False, "no e-stop latched"
            return response
        self.guard.release()
        self.get_logger().warn("e-stop released: the wheels take commands again")
        response.success, response.message = True, "released"
        return response

    # -- every tick -----------------------------------------------------------------------------
    def _on_tick(self) -> None:
        measured = self._measured
        gamma = gamma_rate = 0.0
        if measured is not None and self._measured_positions() is not None:
            index = self.spec.joint_index(list(measured.name), [self.drive.articulation_joint])[0]
            gamma = float(measured.position[index])
            gamma_rate = float(measured.velocity[index]) if len(measured.velocity) == len(measured.name) else 0.0
        command = self.guard.command(self._now(), gamma, gamma_rate)
        self._wheels_pub.publish(Float64MultiArray(data=command.wheels.tolist()))
        record = JointState(name=list(self.drive.wheels), velocity=command.wheels.tolist())
        record.header.stamp = self.get_clock().now().to_msg()
        self._record_pub.publish(record)
        if command.state != self._state:
            if command.state == DRIVING:
                self.get_logger().info(f"wheels: {command.state} ({command.reason})")
            else:
                self.get_logger().warn(f"wheels: {command.state} ({command.reason})")
            self._state = command.state
        if command.tripped:  # the deadman or an e-stop: the implements hold where they are
            positions = self._measured_positions()
            if positions is not None:
                self._send_implements(positions, HOLD_DELAY_S)

    def _send_implements(self, positions: np.ndarray, seconds: float) -> None:
        """One point for the implements' controller: `positions` (spec order) in `seconds`."""
        index = self.spec.group_index(self._implements)
        msg = messages.trajectory_msg(list(self._implements.joints), 0, np.array([seconds]),
                                      positions[index][None], np.zeros((1, len(index))))
        self._hold_pub.publish(msg)


def main(args=None) -> int:
    return run_node(DriveNode, "drive_node", args=args)


if __name__ == "__main__":
    sys.exit(main())
