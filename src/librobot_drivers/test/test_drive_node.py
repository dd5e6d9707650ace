"""The drive node on real rclpy: wheel trajectories and /cmd_vel in, the wheels' velocity
controller out, and the deadman: a silent publisher, a lost node and an e-stop stop the wheels
and hold the implements."""

import time

import numpy as np
import pytest
from geometry_msgs.msg import Twist
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from librobot_drivers import messages
from librobot_drivers.articulated import articulation_for_yaw_rate, ground_speed, wheel_speeds
from librobot_drivers.drive_node import DriveNode
from librobot_drivers.embodiment import load_embodiment

SPEC = load_embodiment("wheel_loader")
VIEW = SPEC.commanded()  # the policy's: articulation, ground_speed, boom, bucket
DRIVE = SPEC.drive
TICK = 1 / 50.0
# a stop must come within the deadman's timeout, a tick, and this much executor latency
SLACK_S = 0.1


class Harness:
    def __init__(self, context):
        self.drive = DriveNode(context=context)
        self.client = Node("client", context=context)
        self.commander = Node("commander", context=context)  # the policy, which the tests may lose
        self.executor = SingleThreadedExecutor(context=context)
        for node in (self.drive, self.client, self.commander):
            self.executor.add_node(node)
        self.wheels: list[tuple[float, np.ndarray]] = []
        self.holds: list[JointTrajectory] = []
        self.records: list[JointState] = []
        self.client.create_subscription(Float64MultiArray, "/wheels_controller/commands",
                                        lambda m: self.wheels.append((time.monotonic(), np.array(m.data))), 50)
        self.client.create_subscription(JointTrajectory, "/hydraulics_controller/joint_trajectory",
                                        self.holds.append, 10)
        self.client.create_subscription(JointState, DRIVE.wheel_commands_topic, self.records.append, 50)
        self.states = self.client.create_publisher(JointState, "/joint_states", 10)
        self.trajectories = self.commander.create_publisher(JointTrajectory, DRIVE.trajectory_topic, 10)
        self.twists = self.client.create_publisher(Twist, DRIVE.cmd_vel_topic, 10)
        self.estop = self.client.create_publisher(Bool, "/drive/estop", 10)
        self.pose = np.array([0.2, 0.0, 0.0, 0.0, 0.0, -0.3, 0.4])  # articulation, wheels, boom, bucket

    def publish_state(self, gamma_rate=0.0):
        msg = JointState(name=SPEC.joint_names, position=self.pose.tolist(),
                         velocity=[gamma_rate, 0, 0, 0, 0, 0, 0])
        msg.header.stamp = self.client.get_clock().now().to_msg()
        self.states.publish(msg)

    def spin(self, seconds, every=None, period=0.1):
        """Spin for `seconds`, calling `every()` each `period` s."""
        end = time.monotonic() + seconds
        next_call = time.monotonic()
        while time.monotonic() < end:
            if every is not None and time.monotonic() >= next_call:
                every()
                next_call += period
            self.executor.spin_once(timeout_sec=0.01)

    def plan(self, speed):
        """The policy's plan: 1 s at `speed` m/s, straight, implements where they are."""
        positions = np.tile([0.2, speed, -0.3, 0.4], (10, 1))
        tfs = 0.1 * np.arange(1, 11)
        _, msg = messages.group_trajectory_msgs(VIEW, 0, tfs, positions, np.zeros_like(positions))[1]
        self.trajectories.publish(msg)
        self.publish_state()

    def close(self):
        self.executor.shutdown()
        for node in (self.drive, self.client, self.commander):
            try:
                node.destroy_node()
            except Exception:  # noqa: BLE001 - the commander may be gone already
                pass


@pytest.fixture
def harness(ros_context):
    h = Harness(ros_context)
    deadline = time.monotonic() + 10
    while h.trajectories.get_subscription_count() == 0 and time.monotonic() < deadline:
        h.executor.spin_once(timeout_sec=0.05)
    h.spin(0.3, h.publish_state)
    yield h
    h.close()


def speeds_since(h, t0):
    return [(t, float(ground_speed(DRIVE.geometry, w))) for t, w in h.wheels if t >= t0]


def assert_stopped_after(h, last_command_at):
    """Every wheel command later than the deadman's timeout (plus a tick and slack) is zero."""
    late = [w for t, w in h.wheels if t > last_command_at + DRIVE.command_timeout_s + TICK + SLACK_S]
    assert late, "no wheel commands after the deadman's timeout"
    assert all(not w.any() for w in late), late[:3]


