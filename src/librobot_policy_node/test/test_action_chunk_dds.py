"""Two real rclpy nodes exchange a librobot_msgs/ActionChunk over Fast DDS (loopback, own domain)."""

import os

from builtin_interfaces.msg import Duration
from librobot_msgs.msg import ActionChunk, PolicyStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from trajectory_msgs.msg import JointTrajectoryPoint


def make_chunk() -> ActionChunk:
    chunk = ActionChunk()
    chunk.header.stamp.sec = 12
    chunk.header.stamp.nanosec = 345
    chunk.sequence = 7
    chunk.framework = "act"
    chunk.checkpoint_id = "0123abcd"
    chunk.trajectory.joint_names = ["shoulder_pan_joint", "gripper_joint"]
    for k in range(3):
        point = JointTrajectoryPoint()
        point.positions = [0.1 * k, -0.2 * k]
        point.velocities = [1.0, -2.0]
        point.time_from_start = Duration(sec=0, nanosec=100_000_000 * (k + 1))
        chunk.trajectory.points.append(point)
    chunk.control_period = Duration(sec=0, nanosec=100_000_000)
    chunk.inference_latency_ms = 12.5
    chunk.observation_age_ms = 30.0
    return chunk


def test_environment_keeps_dds_on_loopback():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert 1 <= int(os.environ["ROS_DOMAIN_ID"]) <= 101


def test_action_chunk_round_trip_over_dds(ros_context, spin):
    talker = Node("chunk_talker", context=ros_context)
    listener = Node("chunk_listener", context=ros_context)
    received: list[ActionChunk] = []
    listener.create_subscription(ActionChunk, "action_chunk", received.append, 10)
    publisher = talker.create_publisher(ActionChunk, "action_chunk", 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(talker)
    executor.add_node(listener)
    try:
        # DDS discovery takes a moment: publish until the listener has seen a message.
        sent = make_chunk()
        assert spin(executor, lambda: publisher.get_subscription_count() > 0)
        assert spin(executor, lambda: received or publisher.publish(sent), timeout_s=10.0)
        got = received[0]
        assert got.sequence == 7 and got.framework == "act" and got.checkpoint_id == "0123abcd"
        assert (got.header.stamp.sec, got.header.stamp.nanosec) == (12, 345)
        assert list(got.trajectory.joint_names) == ["shoulder_pan_joint", "gripper_joint"]
        assert [list(p.positions) for p in got.trajectory.points] == [
            [0.0, -0.0], [0.1, -0.2], [0.2, -0.4]
        ]
        assert got.trajectory.points[2].time_from_start.nanosec == 300_000_000
        assert got.control_period.nanosec == 100_000_000
        assert abs(got.inference_latency_ms - 12.5) < 1e-6
    finally:
        executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()


def test_policy_status_constants_are_generated():
    status = PolicyStatus(state=PolicyStatus.STATE_HOLDING, dropped_frames=3)
    assert PolicyStatus.STATE_RUNNING == 2 and status.state == 3 and status.dropped_frames == 3
