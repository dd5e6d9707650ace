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
    episodes (the robot holds still); first_pause_s: before the first episode, 0 by default: a
    policy already drives the robot then, and its reset would start the episode moving, unlike
    every later one and unlike the demonstrations (a wheel loader's policy failed its first
    episode that way). A recording sets it: its expert waits for the START, and the pause lets
    every subscriber match every publisher first."""

    episodes: int
    first_seed: int = 0
    time_limit_s: float = 15.0
    success_hold_s: float = 0.5
    pause_s: float = 1.0
    first_pause_s: float = 0.0

    def __post_init__(self) -> None:
        if self.episodes < -1:
            raise ValueError(f"episodes must be >= -1 (-1: until stopped), got {self.episodes}")
        if self.time_limit_s <= 0 or self.success_hold_s < 0 or self.pause_s < 0 or self.first_pause_s < 0:
            raise ValueError(
                f"bad episode timing: time_limit_s={self.time_limit_s}, "
                f"success_hold_s={self.success_hold_s}, pause_s={self.pause_s}, "
                f"first_pause_s={self.first_pause_s}"
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
            pause = self.schedule.pause_s if self.index >= 0 else self.schedule.first_pause_s
            if now - self._phase_since < pause:
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


class KeyboardEpisodes:
    """Episode boundaries from the keyboard, for demonstrations on hardware (ROS-free).

    One line per key press: Enter starts an episode, and ends the running one as a success;
    `f` ends it as a failure; `q` (or the end of input) ends the running one as a failure and
    stops. Recording also stops after `episodes` episodes (0: no limit)."""

    HELP = "Enter: start an episode / end it as a success   f: end it as a failure   q: stop"

    def __init__(self, episodes: int = 0):
        if episodes < 0:
            raise ValueError(f"episodes = {episodes}: expected 0 (no limit) or more")
        self.episodes = episodes
        self.index = -1
        self.running = False
        self.stopped = False

    @property
    def done(self) -> bool:
        return self.stopped or (self.episodes > 0 and self.index + 1 >= self.episodes and not self.running)

    def key(self, line: str | None) -> list[EpisodeEvent]:
        """Events for one line of input (None: the input ended). Unknown keys change nothing."""
        key = None if line is None else line.strip().lower()
        if key is None or key == "q":
            self.stopped = True
            return [self._end(False)] if self.running else []
        if key == "" and not self.running and not self.done:
            self.index += 1
            self.running = True
            return [EpisodeEvent("start", self.index, self.index)]
        if key in ("", "f") and self.running:
            return [self._end(key == "")]
        return []

    def _end(self, success: bool) -> EpisodeEvent:
        self.running = False
        return EpisodeEvent("end", self.index, self.index, success)
