"""Pure conversions of deserialized messages: stamps, images to RGB, joint states and
JointTrajectory commands to arrays (and evaluating a trajectory at given times), episode markers.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from librobot_drivers.images import ImageDecodeError, decode_compressed, decode_image
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


class TrajectoryCommand(NamedTuple):
    """A commanded JointTrajectory: absolute point times and positions in embodiment order."""

    point_ns: np.ndarray  # (P,) int64, header stamp (receive time if 0) + time_from_start
    positions: np.ndarray  # (P, D) float64


def trajectory_from_message(msg: Any, index: np.ndarray, start_ns: int) -> TrajectoryCommand:
    """JointTrajectory with at least one point -> TrajectoryCommand (points sorted by time).

    ``index`` (D,) maps embodiment joints into ``msg.joint_names``; ``start_ns`` is the header
    stamp, or the receive time when the stamp is 0 ("start now").
    """
    if any(len(p.positions) != len(msg.joint_names) for p in msg.points):
        raise ConversionError(
            f"JointTrajectory point without one position per joint of {list(msg.joint_names)}"
        )
    point_ns = start_ns + np.array(
        [stamp_to_ns(p.time_from_start) for p in msg.points], dtype=np.int64
    )
    positions = np.stack([np.asarray(p.positions, dtype=np.float64)[index] for p in msg.points])
    order = np.argsort(point_ns, kind="stable")
    return TrajectoryCommand(point_ns[order], positions[order])


def evaluate_trajectory(
    point_ns: np.ndarray, positions: np.ndarray, t_ns: np.ndarray
) -> np.ndarray:
    """Targets (K, D) at times ``t_ns`` (K,) of a trajectory with points at ``point_ns`` (P,).

    Linear interpolation between points; before the first point the first point, after the last
    point the last one is held (what joint_trajectory_controller does at the end of a goal).
    """
    t = np.asarray(t_ns, dtype=np.int64)
    if len(point_ns) == 1:
        return np.repeat(positions[:1], len(t), axis=0)
    upper = np.clip(np.searchsorted(point_ns, t, side="right"), 1, len(point_ns) - 1)
    t0, t1 = point_ns[upper - 1], point_ns[upper]
    span = (t1 - t0).astype(np.float64)
    weight = np.divide((t - t0).astype(np.float64), span, out=np.ones(len(t)), where=span > 0)
    weight = np.clip(weight, 0.0, 1.0)[:, None]
    return positions[upper - 1] * (1.0 - weight) + positions[upper] * weight


class EpisodeMarker(NamedTuple):
    """The fields of one librobot_msgs/EpisodeEvent message."""

    event: int
    episode_index: int
    seed: int
    instruction: str
    success: bool
