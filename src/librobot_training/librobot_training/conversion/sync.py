"""Streams, episodes and the sampling grid: the messages of a topic as sorted arrays, episodes
split at EpisodeEvent markers, and the as-of sampling of every stream on a fixed-rate grid
(never a future sample; steps where a stream is too old are dropped and counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from librobot_training.conversion.base import (
    ConversionError,
    EVENT_END,
    EVENT_START,
    INT64_MAX,
    INT64_MIN,
    JOINT_STREAM,
)
from librobot_training.conversion.messages import EpisodeMarker, GroupedCommand


@dataclass
class Stream:
    """The messages of one topic, sorted by sync time (stable: ties keep bag order).

    ``time_ns``: (N,) int64 time used for synchronisation (header stamp or receive time);
    ``header_ns``: (N,) int64 raw header stamp (-1 for unstamped types); ``receive_ns``: (N,) int64
    bag log time; ``items``: per-message payload, a list or an array with leading dimension N.
    """

    topic: str
    time_ns: np.ndarray
    header_ns: np.ndarray
    receive_ns: np.ndarray
    items: Any

    def __len__(self) -> int:
        return len(self.time_ns)

    def median_period_ns(self) -> int:
        """Median spacing of distinct message times (0 with fewer than two)."""
        steps = np.diff(self.time_ns)
        steps = steps[steps > 0]
        return int(np.median(steps)) if len(steps) else 0


class StreamBuilder:
    """Collects one topic's messages while the bag streams, then sorts them into a Stream."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.rows: list[tuple[int, int, int]] = []
        self.items: list[Any] = []

    def add(self, time_ns: int, header_ns: int, receive_ns: int, item: Any) -> None:
        self.rows.append((time_ns, header_ns, receive_ns))
        self.items.append(item)

    def build(self, stack: bool = False) -> Stream:
        rows = np.array(self.rows, dtype=np.int64).reshape(-1, 3)
        order = np.argsort(rows[:, 0], kind="stable")
        items: Any = [self.items[i] for i in order]
        if stack:
            items = np.stack(items) if items else np.zeros((0,))
        return Stream(self.topic, rows[order, 0], rows[order, 1], rows[order, 2], items)


@dataclass
class Recording:
    """What one bag contributes: synchronisable streams plus bag-level facts.

    ``joint_states.items``: (N, 3, D) float64 position/velocity/effort; ``cameras[name].items``:
    undecoded Image/CompressedImage messages; ``command.items``: TrajectoryCommand;
    ``instruction.items``: str; ``events.items``: EpisodeMarker. ``truncation``: None for a bag
    its recorder closed, else one line saying what of the bag could not be read.
    """

    path: Path
    joint_states: Stream
    cameras: dict[str, Stream]
    command: Stream | None
    instruction: Stream | None
    events: Stream | None
    message_count: int
    bytes_read: int
    truncation: str | None = None

    def sensors(self) -> dict[str, Stream]:
        """Streams that must be fresh at every kept sample: joint states, then cameras."""
        return {JOINT_STREAM: self.joint_states, **self.cameras}

    def complete_until_ns(self, with_command: bool) -> int:
        """The latest time up to which every sampled stream is complete in this recording.

        INT64_MAX for a bag its recorder closed. For a truncated bag, the earliest of the last
        message times of the sensors (and of the command stream when ``with_command``): a topic's
        messages are recorded in the order they were sent, so all of a stream's messages up to
        its last one read are present, while one stamped later than another stream's last
        message may have been lost with the end of the bag.
        """
        if self.truncation is None:
            return INT64_MAX
        streams = list(self.sensors().values())
        if with_command and self.command is not None:
            streams.append(self.command)
        return min((int(s.time_ns[-1]) for s in streams if len(s)), default=INT64_MAX)