def test_the_policys_wheel_trajectories_drive_and_a_silent_publisher_stops_the_wheels(harness):
    h = harness
    assert h.wheels and not any(w.any() for _, w in h.wheels)  # ticking, standing: zeros
    start = time.monotonic()
    h.spin(1.0, lambda: h.plan(1.5))
    driving = speeds_since(h, start + 0.75)  # past the acceleration ramp (1.5 m/s^2)
    assert driving and all(abs(v - 1.5) < 0.05 for _, v in driving), driving[:5]
    assert h.records and list(h.records[-1].name) == list(DRIVE.wheels)
    assert ground_speed(DRIVE.geometry, np.array(h.records[-1].velocity)) == pytest.approx(1.5, abs=0.05)
    silent_since = time.monotonic()  # the publisher lives on, but says nothing more
    h.holds.clear()
    h.spin(1.0, h.publish_state)
    assert_stopped_after(h, silent_since)
    # and the implements were told to hold the measured pose, once
    assert len(h.holds) == 1
    hold = h.holds[0]
    assert list(hold.joint_names) == ["articulation_joint", "boom_joint", "bucket_joint"]
    assert np.allclose(hold.points[-1].positions, [0.2, -0.3, 0.4])
    assert h.commander.count_publishers(DRIVE.trajectory_topic) >= 1  # it was silent, not gone


def test_a_lost_commander_stops_the_wheels(harness):
    h = harness
    h.spin(0.8, lambda: h.plan(-1.0))
    assert speeds_since(h, time.monotonic() - 0.2)[-1][1] == pytest.approx(-1.0, abs=0.05)
    h.executor.remove_node(h.commander)
    h.commander.destroy_node()
    lost_at = time.monotonic()
    h.spin(1.0, h.publish_state)
    assert_stopped_after(h, lost_at)


def test_cmd_vel_drives_and_articulates_towards_the_turn(harness):
    h = harness
    twist = Twist()
    twist.linear.x, twist.angular.z = 2.0, 0.3
    h.holds.clear()
    h.spin(1.8, lambda: (h.twists.publish(twist), h.publish_state(gamma_rate=0.05)))  # 2 m/s at 1.5 m/s^2
    wheels = h.wheels[-1][1]
    assert np.allclose(wheels, wheel_speeds(DRIVE.geometry, 2.0, 0.2, 0.05), atol=1e-6)  # measured angle and rate
    target = articulation_for_yaw_rate(DRIVE.geometry, 2.0, 0.3)
    assert h.holds, "no articulation command"
    point = h.holds[-1].points[-1]
    assert point.positions[0] == pytest.approx(target)
    assert list(point.positions[1:]) == pytest.approx([-0.3, 0.4])  # boom and bucket stay
    # at most at the articulation's rate limit
    seconds = messages.to_seconds(point.time_from_start)
    assert seconds >= abs(target - 0.2) / SPEC.joints[0].velocity - 1e-6


def test_the_estop_stops_at_once_and_latches_until_released(harness):
    h = harness
    h.spin(0.5, lambda: h.plan(2.0))
    h.holds.clear()
    h.estop.publish(Bool(data=True))
    stopped_at = time.monotonic()
    h.spin(0.6, lambda: h.plan(2.0))  # the policy goes on: refused
    after = [w for t, w in h.wheels if t > stopped_at + 0.1]
    assert after and all(not w.any() for w in after)
    assert h.holds, "implements not held"
    release = h.client.create_client(Trigger, "/drive/release")
    assert release.wait_for_service(timeout_sec=5.0)
    future = release.call_async(Trigger.Request())
    h.executor.spin_until_future_complete(future, timeout_sec=5.0)
    assert future.result().success
    released_at = time.monotonic()
    h.spin(1.8, lambda: h.plan(2.0))
    assert speeds_since(h, released_at)[-1][1] == pytest.approx(2.0, abs=0.05)


def test_a_malformed_wheel_trajectory_is_refused_and_the_wheels_stop(harness):
    h = harness
    h.spin(0.5, lambda: h.plan(1.0))
    bad = JointTrajectory(joint_names=["front_left_wheel_joint"])  # three wheels missing
    bad_at = time.monotonic()
    h.spin(0.8, lambda: (h.trajectories.publish(bad), h.publish_state()))
    assert_stopped_after(h, bad_at)  # refused commands are no commands: the deadman stops
