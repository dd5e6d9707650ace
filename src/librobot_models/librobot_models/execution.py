"""Chunk execution: which joint target is in force at time t, given the chunks predicted so far.

A policy predicts a chunk of actions from an observation taken at `start_s`: action k is the
target for `start_s + k * period`. The chunk arrives `latency` later, while the robot is still
executing earlier chunks. An executor turns that stream of overlapping chunks into one target
per instant, in continuous time (chunks are aligned by their timestamps, not by call count), so
the ROS node, `evaluate` and the tests drive it alike:

    executor = make_executor("temporal_ensemble", period=0.1)
    executor.add(chunk, start_s=t_obs, now_s=t_arrival)
    times, targets = executor.plan(now_s, steps)     # the targets for the next control periods

Modes:
- `receding`: the newest chunk replaces the others (what a bare joint_trajectory_controller does
  with each new trajectory), with a linear hand-over of `blend_s` (0.2 s) from the target in
  force when it arrived, so that a boundary is not a jump.
- `temporal_ensemble` (ACT): every chunk that covers t votes, with weights exp(-m * i), i = 0 for
  the oldest (m = 0.01 by default: older predictions count slightly more), normalised.
- `rtc` (real-time chunking): the targets that ran during the inference delay stay those
  already committed by the previous chunk; over the rest of the overlap the new chunk takes over,
  the old chunk's weight falling from 1 to 0 along a smoothstep. For a flow-matching or diffusion
  (DDPM/DDIM, EDM) policy the new chunk is also sampled to agree with the plan (RTC's guided
  inpainting, heads.guidance): `inpainting(start_s, steps)` gives the targets and weights to pass to Policy.infer, 1 for the
  d steps that run before the chunk can arrive, then RTC's exponentially decaying soft mask over
  the rest of the overlap, 0 beyond it. Every executor measures the delay d = ceil(latency /
  period) online (`delay_steps`; the node reports it on /diagnostics).

Outside every chunk the last target is held.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass

import numpy as np

MODES = ("receding", "temporal_ensemble", "rtc")


@dataclass(frozen=True)
class TimedChunk:
    """actions (T, D): target k at start_s + k * period; arrived at arrival_s."""

    actions: np.ndarray
    start_s: float
    arrival_s: float
    period: float

    @property
    def end_s(self) -> float:
        return self.start_s + (len(self.actions) - 1) * self.period

    def covers(self, t: np.ndarray) -> np.ndarray:
        return (t >= self.start_s) & (t <= self.end_s + 1e-9)

    def at(self, t: np.ndarray) -> np.ndarray:
        """Targets (K, D) at times t (K,): linear between the actions, held outside."""
        position = np.clip((np.asarray(t, dtype=np.float64) - self.start_s) / self.period,
                           0.0, len(self.actions) - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, len(self.actions) - 1)
        w = (position - low)[:, None]
        return self.actions[low] * (1.0 - w) + self.actions[high] * w


class ChunkExecutor(ABC):
    """The targets in force given the chunks added so far (see the module docstring)."""

    mode: str

    def __init__(self, period: float, latency_window: int = 20):
        if not period > 0:
            raise ValueError(f"period = {period}: expected seconds > 0")
        self.period = period
        self._latencies: deque[float] = deque(maxlen=latency_window)
        self.reset()

    def reset(self) -> None:
        """Forget every chunk (episode start, model swap); the latency estimate stays."""
        self._chunks: list[TimedChunk] = []

    @property
    def chunks(self) -> list[TimedChunk]:
        return list(self._chunks)

    @property
    def delay_steps(self) -> int:
        """d = ceil(latency / period) over the recent chunks (their largest latency)."""
        if not self._latencies:
            return 0
        return math.ceil(max(self._latencies) / self.period - 1e-9)

    def add(self, actions: np.ndarray, start_s: float, now_s: float) -> None:
        """A chunk predicted from the observation at start_s, arriving at now_s (>= start_s)."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or len(actions) == 0:
            raise ValueError(f"action chunk of shape {actions.shape}: expected (T, D) with T >= 1")
        if not np.all(np.isfinite(actions)):
            raise ValueError("action chunk contains non-finite values")
        if self._chunks and actions.shape[1] != self._chunks[-1].actions.shape[1]:
            raise ValueError(f"chunk of {actions.shape[1]} joints after chunks of "
                             f"{self._chunks[-1].actions.shape[1]}")
        if now_s < start_s:
            raise ValueError(f"chunk arriving at {now_s} s before its observation at {start_s} s")
        self._latencies.append(now_s - start_s)
        self._add(TimedChunk(actions, float(start_s), float(now_s), self.period))

    def target(self, t: float) -> np.ndarray | None:
        """The target (D,) in force at t; None before the first chunk."""
        if not self._chunks:
            return None
        return self.targets(np.array([t], dtype=np.float64))[0]

    def plan(self, now_s: float, steps: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """Times (N,) and targets (N, D) from now on, one per control period: `steps` of them, or
        up to the end of the newest chunk. None before the first chunk."""
        if not self._chunks:
            return None
        if steps is None:
            steps = max(1, math.ceil((self._chunks[-1].end_s - now_s) / self.period - 1e-9))
        times = now_s + self.period * np.arange(1, steps + 1)
        return times, self.targets(times)

    def inpainting(self, start_s: float, steps: int) -> tuple[np.ndarray, np.ndarray] | None:
        """What a chunk predicted from the observation at start_s (steps actions) should agree
        with: (targets (steps, D), weights (steps,)); None when this mode does not guide."""
        return None

    @abstractmethod
    def _add(self, chunk: TimedChunk) -> None: ...

    @abstractmethod
    def targets(self, t: np.ndarray) -> np.ndarray:
        """Targets (K, D) at times t (K,); needs at least one chunk."""


class Receding(ChunkExecutor):
    mode = "receding"

    def __init__(self, period: float, blend_s: float = 0.2, **kwargs):
        if blend_s < 0:
            raise ValueError(f"blend_s = {blend_s}: expected seconds >= 0")
        self.blend_s = blend_s
        super().__init__(period, **kwargs)

    def reset(self) -> None:
        super().reset()
        self._handover: tuple[float, np.ndarray] | None = None  # (arrival, target then)

    def _add(self, chunk: TimedChunk) -> None:
        self._handover = (chunk.arrival_s, self.targets(np.array([chunk.arrival_s]))[0]) \
            if self._chunks else None
        self._chunks = [chunk]

    def targets(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        newest = self._chunks[-1].at(t)
        if self._handover is None or self.blend_s <= 0:
            return newest
        arrival, previous = self._handover
        w = np.clip((t - arrival) / self.blend_s, 0.0, 1.0)[:, None]  # 0: the old target, 1: new
        return previous * (1.0 - w) + newest * w


class TemporalEnsemble(ChunkExecutor):
    mode = "temporal_ensemble"

    def __init__(self, period: float, m: float = 0.01, **kwargs):
        if m < 0:
            raise ValueError(f"temporal ensemble coefficient m = {m}: expected >= 0")
        self.m = m
        super().__init__(period, **kwargs)

    def _add(self, chunk: TimedChunk) -> None:
        # chunks that ended before this one arrived can no longer vote
        self._chunks = [c for c in self._chunks if c.end_s >= chunk.arrival_s] + [chunk]

    def targets(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        total = np.zeros((len(t), self._chunks[-1].actions.shape[1]))
        weight = np.zeros((len(t), 1))
        for i, chunk in enumerate(self._chunks):  # oldest first: i = 0
            w = math.exp(-self.m * i) * chunk.covers(t)[:, None]
            total += w * chunk.at(t)
            weight += w
        held = self._chunks[-1].at(t)  # after every chunk's end: the newest one's last target
        return np.where(weight > 0, total / np.maximum(weight, 1e-12), held)


class RealTimeChunking(ChunkExecutor):
    mode = "rtc"

    def reset(self) -> None:
        super().reset()
        self._previous: RealTimeChunking._Frozen | None = None

    @dataclass(frozen=True)
    class _Frozen:
        """What ran before the newest chunk: the previous executor state, from arrival to end."""

        arrival_s: float
        end_s: float
        times: np.ndarray
        targets: np.ndarray

    def _add(self, chunk: TimedChunk) -> None:
        if self._chunks:
            end = max(self._chunks[-1].end_s, chunk.arrival_s)
            times = np.arange(chunk.arrival_s, end + self.period, self.period)
            self._previous = self._Frozen(chunk.arrival_s, end, times, self.targets(times))
        self._chunks = [chunk]

    def _old_weight(self, t: np.ndarray) -> np.ndarray:
        """The old chunk's weight: 1 up to arrival (what ran during the inference delay stays
        committed), then a smoothstep down to 0 at the end of the previous chunk -- applied to
        the actions directly, RTC's exponential soft mask would drop half the way in the first
        period, so the blend uses a curve with zero slope at both ends."""
        previous = self._previous
        span = max(previous.end_s - previous.arrival_s, self.period)
        c = np.clip((previous.end_s - t) / span, 0.0, 1.0)  # 1 at arrival, 0 at the old end
        return c * c * (3.0 - 2.0 * c)

    def inpainting(self, start_s: float, steps: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The plan in force at the new chunk's times, weighted by RTC's soft mask: 1 for the
        first d steps (they run before the chunk arrives), then c (e^c - 1) / (e - 1) with c
        falling linearly to 0 at the plan's end, 0 after it. None before the first chunk."""
        if not self._chunks:
            return None
        times = start_s + self.period * np.arange(steps)
        overlap = int(np.clip(np.floor((self._chunks[-1].end_s - start_s) / self.period + 1e-9) + 1, 0, steps))
        d = min(self.delay_steps, overlap)
        weights = np.zeros(steps)
        weights[:d] = 1.0
        if overlap > d:
            c = (overlap - np.arange(d, overlap)) / (overlap - d + 1)
            weights[d:overlap] = c * np.expm1(c) / math.expm1(1.0)
        return self.targets(times), weights

    def targets(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        newest = self._chunks[-1].at(t)
        if self._previous is None:
            return newest
        previous = self._previous
        old = np.stack([np.interp(t, previous.times, previous.targets[:, j])
                        for j in range(previous.targets.shape[1])], axis=1)
        w = self._old_weight(t)[:, None]
        return old * w + newest * (1.0 - w)


def make_executor(mode: str, period: float, **options) -> ChunkExecutor:
    """An executor by mode name (MODES); unknown names are an error listing the choices."""
    classes = {"receding": Receding, "temporal_ensemble": TemporalEnsemble, "rtc": RealTimeChunking}
    if mode not in classes:
        raise ValueError(f"execution mode {mode!r}: expected one of {', '.join(MODES)}")
    return classes[mode](period, **options)