@dataclass(frozen=True)
class EpisodeWindow:
    """One episode's time span [start_ns, end_ns] (sync clock, inclusive) and its END outcome."""

    start_ns: int = INT64_MIN
    end_ns: int = INT64_MAX
    source_index: int | None = None
    success: int = -1
    instruction: str = ""
    seed: int | None = None


def split_episodes(events: Stream | None) -> list[EpisodeWindow]:
    """Episode windows from START/END markers (sorted by time); no markers: one unbounded window.

    A START while an episode is open ends that one (success unknown); an END before any START
    closes an episode that began before the recording (later unmatched ENDs are ignored); a START
    never ended runs to the end of the bag.
    """
    if events is None or len(events) == 0:
        return [EpisodeWindow()]
    windows: list[EpisodeWindow] = []
    open_start: tuple[int, EpisodeMarker] | None = None
    for t, marker in zip(events.time_ns.tolist(), events.items):
        if marker.event == EVENT_START:
            if open_start is not None:
                windows.append(_window(open_start, t, None))
            open_start = (t, marker)
        elif marker.event == EVENT_END:
            if open_start is not None:
                windows.append(_window(open_start, t, marker))
            elif not windows:
                windows.append(_window((INT64_MIN, marker), t, marker))
            open_start = None
    if open_start is not None:
        windows.append(_window(open_start, INT64_MAX, None))
    return windows


def _window(
    start: tuple[int, EpisodeMarker], end_ns: int, end: EpisodeMarker | None
) -> EpisodeWindow:
    start_ns, first = start
    return EpisodeWindow(
        start_ns=start_ns,
        end_ns=end_ns,
        source_index=int(first.episode_index),
        success=-1 if end is None else int(bool(end.success)),
        instruction=first.instruction or (end.instruction if end is not None else ""),
        seed=int(first.seed),
    )


