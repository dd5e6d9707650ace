"""Convert rosbag2 recordings (sqlite3 or MCAP) into ALOHA/ACT-style HDF5 episodes.

    python -m librobot_training.bag_to_hdf5 BAG [BAG ...] --output DIR [--embodiment so100] [--rate HZ]
        [--camera NAME[=TOPIC] ...] [--time-source header|receive] [--max-age S]
        [--action-source auto|command|next_state] [--compression none|lzf|gzip] [--sim]
        [--overwrite] [--no-progress]

What it does, in order:

1. read each bag once (``rosbags``; message types come from the definitions stored in the bag, so
   ``librobot_msgs``/``control_msgs`` types need no ROS install) and keep, per topic, the stamps and
   the small payloads; image messages are kept undecoded (a zero-copy view of the raw bytes);
2. split the bag into episodes at ``librobot_msgs/msg/EpisodeEvent`` START/END messages (no events:
   the whole bag is one episode);
3. sample every episode on a fixed grid at ``rate`` Hz that starts when every required stream has a
   sample: for each grid time ``t`` and stream, the latest message with time <= t (never a future
   one); a grid step where a stream's newest message is older than its maximum age is skipped and
   counted as dropped for that stream;
4. the action at ``t`` is the commanded JointTrajectory (as-of ``t``) evaluated at ``t``, or the
   next joint state when there is no command topic;
5. decode only the selected images and write ``episode_NNNNNN.hdf5`` files atomically (temporary
   name, then ``os.replace``) plus ``dataset.json``.

Layout of one episode file (T frames, D joints, readable by plain h5py)::

    attrs: sim, embodiment, joint_names, camera_names, rate_hz, instruction, source_bag,
           episode_index, success (1, 0, -1 unknown), num_frames, time_source, action_source
    /observations/qpos, /observations/qvel, /observations/effort   (T, D) float32
    /observations/images/<cam>                                      (T, H, W, 3) uint8 RGB
    /action                                                         (T, D) float32
    /timestamps/sample_ns                                           (T,) int64 grid times
    /timestamps/joint_states/{header_ns,receive_ns}                 (T,) int64
    /timestamps/images/<cam>/{header_ns,receive_ns}                 (T,) int64
    /timestamps/action/{header_ns,receive_ns}                       (T,) int64, -1 if not applicable

All times are int64 nanoseconds on the bag's clock. Pure Python: no rclpy, no message packages.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import h5py
import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from librobot_drivers.embodiment import Embodiment, load_embodiment
from librobot_drivers.images import ImageDecodeError, decode_compressed, decode_image

__all__ = [
    "ConversionError",
    "ConversionOptions",
    "ConversionSummary",
    "EpisodePlan",
    "EpisodeWindow",
    "Recording",
    "Stream",
    "TrajectoryCommand",
    "as_of",
    "convert",
    "evaluate_trajectory",
    "message_to_rgb",
    "main",
    "make_grid",
    "next_state_actions",
    "plan_episode",
    "read_bag",
    "split_episodes",
]

JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
TRAJECTORY_TYPE = "trajectory_msgs/msg/JointTrajectory"
STRING_TYPE = "std_msgs/msg/String"
EPISODE_EVENT_TYPE = "librobot_msgs/msg/EpisodeEvent"
EVENT_START, EVENT_END = 0, 1

TIME_SOURCES = ("header", "receive")
ACTION_SOURCES = ("auto", "command", "next_state")
COMPRESSIONS = ("none", "lzf", "gzip")
JOINT_STREAM = "joint_states"
_RESERVED_CAMERA_NAMES = (JOINT_STREAM, "command", "action")
_NO_TIME = -1
_INT64_MIN = int(np.iinfo(np.int64).min)
_INT64_MAX = int(np.iinfo(np.int64).max)


class ConversionError(Exception):
    """A user-facing conversion failure; ``str(err)`` is one line that says what to fix."""


_STOP_REQUESTED = threading.Event()  # set by main()'s SIGINT/SIGTERM handler


def _check_stop() -> None:
    """Raise KeyboardInterrupt at a safe point once main() received SIGINT or SIGTERM."""
    if _STOP_REQUESTED.is_set():
        raise KeyboardInterrupt


# --------------------------------------------------------------------------------------------
# Pure message conversions
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Streams, episodes and the sampling grid
# --------------------------------------------------------------------------------------------
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


class _StreamBuilder:
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
    ``instruction.items``: str; ``events.items``: EpisodeMarker.
    """

    path: Path
    joint_states: Stream
    cameras: dict[str, Stream]
    command: Stream | None
    instruction: Stream | None
    events: Stream | None
    message_count: int
    bytes_read: int

    def sensors(self) -> dict[str, Stream]:
        """Streams that must be fresh at every kept sample: joint states, then cameras."""
        return {JOINT_STREAM: self.joint_states, **self.cameras}


