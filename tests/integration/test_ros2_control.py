"""The policy in front of the real controller_manager and joint_trajectory_controller (Jazzy):
mock hardware (use_sim:=false), and the MuJoCo twin as the hardware (use_ros2_control:=true)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from librobot_drivers import messages
from librobot_drivers.embodiment import load_embodiment
from librobot_drivers.trajectory import Trajectory, TrajectoryFollower, TrajectoryRejected

SPEC = load_embodiment("so100")
JTC_REJECTS = r"\[arm_controller\]: .*(not zero|not strictly increasing|ends (on|in) the past|doesn't match|Mismatch)"


def trajectory_cases(now_ns: int) -> dict[str, tuple]:
    """name -> (time_from_start, positions, velocities, stamp) of trajectories sent to both."""
    rest = np.zeros((1, SPEC.dof))
    ramp = np.linspace(0.0, 0.3, 5)[:, None] * np.ones((1, SPEC.dof))
    times = np.arange(1, 6) * 0.1
    moving_end = np.full((5, SPEC.dof), 0.5)
    return {
        "ends at rest": (times, ramp, np.vstack([np.full((4, SPEC.dof), 0.5), rest]), 0),
        "moving at the end": (times, ramp, moving_end, 0),
        "times not increasing": (np.array([0.1, 0.2, 0.2, 0.3, 0.4]), ramp, None, 0),
        "all in the past": (times, ramp, None, now_ns - 5_000_000_000),
    }


def test_mock_hardware_accepts_every_chunk_and_follows_it_and_holds_on_stale_frames(cli, observer, tmp_path):
    from sensor_msgs.msg import Image, JointState
    from trajectory_msgs.msg import JointTrajectory

    states, trajectories = [], []
    observer.create_subscription(JointState, "/joint_states", states.append, 100)
    observer.create_subscription(JointTrajectory, SPEC.command_topic, trajectories.append, 100)
    camera = observer.create_publisher(Image, "/camera/front/image_raw", 10)
    command = observer.create_publisher(JointTrajectory, SPEC.command_topic, 10)
    with cli.launch(tmp_path / "launch.log", "use_sim:=false", "camera_driver:=none") as system:
        system.wait_for_log(r"Configured and activated .*arm_controller", timeout_s=120)
        system.wait_for_log(r"\[policy\]: loaded act checkpoint", timeout_s=120)
        assert observer.spin_until(lambda: len(states) > 10, 30)

        # 1. The same trajectories through Jazzy's controller and through our follower.
        for name, (tfs, positions, velocities, stamp) in trajectory_cases(observer.get_clock().now().nanoseconds).items():
            follower = TrajectoryFollower(np.zeros(SPEC.dof))
            try:
                ours = follower.set_trajectory(0.0 if stamp == 0 else (stamp + 5e9) * 1e-9, stamp * 1e-9,
                                               tfs, positions, velocities) > 0
            except TrajectoryRejected:
                ours = False
            before = len(re.findall(JTC_REJECTS, system.log()))
            command.publish(messages.trajectory_msg(SPEC.joint_names, stamp, tfs, positions, velocities))
            observer.spin_until(lambda: False, 1.0)
            theirs = len(re.findall(JTC_REJECTS, system.log())) == before
            assert ours == theirs, f"{name}: follower accepts {ours}, joint_trajectory_controller {theirs}"

        # 2. Frames at the camera's 10 Hz: the policy's chunks all go through the controller.
        frame = np.full((120, 160, 3), 100, np.uint8)
        tick = [0]

        def publish_frame():
            tick[0] += 1
            if tick[0] % 5 == 0:  # spin_once takes ~20 ms
                camera.publish(messages.image_msg(frame, observer.get_clock().now().to_msg(), "front_camera"))

        sent, log_before_frames = len(trajectories), system.log()
        assert observer.spin_until(lambda: len(trajectories) >= sent + 15, 60, step=publish_frame), \
            system.log()[-3000:]
        since_frames = system.log()[len(log_before_frames):]
        assert not re.search(JTC_REJECTS, since_frames), since_frames[-3000:]
        # The measured joints follow the chunk's targets (mock hardware: state = command).
        chunks = [t for t in trajectories[sent:] if len(t.points) > 1]
        errors = []
        for chunk, following in zip(chunks[2:-1], chunks[3:]):  # each until the next replaces it
            start, tfs, positions, velocities = messages.trajectory_arrays(SPEC, chunk)
            path = Trajectory(start + tfs, positions, velocities, cubic=True)
            replaced = messages.to_seconds(following.header.stamp)
            for state in states:
                t = messages.to_seconds(state.header.stamp)
                if start + tfs[1] <= t < replaced:
                    errors.append(np.abs(messages.joint_positions(SPEC, state) - path.sample(t)[0]).max())
        assert errors and max(errors) < 0.05, (len(errors), max(errors, default=None))

        # 3. Frames stop: the node sends one hold at rest and the arm stops, not the chunk's rest.
        stop_at = len(trajectories)
        observer.spin_until(lambda: False, 1.5)
        holds = [t for t in trajectories[stop_at:] if len(t.points) == 1]
        assert holds and list(holds[-1].points[0].velocities) == [0.0] * SPEC.dof
        observer.spin_until(lambda: False, 0.3)
        settled = messages.joint_positions(SPEC, states[-1])
        observer.spin_until(lambda: False, 1.0)
        assert np.abs(messages.joint_positions(SPEC, states[-1]) - settled).max() < 1e-3


def test_the_twin_behind_ros2_control_solves_episodes_like_the_drivers_own_follower(cli, observer, tmp_path):
    """Same seeds, both ways; prints both success rates (a study over more seeds is in the note)."""
    from librobot_msgs.msg import EpisodeEvent

    from librobot_drivers.ros_common import EPISODE_EVENTS

    rates = {}
    for mode in ("false", "true"):
        ends = []
        sub = observer.create_subscription(
            EpisodeEvent, "/episode_events",
            lambda m: ends.append(m) if m.event == EpisodeEvent.END else None, EPISODE_EVENTS)
        with cli.launch(tmp_path / f"launch_{mode}.log", f"use_ros2_control:={mode}", "episodes:=3") as system:
            assert observer.spin_until(lambda: len(ends) >= 3, 150), system.log()[-3000:]
            assert not re.search(JTC_REJECTS, system.log()), system.log()[-3000:]
        observer.destroy_subscription(sub)
        rates[mode] = [e.success for e in ends[:3]]
    # three episodes: each fails about one time in ten either way (the twin study: 18/20), and two
    # failures in a row happened in CI once
    print(f"episodes solved, seeds 0-2: driver's follower {rates['false']}, "
          f"joint_trajectory_controller {rates['true']}")
    assert any(rates["true"]), rates


def test_the_real_arm_path_emulated_servos_behind_ros2_control(cli, observer, tmp_path):
    """use_sim:=false use_mock_hardware:=false: Jazzy's topic-based hardware interface, our driver
    node (So100Feetech) serving its topics, the servos an emulated STS3215 bus. The arm starts
    away from zero and must not move until commanded; a trajectory to the controller reaches the
    servos; /joint_states (joint_state_broadcaster) reports the servos' positions; the policy's
    chunks drive the servos through the controller."""
    import sys
    from pathlib import Path

    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src" / "librobot_drivers" / "test"))
    from feetech_arm import TICKS_PER_RAD, PhysicalArm, start_arm, write_calibration

    start = np.array([0.4, -0.3, 0.5, 0.2, 0.0, 0.3])
    states = []
    observer.create_subscription(JointState, "/joint_states", states.append, 100)
    command = observer.create_publisher(JointTrajectory, SPEC.command_topic, 10)
    calibration = write_calibration(tmp_path / "follower.json", SPEC)
    with start_arm(start) as emu, cli.launch(
            tmp_path / "launch.log", "use_sim:=false", "use_mock_hardware:=false", "camera_driver:=none",
            f"port:={emu.port}", f"calibration:={calibration}") as system:
        arm = PhysicalArm(emu)
        system.wait_for_log(r"Configured and activated .*arm_controller", timeout_s=120)
        system.wait_for_log(r"\[policy\]: loaded act checkpoint", timeout_s=120)
        # the servos' positions reach /joint_states through the hardware interface (before the
        # driver is up, the interface reports its initial zeros and the controller holds those:
        # the driver refuses them, the arm does not move)
        measured = lambda: states and np.allclose(messages.joint_positions(SPEC, states[-1]), start, atol=0.01)
        assert observer.spin_until(measured, 30), system.log()[-3000:]
        assert np.allclose(arm.joints(), start, atol=2 / TICKS_PER_RAD), arm.joints()  # no jump at start

        target = np.array([0.1, 0.2, 0.3, -0.2, 0.5, 0.6])
        assert observer.spin_until(lambda: command.get_subscription_count() > 0, 10)
        command.publish(messages.trajectory_msg(SPEC.joint_names, 0, np.array([1.0]), target[None]))
        reached = lambda: np.allclose(arm.joints(), target, atol=3 / TICKS_PER_RAD)
        assert observer.spin_until(reached, 10), (arm.joints(), system.log()[-3000:])
        assert observer.spin_until(
            lambda: np.allclose(messages.joint_positions(SPEC, states[-1]), target, atol=0.01), 5)

        # The policy on the follower: camera frames in, its chunks through the controller to the
        # servos (from the rest pose, where the shipped model's first targets are within max_step).
        from librobot_msgs.msg import ActionChunk
        from sensor_msgs.msg import Image

        chunks = []
        observer.create_subscription(ActionChunk, "/policy/action_chunk", chunks.append, 10)
        camera = observer.create_publisher(Image, "/camera/front/image_raw", 10)
        command.publish(messages.trajectory_msg(SPEC.joint_names, 0, np.array([1.0]), np.zeros((1, 6))))
        assert observer.spin_until(lambda: np.allclose(arm.joints(), 0, atol=3 / TICKS_PER_RAD), 10)
        frame, tick = np.full((120, 160, 3), 100, np.uint8), [0]

        def publish_frame():
            tick[0] += 1
            if tick[0] % 5 == 0:  # spin_once takes ~20 ms: 10 Hz
                camera.publish(messages.image_msg(frame, observer.get_clock().now().to_msg(), "front_camera"))

        assert observer.spin_until(lambda: len(chunks) >= 8, 60, step=publish_frame), system.log()[-3000:]
        observer.spin_until(lambda: False, 0.3, step=publish_frame)
        planned = np.vstack([messages.trajectory_arrays(SPEC, c.trajectory)[2] for c in chunks[-3:]])
        position = arm.joints()
        assert np.abs(position).max() > 0.02  # the servos moved with the policy's chunks,
        assert np.all((position >= planned.min(axis=0) - 0.1) & (position <= planned.max(axis=0) + 0.1)), \
            (position, planned.min(axis=0), planned.max(axis=0))  # along the plans
        assert "refused chunk" not in system.log()
        assert not re.search(JTC_REJECTS, system.log()), system.log()[-3000:]
