"""The driver node over the simulated SO-100, on real rclpy: states and images out, trajectories in."""

import numpy as np
from librobot_msgs.msg import EpisodeEvent
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory

from librobot_drivers import messages
from librobot_drivers.driver_node import DriverNode
from librobot_drivers.ros_common import EPISODE_EVENTS
from librobot_drivers.embodiment import load_embodiment

SPEC = load_embodiment("so100")


def make(context, **params):
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    driver = DriverNode(context=context, parameter_overrides=overrides)
    client = Node("client", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(driver)
    executor.add_node(client)
    return driver, client, executor


def test_driver_publishes_states_and_images_and_follows_a_trajectory(ros_context, spin):
    driver, client, executor = make(ros_context)
    states, images = [], []
    client.create_subscription(JointState, "/joint_states", states.append, 50)
    client.create_subscription(Image, "/camera/front/image_raw", images.append, 5)
    command = client.create_publisher(JointTrajectory, SPEC.command_topic, 10)
    try:
        assert spin(executor, lambda: len(images) >= 1 and len(states) >= 5, timeout_s=20.0)
        image = images[-1]
        assert (image.encoding, image.height, image.width, image.step) == ("rgb8", 120, 160, 480)
        assert list(states[-1].name) == SPEC.joint_names
        start = messages.joint_positions(SPEC, states[-1])
        target = start.copy()
        target[0] += 0.3  # shoulder_pan
        # LeRobot-style aliases, reversed order, header stamp 0 = now
        names = [j.aliases[0] for j in SPEC.joints][::-1]
        trajectory = messages.trajectory_msg(names, 0, np.array([0.5]), target[None, ::-1])
        assert spin(executor, lambda: command.get_subscription_count() > 0)
        command.publish(trajectory)
        reached = lambda: abs(messages.joint_positions(SPEC, states[-1])[0] - target[0]) < 0.03
        assert spin(executor, reached, timeout_s=10.0), messages.joint_positions(SPEC, states[-1])
    finally:
        executor.shutdown()
        driver.destroy_node()
        client.destroy_node()


def test_simulated_episodes_start_once_a_commander_is_connected(ros_context, spin):
    driver, client, executor = make(ros_context, episodes=1, episode_time_limit_s=1.0,
                                    episode_pause_s=0.2)
    events = []
    client.create_subscription(EpisodeEvent, "/episode_events", events.append, EPISODE_EVENTS)
    try:
        spin(executor, lambda: False, timeout_s=1.0)
        assert events == []  # nobody commands the robot yet
        client.create_publisher(JointTrajectory, SPEC.command_topic, 10)
        assert spin(executor, lambda: len(events) >= 2, timeout_s=15.0)
        start, end = events[0], events[1]
        assert (start.event, end.event) == (EpisodeEvent.START, EpisodeEvent.END)
        assert start.seed == end.seed == 0 and not end.success  # nobody moved the cube
        assert start.instruction == "put the red cube in the green square"
    finally:
        executor.shutdown()
        driver.destroy_node()
        client.destroy_node()


def test_a_twin_that_is_the_clock_publishes_it_and_stamps_everything_with_it(ros_context, spin):
    """sim_clock: /clock advances one servo period per tick; joint states, frames and episode
    events carry that time; a node on use_sim_time sees it, and its trajectories (stamped in
    it) are followed."""
    from rclpy.time import Time
    from rosgraph_msgs.msg import Clock

    driver, client, executor = make(ros_context, sim_clock=True)
    follower = Node("sim_time_client", context=ros_context,
                    parameter_overrides=[Parameter("use_sim_time", value=True)])
    executor.add_node(follower)
    clocks, states, images = [], [], []
    client.create_subscription(Clock, "/clock", lambda m: clocks.append(Time.from_msg(m.clock).nanoseconds), 100)
    client.create_subscription(JointState, "/joint_states", states.append, 100)
    client.create_subscription(Image, "/camera/front/image_raw", images.append, 10)
    command = follower.create_publisher(JointTrajectory, SPEC.command_topic, 10)
    try:
        assert spin(executor, lambda: len(images) >= 4 and len(clocks) >= 50, timeout_s=20.0)
        assert set(np.diff(clocks[-40:]).tolist()) == {10_000_000}  # 100 Hz servo: 10 ms a tick
        ticks = set(clocks)
        assert all(Time.from_msg(s.header.stamp).nanoseconds in ticks for s in states[-20:])
        frame_times = [Time.from_msg(i.header.stamp).nanoseconds for i in images]
        assert set(np.diff(frame_times[-3:]).tolist()) == {100_000_000}  # 10 Hz of simulated time
        assert abs(follower.get_clock().now().nanoseconds - clocks[-1]) <= 20_000_000

        start = messages.joint_positions(SPEC, states[-1])
        target = start.copy()
        target[0] += 0.3
        trajectory = messages.trajectory_msg(SPEC.joint_names, follower.get_clock().now().nanoseconds,
                                             np.array([0.5]), target[None])
        assert spin(executor, lambda: command.get_subscription_count() > 0)
        command.publish(trajectory)
        reached = lambda: abs(messages.joint_positions(SPEC, states[-1])[0] - target[0]) < 0.03
        assert spin(executor, reached, timeout_s=10.0), messages.joint_positions(SPEC, states[-1])
    finally:
        executor.shutdown()
        for node in (driver, client, follower):
            node.destroy_node()


def test_sim_clock_is_refused_with_use_sim_time(ros_context):
    import pytest

    with pytest.raises(ValueError, match="sim_clock and use_sim_time are both true"):
        DriverNode(context=ros_context, parameter_overrides=[Parameter("sim_clock", value=True),
                                                             Parameter("use_sim_time", value=True)])