@dataclass(frozen=True)
class EpisodeWindow:
    """One episode's time span [start_ns, end_ns] (sync clock, inclusive) and its END outcome."""

    start_ns: int = _INT64_MIN
    end_ns: int = _INT64_MAX
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
                windows.append(_window((_INT64_MIN, marker), t, marker))
            open_start = None
    if open_start is not None:
        windows.append(_window(open_start, _INT64_MAX, None))
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
            hint = "; try --action-source next_state" if name == "command" else ""
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


def next_state_actions(qpos: np.ndarray) -> np.ndarray:
    """Action (T, D) = the next frame's joint positions; the last frame repeats its own."""
    return np.concatenate([qpos[1:], qpos[-1:]], axis=0)


def command_actions(command: Stream, index: np.ndarray, sample_ns: np.ndarray) -> np.ndarray:
    """Action (T, D): the trajectory in force at each sample (``index`` into ``command``) there."""
    first = command.items[int(index[0])]
    actions = np.empty((len(index), first.positions.shape[1]), dtype=np.float64)
    for i in np.unique(index):
        rows = index == i
        traj = command.items[int(i)]
        actions[rows] = evaluate_trajectory(traj.point_ns, traj.positions, sample_ns[rows])
    return actions


# --------------------------------------------------------------------------------------------
# Reading a bag
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TopicSelection:
    """Topics to read from one bag (cameras: name -> topic, raw or compressed)."""

    joint_states: str
    cameras: dict[str, str]
    command: str | None
    instruction: str | None
    events: str | None


def _topic_list(available: Mapping[str, str]) -> str:
    return (
        ", ".join(f"{t} ({available[t].rsplit('/', 1)[-1]})" for t in sorted(available)) or "none"
    )


def _require_topic(available: Mapping[str, str], topic: str, msgtype: str, role: str) -> str:
    if topic not in available:
        raise ConversionError(
            f"required topic {topic} ({role}) is missing; topics present: {_topic_list(available)}"
        )
    if available[topic] != msgtype:
        raise ConversionError(
            f"topic {topic} ({role}) has type {available[topic]}, expected {msgtype}"
        )
    return topic


def _optional_topic(available: Mapping[str, str], topic: str, msgtype: str) -> str | None:
    return topic if available.get(topic) == msgtype else None


def resolve_camera(
    available: Mapping[str, str], name: str, topic: str, required: bool
) -> str | None:
    """The topic to read for one camera: ``topic`` if recorded, else ``<topic>/compressed``.

    Returns None for an absent optional camera; raises ConversionError for an absent required one.
    """
    for candidate in (topic, f"{topic}/compressed"):
        msgtype = available.get(candidate)
        if msgtype in (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE):
            return candidate
        if msgtype is not None:
            raise ConversionError(
                f"camera {name!r}: topic {candidate} has type {msgtype}, expected {IMAGE_TYPE} "
                f"or {COMPRESSED_IMAGE_TYPE}"
            )
    if not required:
        return None
    raise ConversionError(
        f"required topic {topic} (camera {name!r}, or {topic}/compressed) is missing; "
        f"topics present: {_topic_list(available)}"
    )


def _spec_camera_topic(spec: Embodiment, name: str) -> str:
    try:
        return spec.camera(name).topic
    except KeyError as err:
        raise ConversionError(
            f"{err.args[0]}, or give its topic as --camera {name}=/topic"
        ) from None


