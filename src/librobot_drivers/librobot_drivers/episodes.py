"""Episode bookkeeping for simulated robots: when to reset, when an episode ends, and how it went.

ROS-free. The driver node asks `update(now)` each control tick and publishes what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Phase(Enum):
    IDLE = "idle"  # before the first episode or between episodes
    RUNNING = "running"
    DONE = "done"  # all episodes finished


@dataclass(frozen=True)
class EpisodeEvent:
    kind: str  # "start" or "end"
    index: int
    seed: int
    success: bool = False


@dataclass(frozen=True)
class EpisodeSchedule:
    """episodes: how many (0 = run freely without episodes, -1 = episodes until stopped);
    first_seed: seed of episode 0;
    time_limit_s: an episode ends unsuccessful after this long; success_hold_s: it ends
    successful once the task has been solved continuously this long; pause_s: gap between
    episodes (the robot holds still)."""

    episodes: int
    first_seed: int = 0
    time_limit_s: float = 15.0
    success_hold_s: float = 0.5
    pause_s: float = 1.0

    def __post_init__(self) -> None:
        if self.episodes < -1:
            raise ValueError(f"episodes must be >= -1 (-1: until stopped), got {self.episodes}")
        if self.time_limit_s <= 0 or self.success_hold_s < 0 or self.pause_s < 0:
            raise ValueError(
                f"bad episode timing: time_limit_s={self.time_limit_s}, "
                f"success_hold_s={self.success_hold_s}, pause_s={self.pause_s}"
            )


class EpisodeManager:
    """State machine IDLE -> RUNNING -> IDLE ... -> DONE driven by `update(now, solved)`."""

    def __init__(self, schedule: EpisodeSchedule):
        self.schedule = schedule
        self.phase = Phase.DONE if schedule.episodes == 0 else Phase.IDLE
        self.index = -1
        self.results: list[bool] = []
        self._phase_since: float | None = None
        self._solved_since: float | None = None

    @property
    def seed(self) -> int:
        return self.schedule.first_seed + self.index

    def update(self, now: float, solved: bool) -> EpisodeEvent | None:
        """Advance with the current time (s) and whether the task is solved right now."""
        if self.phase is Phase.DONE:
            return None
        if self._phase_since is None:
            self._phase_since = now
        if self.phase is Phase.IDLE:
            if now - self._phase_since < self.schedule.pause_s:
                return None
            self.index += 1
            self.phase, self._phase_since, self._solved_since = Phase.RUNNING, now, None
            return EpisodeEvent("start", self.index, self.seed)
        # RUNNING
        if solved:
            self._solved_since = now if self._solved_since is None else self._solved_since
        else:
            self._solved_since = None
        success = self._solved_since is not None and now - self._solved_since >= self.schedule.success_hold_s
        if success or now - self._phase_since >= self.schedule.time_limit_s:
            self.results.append(success)
            finished = 0 < self.schedule.episodes <= len(self.results)
            self.phase = Phase.DONE if finished else Phase.IDLE
            self._phase_since = now
            return EpisodeEvent("end", self.index, self.seed, success)
        return None

    @property
    def success_rate(self) -> float:
        return sum(self.results) / len(self.results) if self.results else 0.0
