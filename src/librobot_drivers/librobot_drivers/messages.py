"""ROS message <-> numpy conversions shared by the driver and the policy node.

Pure functions over message objects: no node, no executor, testable without rclpy.init().
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from librobot_drivers.articulated import wheel_speeds
from librobot_drivers.embodiment import Embodiment, JointGroup
from librobot_drivers.images import encode_rgb8
from librobot_drivers.reports import Report
from librobot_drivers.robot import JointReading


def to_seconds(stamp: Time | Duration) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def to_nanoseconds(stamp: Time | Duration) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def duration(seconds: float) -> Duration:
    nanoseconds = int(round(seconds * 1e9))
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def time_from_ns(nanoseconds: int) -> Time:
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def joint_state_msg(spec: Embodiment, reading: JointReading, stamp: Time) -> JointState:
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = spec.joint_names
    msg.position = reading.position.tolist()
    msg.velocity = reading.velocity.tolist()
    msg.effort = reading.effort.tolist()
    return msg


def joint_positions(spec: Embodiment, msg: JointState) -> np.ndarray:
    """Positions (dof,) in the spec's joint order; names may be aliases or in any order. For a
    policy's view of an articulated vehicle (`spec.commanded()`), its speed channel is the ground
    speed measured by the wheels' velocities."""
    return spec.state_values(list(msg.name), msg.position, msg.velocity)


def hardware_commands(spec: Embodiment, msg: JointState) -> tuple[np.ndarray, np.ndarray]:
    """A command of ros2_control's topic-based hardware interface -> (positions (dof,) in spec
    order, NaN for the velocity-commanded joints; the velocity-commanded joints' velocities in
    spec order). The interface names every joint but lists a value only for the interfaces a
    joint has: `position` holds the position-commanded joints' values in the message's name
    order, `velocity` the velocity-commanded ones' (a robot without velocity joints: positions)."""
    velocity_joints = [spec.joint_names[i] for i in spec.velocity_index]
    names = [_canonical(spec, n) for n in msg.name]
    by_position = [n for n in names if n not in velocity_joints]
    by_velocity = [n for n in names if n in velocity_joints]
    if len(msg.position) != len(by_position) or len(msg.velocity) < len(by_velocity) * bool(velocity_joints):
        raise ValueError(f"joint command with {len(msg.position)} positions and {len(msg.velocity)} velocities "
                         f"for {len(by_position)} position- and {len(by_velocity)} velocity-commanded joints")
    missing = [n for n in spec.joint_names if n not in by_position and n not in by_velocity]
    if missing:
        raise KeyError(f"{spec.name}: joints {missing} missing from the joint command {list(msg.name)}")
    value = dict(zip(by_position, msg.position))
    positions = np.array([value.get(n, np.nan) for n in spec.joint_names], dtype=np.float64)
    speed = dict(zip(by_velocity, msg.velocity))
    return positions, np.array([speed[n] for n in velocity_joints], dtype=np.float64)


def _canonical(spec: Embodiment, name: str) -> str:
    """`name`'s joint in `spec` (it may be an alias), or `name` itself for a joint not of `spec`."""
    try:
        return spec.canonical_joint_name(name)
    except KeyError:
        return name


def image_msg(image: np.ndarray, stamp: Time, frame_id: str) -> Image:
    """(H, W, 3) uint8 RGB -> rgb8 sensor_msgs/Image."""
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width, msg.step, msg.data = encode_rgb8(image)
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    return msg


def trajectory_arrays(
    spec: Embodiment, msg: JointTrajectory, group: JointGroup | None = None
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray | None]:
    """(start_time s, time_from_start (N,), positions (N, D), velocities (N, D) or None).

    D: the spec's joints, or `group`'s when given (a trajectory for that group's controller).
    Joint names may be aliases or in any order; every one of those joints must be present.
    """
    if not msg.points:
        raise ValueError("JointTrajectory without points")
    index = spec.joint_index(list(msg.joint_names), None if group is None else group.joints)
    n = len(msg.joint_names)
    positions = np.array([p.positions for p in msg.points], dtype=np.float64)
    if positions.shape != (len(msg.points), n):
        raise ValueError(f"every point needs {n} positions, got shape {positions.shape}")
    velocities = None
    if all(len(p.velocities) == n for p in msg.points):
        velocities = np.array([p.velocities for p in msg.points], dtype=np.float64)[:, index]
    tfs = np.array([to_seconds(p.time_from_start) for p in msg.points])
    return to_seconds(msg.header.stamp), tfs, positions[:, index], velocities