def select_topics(
    spec: Embodiment,
    available: Mapping[str, str],
    cameras: Mapping[str, str | None] | None,
    action_source: str,
) -> TopicSelection:
    """Decide which topics to read, checking presence and types against the embodiment spec.

    ``available``: topic -> message type in the bag. ``cameras``: name -> topic override (None:
    the spec's topic); None selects every spec camera (optional ones only when present).
    """
    if cameras is None:
        wanted = [(c.name, c.topic, not c.optional) for c in spec.cameras]
    else:
        wanted = [
            (name, topic or _spec_camera_topic(spec, name), True) for name, topic in cameras.items()
        ]
    chosen = {}
    for name, topic, required in wanted:
        resolved = resolve_camera(available, name, topic, required)
        if resolved is not None:
            chosen[name] = resolved
    command = None
    if action_source == "command":
        command = _require_topic(available, spec.command_topic, TRAJECTORY_TYPE, "commands")
    elif action_source == "auto":
        command = _optional_topic(available, spec.command_topic, TRAJECTORY_TYPE)
    return TopicSelection(
        joint_states=_require_topic(
            available, spec.topic("joint_states"), JOINT_STATE_TYPE, "joint states"
        ),
        cameras=chosen,
        command=command,
        instruction=_optional_topic(available, spec.topics.get("instruction", ""), STRING_TYPE),
        events=_optional_topic(
            available, spec.topics.get("episode_events", ""), EPISODE_EVENT_TYPE
        ),
    )


def _check_bag_path(path: Path) -> None:
    if not path.exists():
        raise ConversionError(f"bag path {path} does not exist")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise ConversionError(f"{path} is not a rosbag2 bag (directory without metadata.yaml)")
    if path.is_file() and path.suffix not in (".mcap", ".db3"):
        raise ConversionError(
            f"{path} is not a rosbag2 bag (expected a bag directory, a .mcap or a .db3 file)"
        )


def _open_reader(path: Path) -> AnyReader:
    """An open AnyReader whose typestore has every type: the bag's own definitions first, ROS 2
    Jazzy's for connections stored without one."""
    default = get_typestore(Stores.ROS2_JAZZY)
    try:
        reader = AnyReader([path], default_typestore=default)
        reader.open()
    except Exception as err:  # rosbags/sqlite3/mcap raise many types for unreadable files
        raise ConversionError(f"cannot read it (corrupt or truncated?): {err}") from err
    known = reader.typestore.fielddefs
    missing = {k: v for k, v in default.fielddefs.items() if k not in known}
    if missing and any(c.msgtype not in known for c in reader.connections):
        reader.typestore.register(missing)
    return reader


def _iter_messages(reader: AnyReader, connections: list) -> Iterator[tuple[Any, int, bytes]]:
    """reader.messages(); storage failures (truncated chunk, malformed db) -> ConversionError."""
    messages = reader.messages(connections=connections)
    while True:
        try:
            item = next(messages)
        except StopIteration:
            return
        except Exception as err:  # same reason as in _open_reader
            raise ConversionError(f"corrupt or truncated: {type(err).__name__}: {err}") from err
        yield item


