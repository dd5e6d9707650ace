"""Scripted expert for a simulated robot, driving it through the real ROS graph.

At each episode START it plans from the object position the simulator publishes (a privileged
input, like motion capture) and the measured joints (a plan's free choices, where it has some,
drawn from the episode's seed: a recording is reproducible), then streams the plan (the policy's view:
commanded joints, a drive's ground speed) to the commanded joint groups' topics as short chunks,
one message per group with the same stamp, the way a teleoperator or policy would.

    ros2 run librobot_drivers expert_node --ros-args -p embodiment:=humanoid
"""

from __future__ import annotations

import sys

import numpy as np
from geometry_msgs.msg import PointStamped
from librobot_msgs.msg import EpisodeEvent
from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from librobot_drivers import messages
from librobot_drivers.embodiment import load_embodiment
from librobot_drivers.ros_common import EPISODE_EVENTS, run_node
from librobot_drivers.sim.experts import Expert, make_expert


class ExpertNode(Node):
    def __init__(self, **kwargs):
        super().__init__("expert", **kwargs)
        self.spec = load_embodiment(self.declare_parameter("embodiment", "so100").value)
        # 10 Hz: a wheel loader's deadman (0.25 s) outlasts two late messages
        publish_rate = self.declare_parameter("publish_rate_hz", 10.0).value
        self.horizon_points = self.declare_parameter("horizon_points", 10).value
        self.point_period = self.declare_parameter("point_period_s", self.spec.control_period).value

        self._object: np.ndarray | None = None
        self._joints: np.ndarray | None = None
        self._plan: Expert | None = None
        self._plan_start_ns = 0
        self._episode_start_ns = 0
        self._episode_seed = 0
        self._waiting_for_plan = False
        self._pubs = {g.name: self.create_publisher(JointTrajectory, g.command_topic, 10)
                      for g in self.spec.commanded_groups}
        self.create_subscription(PointStamped, "/sim/object_position", self._on_object, 10)
        self.create_subscription(JointState, self.spec.topic("joint_states"), self._on_joints, 10)
        self.create_subscription(
            EpisodeEvent, self.spec.topic("episode_events"), self._on_event, EPISODE_EVENTS
        )
        self.create_timer(1.0 / publish_rate, self._on_tick)

    def _on_object(self, msg: PointStamped) -> None:
        if messages.to_nanoseconds(msg.header.stamp) >= self._episode_start_ns:
            self._object = np.array([msg.point.x, msg.point.y, msg.point.z])

    def _on_joints(self, msg: JointState) -> None:
        self._joints = messages.joint_positions(self.spec, msg)

    def _on_event(self, msg: EpisodeEvent) -> None:
        if msg.event == EpisodeEvent.START:
            # The cube moved with the reset: plan once a position newer than the event arrives.
            self._plan, self._object, self._waiting_for_plan = None, None, True
            self._episode_start_ns = messages.to_nanoseconds(msg.header.stamp)
            self._episode_seed = msg.seed
        else:
            self._plan, self._waiting_for_plan = None, False

    def _on_tick(self) -> None:
        now_ns = self.get_clock().now().nanoseconds
        if self._waiting_for_plan and self._object is not None and self._joints is not None:
            self._plan = make_expert(self.spec, self._object, self._joints,
                                     rng=np.random.default_rng(self._episode_seed))
            # the plan starts once it exists: planning takes a while (the humanoid's IK, ~0.2 s
            # on an idle CPU, seconds on a busy one), and the robot must not skip its beginning
            now_ns = self.get_clock().now().nanoseconds
            self._plan_start_ns, self._waiting_for_plan = now_ns, False
        if self._plan is None:
            return
        t0 = (now_ns - self._plan_start_ns) * 1e-9
        tfs = (np.arange(self.horizon_points) + 1) * self.point_period
        positions = np.stack([self._plan.positions_at(t0 + t) for t in tfs])
        for group, msg in messages.group_trajectory_msgs(self.spec.commanded(), now_ns, tfs, positions):
            self._pubs[group.name].publish(msg)


def main(args=None) -> int:
    return run_node(ExpertNode, "expert_node", args=args)


if __name__ == "__main__":
    sys.exit(main())
