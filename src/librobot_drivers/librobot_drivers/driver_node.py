"""One driver node for every robot: joint states and camera images out, commands in.

The node only wires ROS to a `Robot` (librobot_drivers.robot). Commands arrive one of two ways
(`command_interface`):

- `trajectory` (default, for machines without ros2_control): JointTrajectory messages on the
  controller's topic, followed by a `TrajectoryFollower` with joint_trajectory_controller's
  semantics; joint states go out on /joint_states.
- `joint_commands`: the robot is the hardware behind ros2_control's topic-based hardware
  interface: position commands in on the embodiment's `hardware_commands` topic, measured states
  out on `hardware_states` (controller_manager's joint_state_broadcaster publishes /joint_states).

A simulated robot also gets episodes: the node resets the scene, publishes
librobot_msgs/EpisodeEvent and the instruction, and reports success. Real hardware reports its
health on /diagnostics (1 Hz); when it stops answering, the node publishes no joint states (the
consumers see them go stale), retries once a second, and on recovery holds the measured pose.
A fault the robot latches (a servo's overload) refuses motion until `~/clear_faults` succeeds.

A twin that cannot keep up with the wall clock (the wheel loader's heap of stones) runs with
`sim_clock:=true`: the node is then the graph's clock, as a simulator is in ROS: every servo tick
advances the twin by one period and publishes it on /clock (rosgraph_msgs/Clock), and every
other node of the graph runs with `use_sim_time:=true`.

    ros2 run librobot_drivers driver_node --ros-args -p robot:=so100_sim -p episodes:=10
    ros2 run librobot_drivers driver_node --ros-args -p robot:=so100_feetech \
        -p port:=/dev/ttyACM0 -p calibration:=$HOME/.librobot/calibration/so100_feetech.json
"""

from __future__ import annotations

import sys

import numpy as np
from geometry_msgs.msg import PointStamped
from librobot_msgs.msg import EpisodeEvent
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from librobot_drivers import messages
from librobot_drivers.embodiment import JointGroup, load_embodiment
from librobot_drivers.episodes import EpisodeManager, EpisodeSchedule, Phase
from librobot_drivers.robot import CommandAnchor, RobotFault, RobotIOError
from librobot_drivers.robots import make_robot, robot_class
from librobot_drivers.ros_common import EPISODE_EVENTS, LATCHED, run_node
from librobot_drivers.trajectory import GroupFollowers

MAX_SIM_STEP_S = 0.05  # a late tick never advances the simulation by more than this
COMMAND_INTERFACES = ("trajectory", "joint_commands")
# After a reset the twin holds the reset pose this long while the controller takes the hold
# trajectory the node sends it (joint_commands mode): its earlier commands target the old scene.
RESET_SETTLE_S = 0.1
RECONNECT_PERIOD_S = 1.0  # after the hardware stopped answering, how often the node tries again