class _BagParser:
    """Turns each deserialized message of a selected topic into a row of its stream."""

    def __init__(self, spec: Embodiment, selection: TopicSelection, time_source: str) -> None:
        self.spec = spec
        self.selection = selection
        self.use_header = time_source == "header"
        self._indices: dict[tuple[str, ...], np.ndarray] = {}
        self.builders = {selection.joint_states: _StreamBuilder(selection.joint_states)}
        self.handlers: dict[str, Callable[[str, Any, int], None]] = {
            selection.joint_states: self._joint_state
        }
        for topic in selection.cameras.values():
            self._add(topic, self._image)
        for topic, handler in (
            (selection.command, self._trajectory),
            (selection.instruction, self._instruction),
            (selection.events, self._event),
        ):
            if topic is not None:
                self._add(topic, handler)

    def _add(self, topic: str, handler: Callable[[str, Any, int], None]) -> None:
        self.builders[topic] = _StreamBuilder(topic)
        self.handlers[topic] = handler

    def _joint_index(self, names: Sequence[str], what: str) -> np.ndarray:
        key = tuple(names)
        if key not in self._indices:
            try:
                self._indices[key] = self.spec.joint_index(key)
            except KeyError as err:
                raise ConversionError(f"{what}: {err.args[0]}") from None
        return self._indices[key]

    def _stamped(self, topic: str, msg: Any, receive_ns: int, item: Any) -> None:
        header_ns = stamp_to_ns(msg.header.stamp)
        sync_ns = header_ns if self.use_header and header_ns != 0 else receive_ns
        self.builders[topic].add(sync_ns, header_ns, receive_ns, item)

    def _joint_state(self, topic: str, msg: Any, receive_ns: int) -> None:
        index = self._joint_index(msg.name, f"JointState on {topic}")
        self._stamped(topic, msg, receive_ns, joint_state_arrays(msg, index))

    def _image(self, topic: str, msg: Any, receive_ns: int) -> None:
        # kept undecoded (msg.data is a view of the raw bytes); decoded only if a sample uses it
        self._stamped(topic, msg, receive_ns, msg)

    def _trajectory(self, topic: str, msg: Any, receive_ns: int) -> None:
        if not msg.points:  # an empty goal cancels; the previous target stays the last command
            return
        index = self._joint_index(msg.joint_names, f"JointTrajectory on {topic}")
        header_ns = stamp_to_ns(msg.header.stamp)
        start_ns = header_ns if header_ns != 0 else receive_ns
        self._stamped(topic, msg, receive_ns, trajectory_from_message(msg, index, start_ns))

    def _instruction(self, topic: str, msg: Any, receive_ns: int) -> None:
        self.builders[topic].add(receive_ns, _NO_TIME, receive_ns, str(msg.data))

    def _event(self, topic: str, msg: Any, receive_ns: int) -> None:
        marker = EpisodeMarker(
            int(msg.event),
            int(msg.episode_index),
            int(msg.seed),
            str(msg.instruction),
            bool(msg.success),
        )
        self._stamped(topic, msg, receive_ns, marker)

    def handle(self, topic: str, msg: Any, receive_ns: int) -> None:
        self.handlers[topic](topic, msg, receive_ns)

    def recording(self, path: Path, message_count: int, bytes_read: int) -> Recording:
        built = {
            topic: b.build(stack=topic == self.selection.joint_states)
            for topic, b in self.builders.items()
        }
        sel = self.selection
        return Recording(
            path=path,
            joint_states=built[sel.joint_states],
            cameras={name: built[topic] for name, topic in sel.cameras.items()},
            command=built.get(sel.command) if sel.command else None,
            instruction=built.get(sel.instruction) if sel.instruction else None,
            events=built.get(sel.events) if sel.events else None,
            message_count=message_count,
            bytes_read=bytes_read,
        )


def read_bag(
    path: str | Path,
    spec: Embodiment,
    cameras: Mapping[str, str | None] | None = None,
    action_source: str = "auto",
    time_source: str = "header",
    progress: bool = False,
) -> Recording:
    """Stream a rosbag2 bag (directory, .mcap or .db3) once and return its selected streams.

    Raises ConversionError for a missing/unreadable/empty bag, a missing required topic, or a
    message whose joints do not cover the embodiment's.
    """
    path = Path(path)
    _check_bag_path(path)
    try:
        reader = _open_reader(path)
    except ConversionError as err:
        raise ConversionError(f"bag {path}: {err}") from err.__cause__
    try:
        if reader.message_count == 0:
            raise ConversionError("the bag is empty (no messages)")
        available = {c.topic: c.msgtype for c in reader.connections}
        selection = select_topics(spec, available, cameras, action_source)
        parser = _BagParser(spec, selection, time_source)
        connections = [c for c in reader.connections if c.topic in parser.handlers]
        total = sum(c.msgcount for c in connections)
        count = size = 0
        bar = tqdm(
            total=total, unit="msg", desc=f"read {path.name}", disable=not progress, leave=False
        )
        with bar:
            for connection, receive_ns, raw in _iter_messages(reader, connections):
                try:
                    msg = reader.deserialize(raw, connection.msgtype)
                except Exception as err:  # rosbags raises several types for undecodable CDR
                    raise ConversionError(
                        f"cannot decode a {connection.msgtype} on {connection.topic}: {err}"
                    ) from err
                parser.handle(connection.topic, msg, receive_ns)
                count += 1
                size += len(raw)
                bar.update()
                _check_stop()
    except ConversionError as err:
        raise ConversionError(f"bag {path}: {err}") from err.__cause__
    finally:
        reader.close()
    return parser.recording(path, count, size)


