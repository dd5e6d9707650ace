"""Reading a bag: which topics to use (cameras, joint states, commands, instruction, episode
events), checked against what the bag holds, and one pass over its messages into Streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from librobot_drivers.embodiment import Embodiment, JointGroup
from librobot_training.conversion.base import (
    COMPRESSED_IMAGE_TYPE,
    ConversionError,
    EPISODE_EVENT_TYPE,
    IMAGE_TYPE,
    JOINT_STATE_TYPE,
    NO_TIME,
    STRING_TYPE,
    TRAJECTORY_TYPE,
    check_stop,
)
from librobot_training.conversion.messages import (
    EpisodeMarker,
    joint_state_arrays,
    stamp_to_ns,
    trajectory_from_message,
    view_state_arrays,
    wheel_trajectory_speeds,
)
from librobot_training.conversion.sync import Recording, Stream, StreamBuilder, merge_group_commands
from librobot_training.conversion.unclosed import (
    STORAGE_SUFFIXES,
    UnclosedMcap,
    mcap_is_closed,
    storage_files,
)


@dataclass(frozen=True)
class TopicSelection:
    """Topics to read from one bag (cameras: name -> topic, raw or compressed)."""

    joint_states: str
    cameras: dict[str, str]
    commands: dict[str, str]  # commanded joint group -> its controller's trajectory topic; {}: none
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
    commands = {}
    if action_source == "command":
        commands = {g.name: _require_topic(available, g.command_topic, TRAJECTORY_TYPE, "commands")
                    for g in spec.commanded_groups}
    elif action_source == "auto":
        found = {g.name: _optional_topic(available, g.command_topic, TRAJECTORY_TYPE)
                 for g in spec.commanded_groups}
        # every commanded group's commands, or none (actions from the measured joints)
        commands = found if all(found.values()) else {}
    return TopicSelection(
        joint_states=_require_topic(
            available, spec.topic("joint_states"), JOINT_STATE_TYPE, "joint states"
        ),
        cameras=chosen,
        commands=commands,
        instruction=_optional_topic(available, spec.topics.get("instruction", ""), STRING_TYPE),
        events=_optional_topic(
            available, spec.topics.get("episode_events", ""), EPISODE_EVENT_TYPE
        ),
    )


def _check_bag_path(path: Path) -> None:
    if not path.exists():
        raise ConversionError(f"bag path {path} does not exist")
    if path.is_dir() and not (path / "metadata.yaml").is_file() and not storage_files(path):
        raise ConversionError(
            f"{path} is not a rosbag2 bag (directory without metadata.yaml or .mcap/.db3 files)"
        )
    if path.is_file() and path.suffix not in STORAGE_SUFFIXES:
        raise ConversionError(
            f"{path} is not a rosbag2 bag (expected a bag directory, a .mcap or a .db3 file)"
        )


def _open_reader(paths: list[Path], unclosed_mcaps: Sequence[Path] = ()) -> AnyReader:
    """An open AnyReader over ``paths`` (one bag directory, or the storage files of one bag) whose
    typestore has every type: the bag's own definitions first, ROS 2 Jazzy's for connections
    stored without one. The files in ``unclosed_mcaps`` are read by UnclosedMcap in place of
    rosbags' MCAP reader (a rosbags Reader reads its file through its ``storage`` attribute)."""
    default = get_typestore(Stores.ROS2_JAZZY)
    try:
        reader = AnyReader(paths, default_typestore=default)
        for sub in reader.readers:
            if sub.path in unclosed_mcaps:
                sub.storage = UnclosedMcap(sub.path)
        reader.open()
    except Exception as err:  # rosbags/sqlite3/mcap raise many types for unreadable files
        raise ConversionError(f"cannot read it (corrupt or truncated?): {err}") from err
    known = reader.typestore.fielddefs
    missing = {k: v for k, v in default.fielddefs.items() if k not in known}
    if missing and any(c.msgtype not in known for c in reader.connections):
        reader.typestore.register(missing)
    return reader