class DriverNode(Node):
    def __init__(self, **kwargs):
        super().__init__("driver", **kwargs)
        robot_name = self.declare_parameter("robot", "so100_sim").value
        self.spec = load_embodiment(self.declare_parameter("embodiment", "so100").value)
        servo_rate = self.declare_parameter("servo_rate_hz", 100.0).value
        camera_names = list(self.declare_parameter("cameras", [""]).value)  # [""]: the robot's
        episodes = self.declare_parameter("episodes", 0).value
        schedule = EpisodeSchedule(
            episodes=episodes,
            first_seed=self.declare_parameter("first_seed", 0).value,
            time_limit_s=self.declare_parameter("episode_time_limit_s", 15.0).value,
            success_hold_s=self.declare_parameter("success_hold_s", 0.5).value,
            pause_s=self.declare_parameter("episode_pause_s", 1.0).value,
            first_pause_s=self.declare_parameter("first_episode_pause_s", 0.0).value,
        )
        self._wait_for_commander = self.declare_parameter("wait_for_commander", True).value
        # real hardware in joint_commands mode: follow ros2_control only from a command at the arm
        self._anchor = CommandAnchor(self.declare_parameter("command_accept_radius", 0.05).value)
        self.command_interface = self.declare_parameter("command_interface", "trajectory").value
        if self.command_interface not in COMMAND_INTERFACES:
            self._refuse(f"parameter command_interface = {self.command_interface!r}: expected "
                         f"one of {list(COMMAND_INTERFACES)}")

        # sim_clock: the twin is the graph's clock (/clock; every other node runs with
        # use_sim_time): each servo tick advances it by one period however long the tick takes,
        # so a twin slower than real time slows the whole graph instead of falling behind it
        self.sim_clock = bool(self.declare_parameter("sim_clock", False).value)
        if self.sim_clock and self.get_parameter("use_sim_time").value:
            self._refuse("parameters sim_clock and use_sim_time are both true: the driver is the "
                         "clock then and runs on the wall's; give use_sim_time to the other nodes")

        # hardware options (unused by the simulated twin)
        hardware_options = {
            "port": self.declare_parameter("port", "").value,
            "calibration": self.declare_parameter("calibration", "").value,
            "on_shutdown": self.declare_parameter("on_shutdown", "torque_off").value,
            "max_relative_target": self.declare_parameter("max_relative_target", 0.0).value,
        }
        camera_names = [c for c in camera_names if c]
        options = {"render_cameras": camera_names} if camera_names else {}
        options.update(hardware_options)
        taken = robot_class(robot_name).options
        self.robot = make_robot(robot_name, self.spec, **{k: v for k, v in options.items() if k in taken})
        self.robot.connect()
        self.cameras = self.robot.camera_names
        if self.sim_clock and not self.robot.simulated:
            self.robot.disconnect()
            self._refuse(f"parameter sim_clock = true needs a simulated robot, not {robot_name!r}")
        self._period_ns = int(round(1e9 / servo_rate))
        self._sim_ns = self.get_clock().now().nanoseconds  # the clock starts at the wall's time
        for name in self.cameras:  # the first frame sets up the renderer (seconds on a cold machine):
            self.robot.read_camera(name)  # do it now, not in the middle of the first episode
        self._measured = self.robot.read_joints().position
        self.follower = GroupFollowers.for_embodiment(self.spec, self._measured)  # one JTC per group
        self._joint_command: np.ndarray | None = None  # joint_commands mode: the latest command
        # velocity-commanded joints (a vehicle's wheels): the latest command, kept like a
        # forward velocity controller keeps it (the drive node in front of it stops them)
        self._velocity_command = np.zeros(len(self.spec.velocity_index))
        self._settle_until = 0.0
        self._max_step = self.spec.velocity_limits / servo_rate * 2.0
        self._last_tick: float | None = None
        self._lost_since: float | None = None  # the hardware stopped answering at this time
        self._next_try = 0.0

        hardware = self.command_interface == "joint_commands"
        self._own_command_publishers = 1 if hardware else 0  # the hold publishers below
        self._joint_pub = self.create_publisher(
            JointState, self.spec.topic("hardware_states" if hardware else "joint_states"), 10)
        self._image_pubs = {
            name: self.create_publisher(Image, self.spec.camera(name).topic, 5)
            for name in self.cameras
        }
        if hardware:
            self.create_subscription(
                JointState, self.spec.topic("hardware_commands"), self._on_joint_command, 10)
            # the controllers' topics: at a reset, each controller is told to hold the reset pose
            self._hold_pubs = {g.name: self.create_publisher(JointTrajectory, g.command_topic, 10)
                               for g in self.spec.groups}
        else:  # every group's controller, held ones too (nobody commands those: they hold)
            for group in self.spec.groups:
                if group.interface == "velocity":  # a forward velocity controller's input
                    self.create_subscription(Float64MultiArray, group.controller_commands_topic,
                                             lambda msg, group=group: self._on_velocities(group, msg), 10)
                    continue
                self.create_subscription(JointTrajectory, group.command_topic,
                                         lambda msg, group=group: self._on_trajectory(group, msg), 10)
        if self.sim_clock:
            self._clock_pub = self.create_publisher(Clock, "/clock", 10)
            self._clock_pub.publish(Clock(clock=self._stamp()))
        self.create_timer(1.0 / servo_rate, self._on_servo_tick)
        if not self.robot.simulated:
            self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
            self.create_timer(1.0, self._publish_health)
            self.create_service(Trigger, "~/clear_faults", self._on_clear_faults)
        # frames at each camera's rate: on the wall clock, or on the twin's when it is the clock
        self._frame_period_ns = {name: int(round(1e9 / self.spec.camera(name).rate_hz)) for name in self.cameras}
        self._next_frame_ns = dict.fromkeys(self.cameras, self._sim_ns)
        if not self.sim_clock:
            for name in self.cameras:
                self.create_timer(self._frame_period_ns[name] * 1e-9, lambda name=name: self._publish_camera(name))

        self.episodes = EpisodeManager(schedule) if self.robot.simulated else EpisodeManager(
            EpisodeSchedule(episodes=0)
        )
        if self.robot.simulated:
            self._event_pub = self.create_publisher(
                EpisodeEvent, self.spec.topic("episode_events"), EPISODE_EVENTS
            )
            self._instruction_pub = self.create_publisher(
                String, self.spec.topic("instruction"), LATCHED
            )
            self._object_pub = self.create_publisher(PointStamped, "/sim/object_position", 10)
            self._instruction_pub.publish(String(data=self.robot.instruction))
        self.get_logger().info(
            f"{robot_name}: {self.spec.dof} joints, cameras {self.cameras}, commands on "
            f"{self.spec.topic('hardware_commands') if hardware else [g.command_topic for g in self.spec.groups]}, "
            f"{episodes} episode(s)"
        )

    def _refuse(self, problem: str) -> None:
        """A bad parameter: destroy the half-built node (left to the garbage collector, its DDS
        participant is torn down at a random later moment, which can hang) and raise."""
        Node.destroy_node(self)
        raise ValueError(problem)

    # -- commands ------------------------------------------------------------------------------
    def _on_trajectory(self, group: JointGroup, msg: JointTrajectory) -> None:
        try:
            start, tfs, positions, velocities = messages.trajectory_arrays(self.spec, msg, group)
            kept = self.follower.set_trajectory(group.name, self._now(), start, tfs, positions, velocities)
        except (KeyError, ValueError) as err:
            self.get_logger().error(f"rejected trajectory for {group.controller}: {err}",
                                    throttle_duration_sec=1.0)
            return
        if kept == 0:
            self.get_logger().warn(f"rejected trajectory for {group.controller}: every point is in the past",
                                   throttle_duration_sec=1.0)

    def _on_velocities(self, group: JointGroup, msg: Float64MultiArray) -> None:
        """velocity_controllers' input, as that controller takes it: one speed per joint, in the
        group's order, kept until the next."""
        if len(msg.data) != len(group.joints) or not np.all(np.isfinite(msg.data)):
            self.get_logger().error(f"rejected {group.controller_commands_topic}: {list(msg.data)}; expected "
                                    f"{len(group.joints)} finite speeds for {list(group.joints)}",
                                    throttle_duration_sec=1.0)
            return
        velocity_joints = [self.spec.joint_names[i] for i in self.spec.velocity_index]
        self._velocity_command[[velocity_joints.index(n) for n in group.joints]] = msg.data

    def _on_joint_command(self, msg: JointState) -> None:
        try:
            command, velocities = messages.hardware_commands(self.spec, msg)
        except (KeyError, ValueError) as err:
            self.get_logger().error(f"rejected joint command: {err}", throttle_duration_sec=1.0)
            return
        if len(velocities):
            self._velocity_command = velocities
            command = np.where(np.isnan(command), self._measured, command)  # no positions for those
        if not self.robot.simulated:
            gap = self._anchor.accept(command, self._measured)
            if gap is not None:
                self.get_logger().warn(
                    f"ignoring joint commands {gap:.2f} rad from the measured pose until one is within "
                    f"{self._anchor.radius} rad (a controller activated before the arm answered holds "
                    "the interface's initial values: its next trajectory starts from the measured pose)",
                    throttle_duration_sec=2.0)
                return
        self._joint_command = command

    # -- control loop --------------------------------------------------------------------------
    def _now(self) -> float:
        return (self._sim_ns if self.sim_clock else self.get_clock().now().nanoseconds) * 1e-9

    def _stamp(self):
        """builtin_interfaces/Time of now: the node's clock, or the twin's when it is the clock."""
        return Time(nanoseconds=self._sim_ns).to_msg() if self.sim_clock else self.get_clock().now().to_msg()

    def _tick_clock(self) -> None:
        """sim_clock: one servo period of simulated time, published on /clock, and the frames due."""
        self.robot.step(self._period_ns * 1e-9)
        self._sim_ns += self._period_ns
        self._clock_pub.publish(Clock(clock=self._stamp()))
        for name, due in self._next_frame_ns.items():
            if self._sim_ns >= due:
                self._next_frame_ns[name] = due + self._frame_period_ns[name]
                self._publish_camera(name)

    def _target(self, now: float) -> np.ndarray:
        if self.command_interface == "trajectory":
            return self.follower.sample(now)[0]
        if self._joint_command is None or now < self._settle_until:
            return self.follower.sample(now)[0]  # the held pose
        return self._joint_command

    def _on_servo_tick(self) -> None:
        now = self._now()
        if self._lost_since is not None and not self._reconnected(now):
            return
        try:
            self._command(now)
            if self.sim_clock:
                self._tick_clock()
                now = self._now()
                self._run_episodes(now)
            elif self.robot.simulated:
                if self._last_tick is not None:
                    self.robot.step(min(max(now - self._last_tick, 0.0), MAX_SIM_STEP_S))
                self._last_tick = now
                self._run_episodes(now)
            reading = self.robot.read_joints()
        except RobotIOError as err:
            self._lost(now, err)
            return
        self._measured = reading.position
        stamp = self._stamp()
        self._joint_pub.publish(messages.joint_state_msg(self.spec, reading, stamp))

    def _lost(self, now: float, err: RobotIOError) -> None:
        self._lost_since = now if self._lost_since is None else self._lost_since
        self._next_try = now + RECONNECT_PERIOD_S
        self.get_logger().error(f"hardware not answering: {err}; retrying every "
                                f"{RECONNECT_PERIOD_S:.0f} s", throttle_duration_sec=5.0)

    def _reconnected(self, now: float) -> bool:
        """While the hardware is lost: read it once a second; when it answers, hold the measured
        pose (not the plan from before) and go on."""
        if now < self._next_try:
            return False
        try:
            position = self.robot.read_joints().position
        except RobotIOError as err:
            self._lost(now, err)
            return False
        self.get_logger().warn(f"hardware answering again after {now - self._lost_since:.1f} s; "
                               "holding the measured pose")
        self._lost_since = None
        self.follower.hold(position)
        self._joint_command = None
        self._anchor.reset()
        return True

    def _command(self, now: float) -> None:
        try:
            self.robot.send_positions(self._target(now), max_step=self._max_step)
            if len(self._velocity_command):
                self.robot.send_velocities(self._velocity_command)
        except ValueError as err:  # a non-finite command: refused, the robot keeps its last one
            self.get_logger().error(f"refused command: {err}", throttle_duration_sec=1.0)
        except RobotFault as err:  # the servos hold their last goal
            self.get_logger().error(str(err), throttle_duration_sec=5.0)

    # -- hardware health -------------------------------------------------------------------------
    def _publish_health(self) -> None:
        if self._lost_since is not None:
            return  # the servo tick reports it; a health read would only wait for timeouts again
        reports = self.robot.health()
        self._diagnostics_pub.publish(messages.diagnostic_array(
            reports, self.spec.name, self.get_clock().now().to_msg()))

    def _on_clear_faults(self, request, response):
        try:
            reason = self.robot.clear_faults()
        except RobotIOError as err:
            reason = str(err)
        response.success, response.message = reason is None, reason or "faults cleared; holding the measured pose"
        if reason is None:
            self.follower.hold(self.robot.read_joints().position)
            self._joint_command = None
            self._anchor.reset()
        return response

    def _publish_camera(self, name: str) -> None:
        stamp = self._stamp()
        frame = self.robot.read_camera(name)
        self._image_pubs[name].publish(messages.image_msg(frame, stamp, f"{name}_camera"))
        if self.robot.simulated:
            point = PointStamped()
            point.header.stamp, point.header.frame_id = stamp, "world"
            point.point.x, point.point.y, point.point.z = (float(v) for v in self.robot.object_pose()[:3])
            self._object_pub.publish(point)

    # -- episodes (simulation only) ----------------------------------------------------------
    def _run_episodes(self, now: float) -> None:
        if self.episodes.phase is Phase.DONE:
            return
        if (
            self.episodes.phase is Phase.IDLE
            and self.episodes.index < 0
            and self._wait_for_commander
            and any(self.count_publishers(g.command_topic) <= self._own_command_publishers
                    for g in self.spec.commanded_groups)
        ):
            return  # nobody is ready to drive the robot yet
        event = self.episodes.update(now, self.robot.task_success())
        if event is None:
            return
        if event.kind == "start":
            self.robot.reset(event.seed)
            self._velocity_command[:] = 0.0
            rest = self.robot.read_joints().position
            self.follower.hold(rest)
            if self.command_interface == "joint_commands":
                self._joint_command, self._settle_until = None, now + RESET_SETTLE_S
                for group, msg in messages.group_trajectory_msgs(
                        self.spec, 0, np.array([RESET_SETTLE_S / 2]), rest[None],
                        np.zeros((1, self.spec.dof)), groups=list(self.spec.groups)):
                    self._hold_pubs[group.name].publish(msg)
            self._instruction_pub.publish(String(data=self.robot.instruction))
        else:
            self.follower.hold(self.robot.read_joints().position)
            self.get_logger().info(
                f"episode {event.index} (seed {event.seed}): "
                f"{'success' if event.success else 'failure'}; "
                f"success rate {self.episodes.success_rate:.0%} over {len(self.episodes.results)}"
            )
        msg = EpisodeEvent()
        msg.header.stamp = self._stamp()
        msg.event = EpisodeEvent.START if event.kind == "start" else EpisodeEvent.END
        msg.episode_index = event.index
        msg.seed = event.seed
        msg.instruction = self.robot.instruction
        msg.success = event.success
        self._event_pub.publish(msg)

    def destroy_node(self) -> None:
        self.robot.disconnect()
        super().destroy_node()


def main(args=None) -> int:
    return run_node(DriverNode, "driver_node", args=args)


if __name__ == "__main__":
    sys.exit(main())