# --------------------------------------------------------------------------------------------
# Writing episodes
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; move it onto ``final`` only if the block completes.

    On any exception (KeyboardInterrupt included) the temporary file is removed, so ``final`` is
    either absent, the previous version, or complete.
    """
    tmp = final.with_name(f".{final.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class EpisodeMeta:
    """Root attributes of one episode file that do not come from the arrays."""

    embodiment: str
    joint_names: list[str]
    rate_hz: float
    instruction: str
    source_bag: str
    episode_index: int
    success: int
    sim: bool
    time_source: str
    action_source: str
    seed: int | None = None


def _instruction_for(rec: Recording, window: EpisodeWindow, start_ns: int) -> str:
    """The episode's instruction: the event's, else the latest String as of the start (or the
    first one inside the episode), else ""."""
    if window.instruction or rec.instruction is None or len(rec.instruction) == 0:
        return window.instruction
    i = int(as_of(rec.instruction.time_ns, np.array([start_ns]))[0])
    if i < 0:
        i = int(np.searchsorted(rec.instruction.time_ns, window.start_ns, side="left"))
        if i >= len(rec.instruction) or rec.instruction.time_ns[i] > window.end_ns:
            return ""
    return rec.instruction.items[i]


def _frames(stream: Stream, index: np.ndarray, camera: str) -> Iterator[np.ndarray]:
    """Decoded (H, W, 3) uint8 frames for ``index`` (T,), decoding each distinct message once."""
    last, frame = -1, None
    for i in index.tolist():
        if i != last:
            try:
                frame = message_to_rgb(stream.items[i])
            except ConversionError as err:
                raise ConversionError(f"camera {camera!r} ({stream.topic}): {err}") from None
            last = i
        yield frame


def _write_stamps(group: h5py.Group, header_ns: np.ndarray, receive_ns: np.ndarray) -> None:
    group.create_dataset("header_ns", data=np.asarray(header_ns, dtype=np.int64))
    group.create_dataset("receive_ns", data=np.asarray(receive_ns, dtype=np.int64))


def write_episode(
    path: Path,
    rec: Recording,
    plan: EpisodePlan,
    meta: EpisodeMeta,
    compression: str | None = None,
    progress: bool = False,
) -> None:
    """Write one episode file atomically: arrays from ``plan``, images decoded frame by frame."""
    js = plan.index[JOINT_STREAM]
    states = rec.joint_states.items[js].astype(np.float32)  # (T, 3, D)
    if meta.action_source == "command":
        actions = command_actions(rec.command, plan.index["command"], plan.sample_ns)
        action_header = rec.command.header_ns[plan.index["command"]]
        action_receive = rec.command.receive_ns[plan.index["command"]]
    else:
        actions = next_state_actions(states[:, 0])
        action_header = action_receive = np.full(len(js), _NO_TIME, dtype=np.int64)
    cameras = list(rec.cameras)
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        _write_attrs(f, meta, cameras, len(js))
        obs = f.create_group("observations")
        for key, column in (("qpos", 0), ("qvel", 1), ("effort", 2)):
            obs.create_dataset(key, data=states[:, column])
        f.create_dataset("action", data=actions.astype(np.float32))
        stamps = f.create_group("timestamps")
        stamps.create_dataset("sample_ns", data=plan.sample_ns)
        _write_stamps(
            stamps.create_group(JOINT_STREAM),
            rec.joint_states.header_ns[js],
            rec.joint_states.receive_ns[js],
        )
        _write_stamps(stamps.create_group("action"), action_header, action_receive)
        images = obs.create_group("images")
        for cam in cameras:
            stream, index = rec.cameras[cam], plan.index[cam]
            _write_stamps(
                stamps.create_group(f"images/{cam}"),
                stream.header_ns[index],
                stream.receive_ns[index],
            )
            _write_camera(
                images, cam, _frames(stream, index, cam), len(index), compression, progress
            )


def _write_attrs(f: h5py.File, meta: EpisodeMeta, cameras: list[str], frames: int) -> None:
    strings = h5py.string_dtype()
    f.attrs["sim"] = bool(meta.sim)
    f.attrs["embodiment"] = meta.embodiment
    f.attrs["joint_names"] = np.array(meta.joint_names, dtype=strings)
    f.attrs["camera_names"] = np.array(cameras, dtype=strings)
    f.attrs["rate_hz"] = float(meta.rate_hz)
    f.attrs["instruction"] = meta.instruction
    f.attrs["source_bag"] = meta.source_bag
    f.attrs["episode_index"] = int(meta.episode_index)
    f.attrs["success"] = int(meta.success)
    f.attrs["num_frames"] = int(frames)
    f.attrs["time_source"] = meta.time_source
    f.attrs["action_source"] = meta.action_source
    if meta.seed is not None:
        f.attrs["seed"] = np.uint64(meta.seed)


def _write_camera(
    images: h5py.Group,
    cam: str,
    frames: Iterator[np.ndarray],
    count: int,
    compression: str | None,
    progress: bool,
) -> None:
    """Stream ``count`` frames into /observations/images/<cam> (T, H, W, 3), one chunk per frame."""
    first = next(frames)
    shape = first.shape
    dataset = images.create_dataset(
        cam, shape=(count, *shape), dtype=np.uint8, chunks=(1, *shape), compression=compression
    )
    with tqdm(
        total=count, unit="frame", desc=f"write {cam}", disable=not progress, leave=False
    ) as bar:
        dataset[0] = first
        bar.update()
        for i, frame in enumerate(frames, start=1):
            if frame.shape != shape:
                raise ConversionError(
                    f"camera {cam!r}: frame {i} is {frame.shape[1]}x{frame.shape[0]} pixels, "
                    f"earlier frames {shape[1]}x{shape[0]}"
                )
            dataset[i] = frame
            bar.update()
            _check_stop()


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConversionOptions:
    """Conversion settings; None means "from the embodiment spec / the data".

    rate_hz: grid rate (default spec.control_rate_hz). max_age_s: maximum age of a sensor's newest
    message at a grid step (default per stream: max(2/rate, 2 x the stream's median period)).
    cameras: name -> topic override (None: the spec topic); None converts all spec cameras.
    """

    embodiment: str = "so100"
    rate_hz: float | None = None
    max_age_s: float | None = None
    time_source: str = "header"
    cameras: Mapping[str, str | None] | None = None
    compression: str = "none"
    sim: bool = False
    action_source: str = "auto"
    overwrite: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        if self.rate_hz is not None and not self.rate_hz > 0:
            raise ConversionError(f"rate must be > 0 Hz, got {self.rate_hz}")
        if self.max_age_s is not None and not self.max_age_s > 0:
            raise ConversionError(f"max age must be > 0 s, got {self.max_age_s}")
        for value, choices, what in (
            (self.time_source, TIME_SOURCES, "time source"),
            (self.action_source, ACTION_SOURCES, "action source"),
            (self.compression, COMPRESSIONS, "compression"),
        ):
            if value not in choices:
                raise ConversionError(f"unknown {what} {value!r}; expected one of {list(choices)}")
        for name in self.cameras or {}:
            if name in _RESERVED_CAMERA_NAMES or not name or "/" in name:
                raise ConversionError(f"invalid camera name {name!r}")


@dataclass
class ConversionSummary:
    """What convert() wrote, and how fast it read the bags."""

    output: Path
    dataset: dict
    messages: int = 0
    bytes_read: int = 0
    seconds: float = 0.0

    @property
    def episodes(self) -> list[dict]:
        return self.dataset["episodes"]

    def line(self) -> str:
        frames = sum(e["frames"] for e in self.episodes)
        dropped = sum(sum(e["dropped"].values()) for e in self.episodes)
        rate = self.messages / self.seconds if self.seconds > 0 else float("inf")
        mbps = self.bytes_read / 1e6 / self.seconds if self.seconds > 0 else float("inf")
        return (
            f"wrote {len(self.episodes)} episodes ({frames} frames, {dropped} grid steps "
            f"dropped) to {self.output} in {self.seconds:.2f} s: {self.messages} messages, "
            f"{rate:.0f} msg/s, {mbps:.1f} MB/s"
        )


def _existing_outputs(output: Path) -> list[Path]:
    if not output.is_dir():
        return []
    return sorted([*output.glob("episode_*.hdf5"), *output.glob("dataset.json")])


def _write_json(path: Path, data: dict) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def _episode_plans(
    rec: Recording, rate_hz: float, options: ConversionOptions, use_command: bool
) -> list[tuple[EpisodeWindow, EpisodePlan]]:
    """Plan every episode of a bag before writing any, so a bad bag leaves no files."""
    sensors = rec.sensors()
    if options.max_age_s is not None:
        max_age = {name: int(round(options.max_age_s * 1e9)) for name in sensors}
    else:
        max_age = {name: default_max_age_ns(s, rate_hz) for name, s in sensors.items()}
    plans = []
    for number, window in enumerate(split_episodes(rec.events)):
        try:
            plan = plan_episode(
                sensors, window, rate_hz, max_age, rec.command if use_command else None
            )
        except ConversionError as err:
            label = (
                f"episode {window.source_index}"
                if window.source_index is not None
                else f"episode {number}"
            )
            raise ConversionError(f"bag {rec.path}, {label}: {err}") from None
        plans.append((window, plan))
    return plans


def _write_bag_episodes(
    rec: Recording,
    plans: list[tuple[EpisodeWindow, EpisodePlan]],
    spec: Embodiment,
    options: ConversionOptions,
    dataset: dict,
    output: Path,
) -> None:
    """Write one file per planned episode, numbering on from ``dataset["episodes"]``, and keep
    ``output``/dataset.json listing exactly the files written so far."""
    action_source = "command" if rec.command is not None else "next_state"
    compression = None if options.compression == "none" else options.compression
    topics = {name: s.topic for name, s in rec.sensors().items()}
    if rec.command is not None:
        topics["command"] = rec.command.topic
    for window, plan in tqdm(
        plans, unit="episode", desc="episodes", disable=not options.progress, leave=False
    ):
        number = len(dataset["episodes"])
        meta = EpisodeMeta(
            embodiment=spec.name,
            joint_names=spec.joint_names,
            rate_hz=dataset["rate_hz"],
            instruction=_instruction_for(rec, window, int(plan.sample_ns[0])),
            source_bag=str(rec.path),
            episode_index=number,
            success=window.success,
            sim=options.sim,
            time_source=options.time_source,
            action_source=action_source,
            seed=window.seed,
        )
        name = f"episode_{number:06d}.hdf5"
        write_episode(output / name, rec, plan, meta, compression, options.progress)
        dataset["episodes"].append(
            {
                "file": name,
                "source_bag": str(rec.path),
                "source_episode_index": window.source_index,
                "frames": len(plan.sample_ns),
                "grid_steps": plan.grid_steps,
                "dropped": plan.dropped,
                "success": window.success,
                "instruction": meta.instruction,
                "action_source": action_source,
                "topics": topics,
                "start_ns": int(plan.sample_ns[0]),
                "end_ns": int(plan.sample_ns[-1]),
            }
        )
        _write_json(output / "dataset.json", dataset)


def _load_spec(name: str) -> Embodiment:
    try:
        return load_embodiment(name)
    except (ValueError, OSError) as err:
        raise ConversionError(f"embodiment {name!r}: {err}") from None


def convert(
    bags: Sequence[str | Path],
    output: str | Path,
    options: ConversionOptions = ConversionOptions(),
    spec: Embodiment | None = None,
) -> ConversionSummary:
    """Convert ``bags`` into ``output``/episode_NNNNNN.hdf5 + dataset.json; return a summary.

    Episodes are numbered across bags in order; every bag is read and planned before any of its
    files is written. Raises ConversionError (one line) on user errors; files already complete
    stay valid and dataset.json always lists exactly the written episodes.
    """
    if not bags:
        raise ConversionError("no bags given")
    spec = spec or _load_spec(options.embodiment)
    output = Path(output)
    stale = _existing_outputs(output)
    if stale and not options.overwrite:
        raise ConversionError(
            f"output directory {output} already holds {len(stale)} episode/dataset files; "
            "pass --overwrite to replace them"
        )
    rate_hz = options.rate_hz or spec.control_rate_hz
    dataset: dict = {
        "format": "aloha-hdf5",
        "embodiment": spec.name,
        "joint_names": spec.joint_names,
        "camera_names": [],
        "rate_hz": rate_hz,
        "time_source": options.time_source,
        "sim": options.sim,
        "episodes": [],
    }
    summary = ConversionSummary(output, dataset)
    cameras = options.cameras
    began = time.perf_counter()
    for bag in bags:
        rec = read_bag(
            bag, spec, cameras, options.action_source, options.time_source, options.progress
        )
        if cameras is None:  # later bags must provide the cameras the first one had
            cameras = {name: None for name in rec.cameras}
        dataset["camera_names"] = list(rec.cameras)
        summary.messages += rec.message_count
        summary.bytes_read += rec.bytes_read
        plans = _episode_plans(rec, rate_hz, options, rec.command is not None)
        output.mkdir(parents=True, exist_ok=True)
        for path in stale:  # only once a bag proved convertible
            path.unlink(missing_ok=True)
        stale = []
        _write_bag_episodes(rec, plans, spec, options, dataset, output)
    summary.seconds = time.perf_counter() - began
    return summary


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def parse_camera(text: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME=TOPIC`` -> (name, topic or None)."""
    name, sep, topic = text.partition("=")
    if not name or (sep and not topic.startswith("/")):
        raise argparse.ArgumentTypeError(f"expected NAME or NAME=/topic, got {text!r}")
    return name, topic or None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="librobot-bag-to-hdf5",
        description="Convert rosbag2 recordings (sqlite3 or MCAP) into ALOHA/ACT HDF5 episodes.",
    )
    parser.add_argument(
        "bags", nargs="+", type=Path, help="rosbag2 directories (or .mcap/.db3 files)"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--embodiment", default="so100", help="embodiment name or YAML path (default: so100)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="sampling rate in Hz (default: the spec's control rate)",
    )
    parser.add_argument(
        "--max-age",
        type=float,
        default=None,
        help="max age in seconds of a sensor's newest message at a sample, else the step is "
        "dropped "
        "(default per stream: max(2/rate, 2 periods of the stream))",
    )
    parser.add_argument(
        "--time-source",
        choices=TIME_SOURCES,
        default="header",
        help="message time for sync: header stamp or bag receive time (default: header)",
    )
    parser.add_argument(
        "--camera",
        action="append",
        type=parse_camera,
        metavar="NAME[=TOPIC]",
        help="camera to convert, optionally with its topic (repeatable; default: spec cameras)",
    )
    parser.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default="none",
        help="image compression (default: none)",
    )
    parser.add_argument("--sim", action="store_true", help="set the root attribute sim=True")
    parser.add_argument(
        "--action-source",
        choices=ACTION_SOURCES,
        default="auto",
        help="command: the commanded trajectory; next_state: the next joint positions; "
        "auto: command if the command topic is recorded (default)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace episodes and dataset.json already in --output",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _options_from_args(args: argparse.Namespace) -> ConversionOptions:
    cameras = dict(args.camera) if args.camera else None
    return ConversionOptions(
        embodiment=args.embodiment,
        rate_hz=args.rate,
        max_age_s=args.max_age,
        time_source=args.time_source,
        cameras=cameras,
        compression=args.compression,
        sim=args.sim,
        action_source=args.action_source,
        overwrite=args.overwrite,
        progress=not args.no_progress and sys.stderr.isatty(),
    )


@contextlib.contextmanager
def _signals_stop_at_safe_points() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM ask the conversion to stop at its next message or
    frame (KeyboardInterrupt there), so temporary files are removed; a second signal stops at once.

    Raising from the handler itself could land inside a finalizer, where Python ignores it.
    """
    _STOP_REQUESTED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: Any) -> None:
        if _STOP_REQUESTED.is_set():
            raise KeyboardInterrupt
        _STOP_REQUESTED.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _STOP_REQUESTED.clear()


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns 0 on success, 2 on a conversion error, 130 when interrupted."""
    args = build_parser().parse_args(argv)
    try:
        with _signals_stop_at_safe_points():
            summary = convert(args.bags, args.output, _options_from_args(args))
    except ConversionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; no partial episode file was left behind", file=sys.stderr)
        return 130
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
