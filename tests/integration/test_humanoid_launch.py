"""The humanoid through the real launch system and ros2_control (Jazzy): humanoid.launch.py, one
joint_trajectory_controller per joint group, the legs held, the policy commanding the upper body."""

from __future__ import annotations

import re

import numpy as np

from librobot_drivers import messages
from librobot_drivers.embodiment import load_embodiment

SPEC = load_embodiment("humanoid")
JTC_REJECTS = r"_controller\]: .*(not zero|not strictly increasing|ends (on|in) the past|doesn't match|Mismatch)"


def test_mock_hardware_runs_a_controller_per_group_and_the_policy_drives_the_upper_body(
        cli, observer, tmp_path, tiny_humanoid_checkpoint):
    from sensor_msgs.msg import Image, JointState
    from trajectory_msgs.msg import JointTrajectory

    states = []
    observer.create_subscription(JointState, "/joint_states", states.append, 100)
    received = {g.name: [] for g in SPEC.groups}
    for group in SPEC.groups:
        observer.create_subscription(JointTrajectory, group.command_topic, received[group.name].append, 100)
    camera = observer.create_publisher(Image, "/camera/head/image_raw", 10)
    right_arm = SPEC.group("right_arm")
    command = observer.create_publisher(JointTrajectory, right_arm.command_topic, 10)
    with cli.launch(tmp_path / "launch.log", "use_sim:=false", "camera_driver:=none",
                    f"checkpoint:={tiny_humanoid_checkpoint}", launch_file="humanoid.launch.py") as system:
        for group in SPEC.groups:
            system.wait_for_log(rf"Configured and activated .*{group.controller}", timeout_s=120)
        system.wait_for_log(r"\[policy\]: loaded act checkpoint", timeout_s=120)
        assert observer.spin_until(lambda: len(states) > 10, 30)
        assert sorted(states[-1].name) == sorted(SPEC.joint_names)  # joint_state_broadcaster: all 31

        # 1. A trajectory for one group's controller moves that group only.
        target = np.array([-0.4, -0.2, 0.1, 0.6, 0.2, 0.1, -0.1])
        assert observer.spin_until(lambda: command.get_subscription_count() > 0, 10)
        command.publish(messages.trajectory_msg(list(right_arm.joints), 0, np.array([0.5]), target[None]))
        arm = SPEC.group_index(right_arm)
        reached = lambda: np.allclose(messages.joint_positions(SPEC, states[-1])[arm], target, atol=1e-3)
        assert observer.spin_until(reached, 10), system.log()[-3000:]
        others = np.setdiff1d(np.arange(SPEC.dof), arm)
        assert np.abs(messages.joint_positions(SPEC, states[-1])[others]).max() < 1e-6

        command.publish(messages.trajectory_msg(list(right_arm.joints), 0, np.array([0.5]), np.zeros((1, 7))))
        assert observer.spin_until(lambda: np.abs(messages.joint_positions(SPEC, states[-1])).max() < 1e-3, 10)

        # 2. Head frames at 10 Hz: the policy sends each chunk to the five commanded controllers,
        # stamped alike; the legs' controller gets nothing and holds them.
        frame, tick = np.full((120, 160, 3), 100, np.uint8), [0]

        def publish_frame():
            tick[0] += 1
            if tick[0] % 5 == 0:  # spin_once takes ~20 ms: 10 Hz
                camera.publish(messages.image_msg(frame, observer.get_clock().now().to_msg(), "head_camera"))

        commanded = SPEC.commanded_groups
        assert observer.spin_until(lambda: all(len(received[g.name]) >= 5 for g in commanded), 60,
                                   step=publish_frame), system.log()[-3000:]
        assert received["legs"] == []
        stamps = [{(t.header.stamp.sec, t.header.stamp.nanosec) for t in received[g.name]} for g in commanded]
        assert set.intersection(*stamps)  # the same chunk reached every controller
        for group in commanded:
            assert list(received[group.name][-1].joint_names) == list(group.joints)
        assert not re.search(JTC_REJECTS, system.log()), system.log()[-3000:]
        legs = SPEC.group_index(SPEC.group("legs"))
        assert np.abs(messages.joint_positions(SPEC, states[-1])[legs]).max() < 1e-6
        moved = np.abs(messages.joint_positions(SPEC, states[-1]) - messages.joint_positions(SPEC, states[0]))
        assert moved[SPEC.commanded_index].max() > 1e-3  # the upper body follows the policy


def test_the_twin_behind_ros2_control_runs_an_episode(cli, observer, tmp_path, tiny_humanoid_checkpoint):
    """use_ros2_control:=true: the MuJoCo twin is the hardware behind the topic-based interface,
    six controllers in front of it; an episode starts, runs and ends."""
    from librobot_msgs.msg import EpisodeEvent

    from librobot_drivers.ros_common import EPISODE_EVENTS

    events = []
    observer.create_subscription(EpisodeEvent, "/episode_events", events.append, EPISODE_EVENTS)
    with cli.launch(tmp_path / "launch.log", "use_ros2_control:=true", "episodes:=1",
                    f"checkpoint:={tiny_humanoid_checkpoint}", launch_file="humanoid.launch.py") as system:
        for group in SPEC.groups:
            system.wait_for_log(rf"Configured and activated .*{group.controller}", timeout_s=120)
        ended = lambda: any(e.event == EpisodeEvent.END for e in events)
        assert observer.spin_until(ended, 120), system.log()[-3000:]
        assert not re.search(JTC_REJECTS, system.log()), system.log()[-3000:]
