"""Pure conversions of deserialized messages: stamps, images to RGB, joint states and
JointTrajectory commands to arrays (and their setpoints at given times), episode markers.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from librobot_drivers.images import ImageDecodeError, decode_compressed, decode_image
from librobot_drivers.trajectory import Trajectory
from librobot_training.conversion.base import ConversionError


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (sec, nanosec) -> int nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def message_to_rgb(msg: Any) -> np.ndarray:
    """A deserialized Image (rgb8, bgr8, rgba8, bgra8, mono8; row padding honoured) or
    CompressedImage (jpeg, png) message -> (H, W, 3) uint8 RGB."""
    try:
        return decode_compressed(msg) if hasattr(msg, "format") else decode_image(msg)
    except ImageDecodeError as err:
        raise ConversionError(str(err)) from None


def _padded(values: Sequence[float], count: int) -> np.ndarray:
    """(count,) float64 copy of ``values``; zeros when the field is empty or malformed."""
    array = np.asarray(values, dtype=np.float64)
    return array if array.shape == (count,) else np.zeros(count)


def joint_state_arrays(msg: Any, index: np.ndarray) -> np.ndarray:
    """JointState -> (3, D) float64 rows position, velocity, effort in embodiment joint order.

    ``index`` (D,) gives, per embodiment joint, its position in ``msg.name``; missing velocity or
    effort fields become zeros.
    """
    count = len(msg.name)
    if len(msg.position) != count:
        raise ConversionError(f"JointState with {count} names but {len(msg.position)} positions")
    return np.stack(
        [_padded(getattr(msg, key), count)[index] for key in ("position", "velocity", "effort")]
    )


def view_state_arrays(msg: Any, spec: Any, index: np.ndarray) -> np.ndarray:
    """JointState -> (3, D) rows like `joint_state_arrays`, for a policy's view with a drive's
    speed channel (`spec.speed_index`): the channel's position row is the ground speed from the
    wheels' measured velocities; its velocity and effort rows are NaN (not measured). ``index``
    maps the view's other joints (spec order) into ``msg.name``."""
    try:
        values = spec.state_values(list(msg.name), msg.position, msg.velocity)
    except (KeyError, ValueError) as err:
        raise ConversionError(f"JointState: {err.args[0]}") from None
    speed = spec.speed_index
    rows = np.full((3, spec.dof), np.nan)
    rows[:, [i for i in range(spec.dof) if i != speed]] = joint_state_arrays(msg, index)
    rows[0, speed] = values[speed]
    return rows


class TrajectoryCommand(NamedTuple):
    """A commanded JointTrajectory: absolute point times, positions and (when every point has
    them) velocities, in embodiment order."""

    point_ns: np.ndarray  # (P,) int64, header stamp (receive time if 0) + time_from_start
    positions: np.ndarray  # (P, D) float64
    velocities: np.ndarray | None = None  # (P, D) float64: cubic interpolation, as the controller

    def targets_at(self, t_ns: np.ndarray) -> np.ndarray:
        """Setpoints (K, D) at times ``t_ns`` (K,), interpolated between the points the way the
        driver's follower and joint_trajectory_controller do (linear, or cubic with
        velocities); the first point before it, the last one after it."""
        origin = self.point_ns[0]
        knots = Trajectory.through((self.point_ns - origin) * 1e-9, self.positions, self.velocities)
        return knots.sample_many((np.asarray(t_ns, dtype=np.int64) - origin) * 1e-9)[0]


class GroupedCommand(NamedTuple):
    """The trajectories in force for several joint groups at once (one controller each): the
    setpoint of every joint, each group's columns from its own latest command."""

    columns: tuple[np.ndarray, ...]  # per group, its joints' indices in embodiment order
    commands: tuple[TrajectoryCommand, ...]  # per group, its latest command
    dof: int

    def targets_at(self, t_ns: np.ndarray) -> np.ndarray:
        targets = np.empty((len(t_ns), self.dof), dtype=np.float64)
        for columns, command in zip(self.columns, self.commands):
            targets[:, columns] = command.targets_at(t_ns)
        return targets


def trajectory_from_message(msg: Any, index: np.ndarray, start_ns: int) -> TrajectoryCommand:
    """JointTrajectory with at least one point -> TrajectoryCommand (points sorted by time).

    ``index`` (D,) maps embodiment joints into ``msg.joint_names``; ``start_ns`` is the header
    stamp, or the receive time when the stamp is 0 ("start now").
    """
    joints = len(msg.joint_names)
    if any(len(p.positions) != joints for p in msg.points):
        raise ConversionError(
            f"JointTrajectory point without one position per joint of {list(msg.joint_names)}"
        )
    point_ns = start_ns + np.array(
        [stamp_to_ns(p.time_from_start) for p in msg.points], dtype=np.int64
    )
    order = np.argsort(point_ns, kind="stable")
    positions = np.stack([np.asarray(p.positions, dtype=np.float64)[index] for p in msg.points])
    velocities = None
    if all(len(p.velocities) == joints for p in msg.points):
        velocities = np.stack([np.asarray(p.velocities, dtype=np.float64)[index] for p in msg.points])[order]
    return TrajectoryCommand(point_ns[order], positions[order], velocities)


def wheel_trajectory_speeds(msg: Any, drive: Any, start_ns: int) -> TrajectoryCommand:
    """A drive's wheel JointTrajectory (velocities only, as the policy node and the expert send
    it to the drive node) -> TrajectoryCommand of its ground speed (P, 1), in m/s; interpolated
    linearly between the points, as the drive node does."""
    position = {name: i for i, name in enumerate(msg.joint_names)}
    missing = [w for w in drive.wheels if w not in position]
    if missing:
        raise ConversionError(f"wheel JointTrajectory without wheels {missing}: joints {list(msg.joint_names)}")
    if any(len(p.velocities) != len(msg.joint_names) for p in msg.points):
        raise ConversionError(f"wheel JointTrajectory point without one velocity per joint of "
                              f"{list(msg.joint_names)}")
    point_ns = start_ns + np.array([stamp_to_ns(p.time_from_start) for p in msg.points], dtype=np.int64)
    order = np.argsort(point_ns, kind="stable")
    wheels = np.array([[p.velocities[position[w]] for w in drive.wheels] for p in msg.points],
                      dtype=np.float64)
    return TrajectoryCommand(point_ns[order], drive.ground_speed(wheels)[order, None])


class EpisodeMarker(NamedTuple):
    """The fields of one librobot_msgs/EpisodeEvent message."""

    event: int
    episode_index: int
    seed: int
    instruction: str
    success: bool
