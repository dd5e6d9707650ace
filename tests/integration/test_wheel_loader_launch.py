"""The wheel loader through the real launch system and ros2_control (Jazzy): wheel_loader.launch.py
on mock hardware, the hydraulics' joint_trajectory_controller, the wheels' forward velocity
controller and the drive node's deadman in front of it."""

from __future__ import annotations

import time

import numpy as np

from librobot_drivers.embodiment import load_embodiment

SPEC = load_embodiment("wheel_loader")
WHEELS = [SPEC.joint_names.index(w) for w in SPEC.drive.wheels]
ARTICULATION = SPEC.joint_names.index("articulation_joint")
# the deadman's timeout, the drive node's tick, controller_manager's cycle and DDS hops
STOP_WITHIN_S = SPEC.drive.command_timeout_s + 0.25


def test_cmd_vel_drives_through_the_velocity_controller_and_the_deadman_stops_the_wheels(
        cli, observer, tmp_path, tiny_wheel_loader_checkpoint):
    from geometry_msgs.msg import Twist
    from sensor_msgs.msg import JointState

    states: list[tuple[float, JointState]] = []
    observer.create_subscription(JointState, "/joint_states", lambda m: states.append((time.monotonic(), m)), 200)
    cmd_vel = observer.create_publisher(Twist, "/cmd_vel", 10)
    twist = Twist()
    twist.linear.x, twist.angular.z = 1.0, 0.15

    def wheel_speeds():
        name_order = [list(states[-1][1].name).index(n) for n in SPEC.joint_names]
        return np.asarray(states[-1][1].velocity)[name_order][WHEELS]

    def articulation():
        msg = states[-1][1]
        return msg.position[list(msg.name).index("articulation_joint")]

    def drive(seconds):
        tick = [0]

        def publish():
            tick[0] += 1
            if tick[0] % 5 == 0:  # ~10 Hz
                cmd_vel.publish(twist)
        observer.spin_until(lambda: False, seconds, step=publish)
        return time.monotonic()

    def stopped_after(since):
        late = [m for t, m in states if t > since + STOP_WITHIN_S]
        order = [list(late[0].name).index(n) for n in SPEC.drive.wheels]
        return late and all(np.allclose(np.asarray(m.velocity)[order], 0.0) for m in late)

    with cli.launch(tmp_path / "launch.log", "use_sim:=false", "camera_driver:=none",
                    f"checkpoint:={tiny_wheel_loader_checkpoint}", launch_file="wheel_loader.launch.py") as system:
        for controller in ("hydraulics_controller", "wheels_controller"):
            system.wait_for_log(rf"Configured and activated .*{controller}", timeout_s=120)
        system.wait_for_log(r"\[drive\]: wheel_loader: wheels", timeout_s=60)
        assert observer.spin_until(lambda: len(states) > 10, 30)
        assert sorted(states[-1][1].name) == sorted(SPEC.joint_names)
        assert observer.spin_until(lambda: cmd_vel.get_subscription_count() > 0, 10)

        # 1. /cmd_vel drives: the drive node's wheel speeds reach the wheels through the real
        # velocity controller, and the articulation turns towards the asked turn
        last = drive(3.0)
        speeds = wheel_speeds()
        ground = SPEC.drive.geometry.wheel_radius * (speeds[2] + speeds[3]) / 2
        assert abs(ground - 1.0) < 0.05, (speeds, system.log()[-3000:])
        assert articulation() > 0.05  # a left turn
        # 2. the commander falls silent: the wheels stop within the deadman's timeout
        observer.spin_until(lambda: False, 1.5)
        assert stopped_after(last), system.log()[-3000:]
        assert "wheels: timed out" in system.log()

        # 3. driving again, then the commander is lost (its publisher gone): the wheels stop
        last = drive(1.5)
        assert abs(wheel_speeds()).max() > 0.5
        observer.destroy_publisher(cmd_vel)
        observer.spin_until(lambda: False, 1.5)
        assert stopped_after(last), system.log()[-3000:]


def test_the_twin_is_the_graphs_clock_and_the_shipped_policy_fills_the_hopper(cli, observer, tmp_path):
    """The default launch: the MuJoCo twin is the machine and the graph's clock (sim_clock); the
    shipped policy, the drive node and robot_state_publisher run on its /clock; an episode
    starts, the policy's chunks are stamped in simulated time and the drive node turns them into
    wheel speeds, and the episode ends. The policy solves most seeds (20/20 in evaluate), not
    each: up to three episodes, one must be a success."""
    from librobot_msgs.msg import ActionChunk, EpisodeEvent
    from rosgraph_msgs.msg import Clock
    from trajectory_msgs.msg import JointTrajectory

    from librobot_drivers.ros_common import EPISODE_EVENTS

    clock, events, chunks, wheels = [], [], [], []
    observer.create_subscription(Clock, "/clock", lambda m: clock.append(m.clock.sec + m.clock.nanosec * 1e-9), 10)
    observer.create_subscription(EpisodeEvent, "/episode_events", events.append, EPISODE_EVENTS)
    observer.create_subscription(ActionChunk, "/policy/action_chunk", chunks.append, 10)
    observer.create_subscription(JointTrajectory, "/drive/joint_trajectory", wheels.append, 10)
    ends = lambda: [e for e in events if e.event == EpisodeEvent.END]
    done = lambda: any(e.success for e in ends()) or len(ends()) == 3
    with cli.launch(tmp_path / "launch.log", "episodes:=3", launch_file="wheel_loader.launch.py") as system:
        system.wait_for_log(r"\[policy\]: active: commanding", timeout_s=120)
        # an episode lasts at most 40 s of the twin's time; 2 cores shared by the whole graph
        assert observer.spin_until(done, 540), system.log()[-3000:]
        assert [e.event for e in events[:2]] == [EpisodeEvent.START, EpisodeEvent.END]
        started, ended_at = (e.header.stamp.sec + e.header.stamp.nanosec * 1e-9 for e in events[:2])
        assert 0 < ended_at - started <= 40.5
        # /clock: the twin's time (it starts at the wall's), one 20 ms servo period a tick (the
        # observer may miss a message: whole periods apart)
        def periods(t):
            return (np.asarray(t) - clock[0]) / 0.02

        assert len(clock) > 100 and np.all(np.diff(clock) > 0)
        assert np.allclose(periods(clock), np.round(periods(clock)), atol=1e-4)
        assert clock[0] <= started and ended_at <= clock[-1]
        # the policy's chunks are stamped on that clock (use_sim_time), all through the episode
        stamps = np.array([c.header.stamp.sec + c.header.stamp.nanosec * 1e-9 for c in chunks])
        inside = stamps[(stamps >= started) & (stamps <= ended_at)]
        assert len(inside) > 20 and np.allclose(periods(inside), np.round(periods(inside)), atol=1e-4)
        assert wheels and all(len(w.points[0].velocities) == len(SPEC.drive.wheels) for w in wheels)
        assert "Traceback" not in system.log()
        assert any(e.success for e in ends()), (
            f"the shipped policy solved none of {len(ends())} episodes (seeds "
            f"{[e.seed for e in ends()]}):\n{system.log()[-3000:]}")
