"""Follow joint trajectories the way ros2_control's joint_trajectory_controller does on Jazzy.

ROS-free: the driver node feeds it the contents of trajectory_msgs/JointTrajectory messages.

Semantics (JTC, no blending):
- a new trajectory replaces the active one;
- a start time of 0 means "now" (the time the trajectory is received);
- points whose time is already in the past are skipped; a trajectory with every point in the past
  is rejected and the active one goes on;
- rejected too, as Jazzy's controller rejects them: times that are not strictly increasing, and a
  last point with a non-zero velocity (unless `allow_nonzero_velocity_at_trajectory_end`);
- from the state at reception the robot moves to the first point, then from point to point:
  cubic Hermite interpolation when velocities are given, linear otherwise;
- after the last point the last position is held.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Trajectory:
    """Knots in absolute time: times (N,), positions (N, D), velocities (N, D)."""

    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    cubic: bool

    @classmethod
    def through(cls, times: np.ndarray, positions: np.ndarray, velocities: np.ndarray | None = None
                ) -> Trajectory:
        """Knots as a message gives them: cubic when every point has velocities, else linear."""
        positions = np.asarray(positions, dtype=np.float64)
        cubic = velocities is not None and len(velocities) == len(positions)
        return cls(np.asarray(times, dtype=np.float64), positions,
                   np.asarray(velocities, dtype=np.float64) if cubic else np.zeros_like(positions),
                   cubic)

    def sample(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Position and velocity (D,) at absolute time t (held outside the knots)."""
        position, velocity = self.sample_many(np.array([t], dtype=np.float64))
        return position[0], velocity[0]

    def sample_many(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions and velocities (K, D) at absolute times t (K,): before the first knot the
        first position, after the last the last one, at rest."""
        t = np.asarray(t, dtype=np.float64)
        times = self.times
        if len(times) == 1:
            return np.repeat(self.positions, len(t), axis=0), np.zeros((len(t), self.positions.shape[1]))
        k = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2)  # segment
        h = (times[k + 1] - times[k])[:, None]
        s = np.clip((t[:, None] - times[k][:, None]) / h, 0.0, 1.0)
        p0, p1 = self.positions[k], self.positions[k + 1]
        outside = ((t <= times[0]) | (t >= times[-1]))[:, None]
        if not self.cubic:
            return p0 + s * (p1 - p0), np.where(outside, 0.0, (p1 - p0) / h)
        v0, v1 = self.velocities[k] * h, self.velocities[k + 1] * h
        # Cubic Hermite basis on s in [0, 1].
        h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
        d00, d10, d01, d11 = 6 * s**2 - 6 * s, 3 * s**2 - 4 * s + 1, -6 * s**2 + 6 * s, 3 * s**2 - 2 * s
        position = h00 * p0 + h10 * v0 + h01 * p1 + h11 * v1
        velocity = (d00 * p0 + d10 * v0 + d01 * p1 + d11 * v1) / h
        return position, np.where(outside, 0.0, velocity)


def chunk_velocities(positions: np.ndarray, period: float) -> np.ndarray:
    """(T, D) positions sampled every `period` s -> (T, D) velocities for cubic interpolation:
    central differences, one-sided at the start, and zero at the last point -- the chunk ends at
    rest there, and Jazzy's joint_trajectory_controller rejects a trajectory whose last point has
    a non-zero velocity (unless allow_nonzero_velocity_at_trajectory_end is set)."""
    if len(positions) < 2:
        return np.zeros_like(positions)
    velocities = np.gradient(positions, period, axis=0)
    velocities[-1] = 0.0
    return velocities


class TrajectoryRejected(ValueError):
    """A trajectory the joint_trajectory_controller would refuse; the message says why."""


class TrajectoryFollower:
    """Holds the active trajectory and answers "where should the joints be now?"."""

    def __init__(self, initial_position: np.ndarray, allow_nonzero_velocity_at_trajectory_end: bool = False):
        self._hold = np.asarray(initial_position, dtype=np.float64).copy()
        self._active: Trajectory | None = None
        self.allow_nonzero_velocity_at_trajectory_end = allow_nonzero_velocity_at_trajectory_end

    @property
    def active(self) -> Trajectory | None:
        return self._active

    def hold(self, position: np.ndarray) -> None:
        """Drop the active trajectory and hold `position`."""
        self._active = None
        self._hold = np.asarray(position, dtype=np.float64).copy()

    def set_trajectory(
        self,
        now: float,
        start_time: float,
        time_from_start: np.ndarray,
        positions: np.ndarray,
        velocities: np.ndarray | None = None,
    ) -> int:
        """Replace the active trajectory; returns how many points were kept (0: rejected).

        now, start_time: seconds on the same clock (start_time 0 means now);
        time_from_start (N,) seconds; positions (N, D); velocities (N, D) or None.
        """
        tfs = np.asarray(time_from_start, dtype=np.float64)
        positions = np.asarray(positions, dtype=np.float64)
        if positions.ndim != 2 or positions.shape[0] != tfs.shape[0]:
            raise ValueError(
                f"trajectory with {tfs.shape[0]} times and positions of shape {positions.shape}"
            )
        if positions.shape[1] != self._hold.shape[0]:
            raise ValueError(
                f"trajectory for {positions.shape[1]} joints, expected {self._hold.shape[0]}"
            )
        if np.any(np.diff(tfs) <= 0):
            raise TrajectoryRejected(f"time_from_start must be strictly increasing, got {tfs.tolist()}")
        given = Trajectory.through(tfs, positions, velocities)
        cubic, velocities = given.cubic, given.velocities
        if np.any(velocities[-1] != 0) and not self.allow_nonzero_velocity_at_trajectory_end:
            raise TrajectoryRejected(
                f"the last point has velocities {velocities[-1].tolist()}: a trajectory must end "
                "at rest (allow_nonzero_velocity_at_trajectory_end is false)"
            )
        start = now if start_time == 0.0 else start_time
        times = start + tfs
        future = times > now
        if not np.any(future):
            return 0
        current, current_velocity = self.sample(now)
        self._active = Trajectory(
            times=np.concatenate([[now], times[future]]),
            positions=np.vstack([current, positions[future]]),
            velocities=np.vstack([current_velocity if cubic else np.zeros_like(current), velocities[future]]),
            cubic=cubic,
        )
        return int(future.sum())

    def sample(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Desired position and velocity (D,) at time `now`."""
        if self._active is None:
            return self._hold.copy(), np.zeros_like(self._hold)
        return self._active.sample(now)

    def positions_at(self, times: np.ndarray) -> np.ndarray:
        """Desired positions (K, D) at times (K,), with the active trajectory as it is now."""
        times = np.asarray(times, dtype=np.float64)
        if self._active is None:
            return np.repeat(self._hold[None], len(times), axis=0)
        return self._active.sample_many(times)[0]

    def finished(self, now: float) -> bool:
        return self._active is None or now >= self._active.times[-1]


class GroupFollowers:
    """Several joint_trajectory_controllers side by side: one follower per joint group, each
    taking the trajectories of its own group's joints, together answering for every joint.

    `groups` maps a group name to the indices of its joints in the whole robot's joint order;
    every joint in exactly one group. A robot with one group behaves as a single follower.
    """

    def __init__(self, groups: dict[str, np.ndarray], initial_position: np.ndarray):
        position = np.asarray(initial_position, dtype=np.float64)
        covered = np.sort(np.concatenate([np.asarray(i) for i in groups.values()]))
        if not np.array_equal(covered, np.arange(position.shape[0])):
            raise ValueError(f"groups {dict((k, list(v)) for k, v in groups.items())} must cover each "
                             f"of the {position.shape[0]} joints once")
        self._index = {name: np.asarray(index, dtype=np.intp) for name, index in groups.items()}
        self._followers = {name: TrajectoryFollower(position[index]) for name, index in self._index.items()}
        self._dof = position.shape[0]

    @classmethod
    def for_embodiment(cls, spec, initial_position: np.ndarray) -> GroupFollowers:
        """One follower per joint group of the embodiment `spec` (all its joints)."""
        return cls({g.name: spec.group_index(g) for g in spec.groups}, initial_position)

    @property
    def groups(self) -> list[str]:
        return list(self._index)

    def follower(self, group: str) -> TrajectoryFollower:
        try:
            return self._followers[group]
        except KeyError:
            raise KeyError(f"unknown joint group {group!r}; expected one of {self.groups}") from None

    def set_trajectory(self, group: str, now: float, start_time: float, time_from_start: np.ndarray,
                       positions: np.ndarray, velocities: np.ndarray | None = None) -> int:
        """`group`'s new trajectory (positions (N, its joints)); the other groups go on."""
        return self.follower(group).set_trajectory(now, start_time, time_from_start, positions, velocities)

    def hold(self, position: np.ndarray) -> None:
        """Every group drops its trajectory and holds its part of `position` (whole robot)."""
        for name, index in self._index.items():
            self._followers[name].hold(np.asarray(position)[index])

    def sample(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        position, velocity = np.empty(self._dof), np.empty(self._dof)
        for name, index in self._index.items():
            position[index], velocity[index] = self._followers[name].sample(now)
        return position, velocity

    def positions_at(self, times: np.ndarray) -> np.ndarray:
        times = np.asarray(times, dtype=np.float64)
        positions = np.empty((len(times), self._dof))
        for name, index in self._index.items():
            positions[:, index] = self._followers[name].positions_at(times)
        return positions

    def finished(self, now: float) -> bool:
        return all(f.finished(now) for f in self._followers.values())