def make_grid(start_ns: int, end_ns: int, rate_hz: float) -> np.ndarray:
    """Sample times (T,) int64 ns: start_ns + k / rate_hz for every k with a time <= end_ns."""
    if end_ns < start_ns:
        return np.zeros(0, dtype=np.int64)
    count = int((end_ns - start_ns) * rate_hz // 1e9) + 1
    grid = start_ns + np.round(np.arange(count) * (1e9 / rate_hz)).astype(np.int64)
    return grid[grid <= end_ns]


def as_of(time_ns: np.ndarray, t_ns: np.ndarray) -> np.ndarray:
    """Index (K,) of the latest entry of sorted ``time_ns`` at or before each ``t_ns`` (or -1)."""
    return np.searchsorted(time_ns, t_ns, side="right") - 1


def default_max_age_ns(stream: Stream, rate_hz: float) -> int:
    """Two grid periods or two of the stream's own periods, whichever is longer."""
    return max(int(round(2e9 / rate_hz)), 2 * stream.median_period_ns())


@dataclass
class EpisodePlan:
    """Which message of each stream feeds each kept grid step.

    ``sample_ns``: (T,) int64 kept grid times; ``index[name]``: (T,) indices into that stream
    (sensor names and, when actions come from commands, ``"command"``); ``dropped[name]``: grid
    steps skipped because that sensor's newest message was too old; ``grid_steps``: all steps.
    """

    sample_ns: np.ndarray
    index: dict[str, np.ndarray]
    dropped: dict[str, int]
    grid_steps: int


def _first_and_last_in(stream: Stream, window: EpisodeWindow) -> tuple[int, int] | None:
    lo = np.searchsorted(stream.time_ns, window.start_ns, side="left")
    hi = np.searchsorted(stream.time_ns, window.end_ns, side="right")
    if hi <= lo:
        return None
    return int(stream.time_ns[lo]), int(stream.time_ns[hi - 1])


def plan_episode(
    sensors: Mapping[str, Stream],
    window: EpisodeWindow,
    rate_hz: float,
    max_age_ns: Mapping[str, int],
    command: Stream | None = None,
) -> EpisodePlan:
    """Sample ``sensors`` (and ``command``, if given) on a ``rate_hz`` grid inside ``window``.

    The grid starts at the first time every stream has a message in the window and ends at the
    newest sensor message in it. Commands have no maximum age (the controller holds the last
    target). Raises ConversionError when a stream is absent from the window or no step is complete.
    """
    required = dict(sensors) if command is None else {**sensors, "command": command}
    spans = {}
    for name, stream in required.items():
        span = _first_and_last_in(stream, window)
        if span is None:
            hint = "; try --action-source measured" if name == "command" else ""
            raise ConversionError(
                f"no complete sample: stream {name!r} ({stream.topic}) has no messages "
                f"in the episode{hint}"
            )
        spans[name] = span
    start = max(window.start_ns, *(first for first, _ in spans.values()))
    end = min(window.end_ns, max(spans[name][1] for name in sensors))
    grid = make_grid(start, end, rate_hz)
    if len(grid) == 0:
        raise ConversionError(
            f"no complete sample: the streams never overlap (all present from {start} ns, "
            f"sensors end at {end} ns)"
        )
    keep = np.ones(len(grid), dtype=bool)
    index, dropped = {}, {}
    for name, stream in required.items():
        index[name] = as_of(stream.time_ns, grid)
        if name in sensors:
            fresh = grid - stream.time_ns[index[name]] <= max_age_ns[name]
            dropped[name] = int(np.count_nonzero(~fresh))
            keep &= fresh
    if not keep.any():
        raise ConversionError(
            f"no complete sample: {len(grid)} grid steps, all dropped "
            f"(dropped per stream: {dropped}); "
            "check the topics' rates or raise --max-age"
        )
    return EpisodePlan(grid[keep], {k: v[keep] for k, v in index.items()}, dropped, len(grid))


def measured_actions(qpos: np.ndarray) -> np.ndarray:
    """Action (T, D) without a command topic: the measured joint positions at each sample (a copy
    of ``qpos``), the best estimate of the setpoint at that time. Same time convention as
    command_actions: action[t] is the target for time t, not for the next sample."""
    return np.array(qpos, copy=True)


def command_actions(command: Stream, index: np.ndarray, sample_ns: np.ndarray) -> np.ndarray:
    """Action (T, D): the trajectory in force at each sample (``index`` into ``command``)
    evaluated at that sample's time, i.e. the setpoint for time t."""
    first = command.items[int(index[0])]
    actions = np.empty((len(index), first.targets_at(sample_ns[:1]).shape[1]), dtype=np.float64)
    for i in np.unique(index):
        rows = index == i
        actions[rows] = command.items[int(i)].targets_at(sample_ns[rows])
    return actions


def merge_group_commands(streams: Mapping[str, Stream], columns: Mapping[str, np.ndarray],
                         dof: int) -> Stream:
    """One command stream from the streams of several joint groups' controllers: at each message
    of any group, a GroupedCommand of every group's latest command. It starts once every group
    has been commanded (before that some joints have no setpoint). ``columns[name]``: that
    group's joints in embodiment order; the streams' topics are joined in the merged name."""
    names = list(streams)
    rows = sorted((int(streams[name].time_ns[i]), k, i)
                  for k, name in enumerate(names) for i in range(len(streams[name])))
    latest: list = [None] * len(names)
    time_ns, header_ns, receive_ns, items = [], [], [], []
    for t, k, i in rows:
        stream = streams[names[k]]
        latest[k] = stream.items[i]
        if any(item is None for item in latest):
            continue
        time_ns.append(t)
        header_ns.append(int(stream.header_ns[i]))
        receive_ns.append(int(stream.receive_ns[i]))
        items.append(GroupedCommand(tuple(np.asarray(columns[n]) for n in names), tuple(latest), dof))
    return Stream(
        topic=" + ".join(streams[n].topic for n in names),
        time_ns=np.array(time_ns, dtype=np.int64),
        header_ns=np.array(header_ns, dtype=np.int64),
        receive_ns=np.array(receive_ns, dtype=np.int64),
        items=items,
    )
