"""Turn a predicted action chunk into a stamped trajectory a controller can follow. ROS-free.

Action k of a chunk computed from an observation taken at t_obs is the joint target for
t_obs + k * period (the dataset convention: action[t] is the commanded position at sample t).
The trajectory keeps that timing: its start stamp is t_obs, time_from_start k * period, and the
points already in the past when it is published (inference latency) are dropped, so the robot
continues from where the chunk says it should be now instead of replaying stale targets.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from librobot_drivers.trajectory import chunk_velocities


@dataclass(frozen=True)
class ScheduledChunk:
    start_ns: int  # header.stamp of the trajectory (= observation stamp)
    time_from_start: np.ndarray  # (N,) seconds, N <= chunk length
    positions: np.ndarray  # (N, D)
    velocities: np.ndarray  # (N, D), for cubic interpolation
    dropped_points: int  # points already in the past at publish time


def schedule_chunk(
    actions: np.ndarray,
    observation_stamp_ns: int,
    now_ns: int,
    period_s: float,
    min_lead_s: float = 0.0,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
) -> ScheduledChunk | None:
    """Stamp a chunk (T, D); None when every point is already in the past.

    min_lead_s: points due sooner than this after `now` are dropped too (transport delay).
    lower/upper: joint limits (D,); targets are clamped into them.
    """
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim != 2 or len(actions) == 0:
        raise ValueError(f"action chunk must be (T, D) with T >= 1, got shape {actions.shape}")
    if not np.all(np.isfinite(actions)):
        raise ValueError("action chunk contains non-finite values")
    if lower is not None and upper is not None:
        actions = np.clip(actions, lower, upper)
    times = np.arange(len(actions)) * period_s
    velocities = chunk_velocities(actions, period_s)
    due_ns = observation_stamp_ns + np.round(times * 1e9).astype(np.int64)
    keep = due_ns > now_ns + int(min_lead_s * 1e9)
    if not np.any(keep):
        return None
    return ScheduledChunk(
        start_ns=observation_stamp_ns,
        time_from_start=times[keep],
        positions=actions[keep],
        velocities=velocities[keep],  # the last point is always kept: it ends at rest
        dropped_points=int((~keep).sum()),
    )


class LatencyWindow:
    """Recent latencies (ms) and their percentiles."""

    def __init__(self, size: int = 200):
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value_ms: float) -> None:
        self._values.append(value_ms)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self._values, q)) if self._values else 0.0

    @property
    def max(self) -> float:
        return max(self._values, default=0.0)

    def __len__(self) -> int:
        return len(self._values)