def _clock(t_ns: int) -> str:
    """A bag time (ns since the epoch) as an ISO 8601 UTC time with milliseconds."""
    moment = datetime.fromtimestamp(t_ns // 1_000_000 / 1e3, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _unclosed_mcap_note(mcap: UnclosedMcap) -> str:
    """What was read of an MCAP file without its end, and how much of the file was not."""
    name, lost = mcap.path.name, mcap.size - mcap.readable_bytes
    if mcap.data_complete:
        return (
            f"MCAP {name} has no summary or footer; "
            f"all its {mcap.message_count} messages were read"
        )
    if mcap.first_ns is None or mcap.last_ns is None:
        return (
            f"truncated MCAP {name}: no complete message; "
            f"the rest of the file ({lost} bytes) was unreadable"
        )
    return (
        f"truncated MCAP {name}: read {mcap.message_count} messages up to "
        f"{_clock(mcap.last_ns)} ({(mcap.last_ns - mcap.first_ns) / 1e9:.3f} s after its first); "
        f"the rest of the file ({lost} bytes) was unreadable"
    )


def open_bag(path: Path) -> tuple[AnyReader, str | None]:
    """Open the bag at ``path`` (a directory, .mcap or .db3 file that _check_bag_path accepted).

    Returns the open reader and, for a bag its recorder did not close, one line that says how it
    was read and what could not be (None for a closed bag, which rosbags reads as it is). Signs
    of a bag left open: a directory without metadata.yaml (its storage files are then read
    directly, in recording order), an MCAP file without its closing magic (read by UnclosedMcap
    up to its first incomplete record), a non-empty sqlite3 write-ahead log next to a .db3 (rosbags
    reads the database file only, so the messages in the log are not read).
    """
    files = storage_files(path) if path.is_dir() else [path]
    no_metadata = path.is_dir() and not (path / "metadata.yaml").is_file()
    unclosed = [f for f in files if f.suffix == ".mcap" and not mcap_is_closed(f)]
    if no_metadata or unclosed:
        reader = _open_reader(files, unclosed)
    else:
        reader = _open_reader([path])
    notes = []
    if no_metadata:
        names = ", ".join(f.name for f in files)
        notes.append(f"no metadata.yaml (its recorder did not close it); read {names} directly")
    notes += [
        _unclosed_mcap_note(sub.storage)
        for sub in reader.readers
        if isinstance(sub.storage, UnclosedMcap)
    ]
    for db3 in (f for f in files if f.suffix == ".db3"):
        wal = db3.with_name(db3.name + "-wal")
        if wal.is_file() and wal.stat().st_size > 0:
            notes.append(
                f"its write-ahead log {wal.name} ({wal.stat().st_size} bytes) was not read"
            )
    return reader, "; ".join(notes) or None


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
        self.builders = {selection.joint_states: StreamBuilder(selection.joint_states)}
        self.handlers: dict[str, Callable[[str, Any, int], None]] = {
            selection.joint_states: self._joint_state
        }
        for topic in selection.cameras.values():
            self._add(topic, self._image)
        for group, topic in selection.commands.items():
            self._add(topic, lambda topic, msg, receive_ns, group=spec.group(group):
                      self._trajectory(group, topic, msg, receive_ns))
        for topic, handler in (
            (selection.instruction, self._instruction),
            (selection.events, self._event),
        ):
            if topic is not None:
                self._add(topic, handler)

    def _add(self, topic: str, handler: Callable[[str, Any, int], None]) -> None:
        self.builders[topic] = StreamBuilder(topic)
        self.handlers[topic] = handler

    def _joint_index(self, names: Sequence[str], what: str, joints: Sequence[str] | None = None) -> np.ndarray:
        key = (tuple(names), None if joints is None else tuple(joints))
        if key not in self._indices:
            try:
                self._indices[key] = self.spec.joint_index(key[0], joints)
            except KeyError as err:
                raise ConversionError(f"{what}: {err.args[0]}") from None
        return self._indices[key]

    def _stamped(self, topic: str, msg: Any, receive_ns: int, item: Any) -> None:
        header_ns = stamp_to_ns(msg.header.stamp)
        sync_ns = header_ns if self.use_header and header_ns != 0 else receive_ns
        self.builders[topic].add(sync_ns, header_ns, receive_ns, item)

    def _joint_state(self, topic: str, msg: Any, receive_ns: int) -> None:
        speed = self.spec.speed_index
        if speed is None:
            index = self._joint_index(msg.name, f"JointState on {topic}")
            self._stamped(topic, msg, receive_ns, joint_state_arrays(msg, index))
            return
        others = [n for i, n in enumerate(self.spec.joint_names) if i != speed]
        index = self._joint_index(msg.name, f"JointState on {topic}", others)
        self._stamped(topic, msg, receive_ns, view_state_arrays(msg, self.spec, index))

    def _image(self, topic: str, msg: Any, receive_ns: int) -> None:
        # kept undecoded (msg.data is a view of the raw bytes); decoded only if a sample uses it
        self._stamped(topic, msg, receive_ns, msg)

    def _trajectory(self, group: JointGroup, topic: str, msg: Any, receive_ns: int) -> None:
        if not msg.points:  # an empty goal cancels; the previous target stays the last command
            return
        header_ns = stamp_to_ns(msg.header.stamp)
        start_ns = header_ns if header_ns != 0 else receive_ns
        drive = self.spec.drive
        if drive is not None and group.name == drive.group and self.spec.speed_index is not None:
            self._stamped(topic, msg, receive_ns, wheel_trajectory_speeds(msg, drive, start_ns))
            return
        index = self._joint_index(msg.joint_names, f"JointTrajectory on {topic}", group.joints)
        self._stamped(topic, msg, receive_ns, trajectory_from_message(msg, index, start_ns))

    def _instruction(self, topic: str, msg: Any, receive_ns: int) -> None:
        self.builders[topic].add(receive_ns, NO_TIME, receive_ns, str(msg.data))

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

    def _command(self, built: Mapping[str, Stream]) -> Stream | None:
        """The command stream: the one group's, or every commanded group's merged."""
        streams = {group: built[topic] for group, topic in self.selection.commands.items()}
        if len(streams) <= 1:
            return next(iter(streams.values()), None)
        columns = {group: self.spec.group_index(self.spec.group(group)) for group in streams}
        return merge_group_commands(streams, columns, self.spec.dof)

    def recording(
        self, path: Path, message_count: int, bytes_read: int, truncation: str | None
    ) -> Recording:
        built = {
            topic: b.build(stack=topic == self.selection.joint_states)
            for topic, b in self.builders.items()
        }
        sel = self.selection
        return Recording(
            path=path,
            joint_states=built[sel.joint_states],
            cameras={name: built[topic] for name, topic in sel.cameras.items()},
            command=self._command(built),
            instruction=built.get(sel.instruction) if sel.instruction else None,
            events=built.get(sel.events) if sel.events else None,
            message_count=message_count,
            bytes_read=bytes_read,
            truncation=truncation,
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

    A bag its recorder did not close is read as far as its messages are complete (open_bag); the
    Recording's ``truncation`` then says what could not be read. Raises ConversionError for a
    missing/unreadable/empty bag, a missing required topic, or a message whose joints do not
    cover the embodiment's.
    """
    path = Path(path)
    _check_bag_path(path)
    try:
        reader, truncation = open_bag(path)
    except ConversionError as err:
        raise ConversionError(f"bag {path}: {err}") from err.__cause__
    try:
        if reader.message_count == 0:
            raise ConversionError(
                "the bag is empty (no messages)" + (f"; {truncation}" if truncation else "")
            )
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
                check_stop()
    except ConversionError as err:
        raise ConversionError(f"bag {path}: {err}") from err.__cause__
    finally:
        reader.close()
    return parser.recording(path, count, size, truncation)
