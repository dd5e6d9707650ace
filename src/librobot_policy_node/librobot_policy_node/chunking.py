"""Turn predicted action chunks into the stamped trajectory a controller follows. ROS-free.

Action k of a chunk computed from an observation taken at t_obs is the joint target for
t_obs + k * period (the dataset convention: action[t] is the commanded position at sample t). The
chunk executor (librobot_models.execution: receding, temporal_ensemble, rtc) merges it with the
chunks before it, aligned by those times; what is published is the executor's plan from now on,
one point per control period, stamped now -- so the points already in the past (inference
latency) are never sent and the robot continues from where the plan has it now.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from librobot_drivers.trajectory import Trajectory, chunk_velocities
from librobot_models.execution import ChunkExecutor
from librobot_models.safety import SafetyFilter, UnsafeCommand

NS = 1e-9


@dataclass(frozen=True)
class ScheduledChunk:
    start_ns: int  # header.stamp of the trajectory (the time it was planned)
    time_from_start: np.ndarray  # (N,) seconds
    positions: np.ndarray  # (N, D)
    velocities: np.ndarray  # (N, D), for cubic interpolation; the last point at rest

    def sample(self, t_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Position and velocity (D,) it commands at `t_ns`, interpolated cubically as the
        controller does (held before the first point and after the last)."""
        times = self.start_ns * NS + self.time_from_start
        return Trajectory(times, self.positions, self.velocities, cubic=True).sample(t_ns * NS)


def schedule_chunk(
    executor: ChunkExecutor,
    actions: np.ndarray,
    observation_stamp_ns: int,
    now_ns: int,
    min_lead_s: float = 0.0,
    safety: SafetyFilter | None = None,
    measured: np.ndarray | None = None,
    velocity: np.ndarray | None = None,
) -> ScheduledChunk | None:
    """Add a chunk (T, D) to `executor` and return the trajectory to publish at `now_ns`; None
    when the chunk ended before it arrived, or every point of the plan is due sooner than
    `min_lead_s` (the transport delay).

    With `safety` the plan passes the safety layer, starting from `measured` (D,) at the commanded
    `velocity` (D,) (the trajectory in force now; None: at rest); UnsafeCommand
    (a ValueError) when it refuses it, and the executor forgets its chunks. ValueError too for a malformed or non-finite chunk (nothing
    is added then).
    """
    now_s = now_ns * NS
    executor.add(actions, observation_stamp_ns * NS, now_s)
    if executor.chunks[-1].end_s <= now_s:
        return None  # inference took longer than the whole chunk
    times, targets = executor.plan(now_s)
    keep = times > now_s + min_lead_s
    if not np.any(keep):
        return None
    times, targets = times[keep], targets[keep]
    if safety is not None:
        try:
            targets = safety.filter(times, targets, measured, now_s, velocity)
        except UnsafeCommand:
            executor.reset()  # a refused plan never ran: the next chunk starts afresh, not from it
            raise
    return ScheduledChunk(
        start_ns=now_ns,
        time_from_start=times - now_s,
        positions=targets,
        velocities=chunk_velocities(targets, executor.period),
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