def trajectory_msg(
    joint_names: list[str],
    start_ns: int,
    time_from_start: np.ndarray,
    positions: np.ndarray,
    velocities: np.ndarray | None = None,
) -> JointTrajectory:
    """Build a JointTrajectory: times (N,) s, positions and velocities (N, dof)."""
    msg = JointTrajectory()
    msg.header.stamp = time_from_ns(start_ns)
    msg.joint_names = list(joint_names)
    for k, t in enumerate(time_from_start):
        point = JointTrajectoryPoint()
        point.positions = positions[k].tolist()
        if velocities is not None:
            point.velocities = velocities[k].tolist()
        point.time_from_start = duration(float(t))
        msg.points.append(point)
    return msg


def diagnostic_array(reports: list[Report], hardware_id: str, stamp: Time) -> DiagnosticArray:
    array = DiagnosticArray()
    array.header.stamp = stamp
    for report in reports:
        status = DiagnosticStatus(level=bytes([report.level]), name=report.name,
                                  message=report.message, hardware_id=hardware_id)
        status.values = [KeyValue(key=k, value=v) for k, v in report.values.items()]
        array.status.append(status)
    return array


def group_trajectory_msgs(
    spec: Embodiment,
    start_ns: int,
    time_from_start: np.ndarray,
    positions: np.ndarray,
    velocities: np.ndarray | None = None,
    groups: list[JointGroup] | None = None,
) -> list[tuple[JointGroup, JointTrajectory]]:
    """One JointTrajectory per group (default: the spec's commanded ones), all with the same
    stamp and times, from (N, spec.dof) positions/velocities in the spec's joint order.

    A drive's speed channel (a policy's view of an articulated vehicle) becomes its wheels'
    trajectory: velocities only, one per wheel (`wheel_speeds_trajectory`)."""
    out = []
    for group in spec.commanded_groups if groups is None else groups:
        if spec.drive is not None and group.name == spec.drive.group and spec.speed_index is not None:
            out.append((group, wheel_speeds_trajectory(spec, start_ns, time_from_start, positions, velocities)))
            continue
        index = spec.group_index(group)
        out.append((group, trajectory_msg(list(group.joints), start_ns, time_from_start, positions[:, index],
                                          None if velocities is None else velocities[:, index])))
    return out


def wheel_speeds_trajectory(spec: Embodiment, start_ns: int, time_from_start: np.ndarray,
                            positions: np.ndarray, velocities: np.ndarray | None) -> JointTrajectory:
    """The wheels' JointTrajectory of an articulated vehicle for a plan (N, spec.dof) of its
    policy's view: at each point, the wheel speeds (rad/s, `velocities` only) that drive the
    planned ground speed at the planned articulation angle and rate (the rate from `velocities`,
    or differences of the angles when there are none)."""
    drive = spec.drive
    speed = positions[:, spec.speed_index]
    articulation = spec.joint_names.index(drive.articulation_joint)
    gamma = positions[:, articulation]
    if velocities is not None:
        gamma_rate = velocities[:, articulation]
    elif len(gamma) > 1:
        gamma_rate = np.gradient(gamma, np.asarray(time_from_start, dtype=np.float64))
    else:
        gamma_rate = np.zeros_like(gamma)
    wheels = wheel_speeds(drive.geometry, speed, gamma, gamma_rate)
    msg = JointTrajectory()
    msg.header.stamp = time_from_ns(start_ns)
    msg.joint_names = list(drive.wheels)
    for k, t in enumerate(time_from_start):
        msg.points.append(JointTrajectoryPoint(velocities=wheels[k].tolist(), time_from_start=duration(float(t))))
    return msg
