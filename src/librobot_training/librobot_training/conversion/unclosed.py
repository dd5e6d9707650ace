"""Bags their recorder did not close. A ``ros2 bag record`` that is killed (SIGKILL, a crash, power
cut) never writes metadata.yaml (rosbag2 writes it when it closes a bag), and its MCAP file stops
mid-way: no summary section, no footer and closing magic, possibly a partial last chunk. rosbags
refuses both; this module finds the storage files of such a bag and reads every complete message
of an MCAP file without its end (``UnclosedMcap``).
"""

from __future__ import annotations

import mmap
import re
import struct
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from rosbags.interfaces import (
    Connection,
    ConnectionExtRosbag2,
    MessageDefinition,
    MessageDefinitionFormat,
)
from rosbags.rosbag2 import ReaderError
from rosbags.rosbag2.metadata import ReaderMetadata
from rosbags.rosbag2.storage_mcap import decompress

MCAP_MAGIC = b"\x89MCAP0\r\n"
STORAGE_SUFFIXES = (".mcap", ".db3")

# MCAP record opcodes (https://mcap.dev/spec) this reader acts on; it skips every other record.
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_DATA_END = (
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0F,
)  # fmt: skip
_RECORD_HEAD = struct.Struct("<BQ")  # opcode, body length
_CHUNK_HEAD = struct.Struct("<QQQI")  # message start time, end time, uncompressed size, crc32
_MESSAGE_HEAD = struct.Struct("<HIQQ")  # channel id, sequence, log time, publish time
_U16, _U32, _U64, _U16_PAIR = (struct.Struct(f"<{code}") for code in ("H", "I", "Q", "HH"))
_DEFINITION_FORMATS = {
    "ros2msg": MessageDefinitionFormat.MSG,
    "ros2idl": MessageDefinitionFormat.IDL,
}


def storage_files(directory: Path) -> list[Path]:
    """The .mcap and .db3 files of a bag directory in recording order: by the split number rosbag2
    appends to their names (``name_0``, ``name_1``, ..., ``name_10``), then by name."""

    def order(path: Path) -> tuple[int, str]:
        number = re.search(r"_(\d+)$", path.stem)
        return (int(number.group(1)) if number else -1, path.name)

    files = [p for p in directory.iterdir() if p.is_file() and p.suffix in STORAGE_SUFFIXES]
    return sorted(files, key=order)


def mcap_is_closed(path: Path) -> bool:
    """Whether the MCAP file at ``path`` ends with the closing magic a recorder writes last."""
    with path.open("rb") as f:
        size = f.seek(0, 2)
        if size < 2 * len(MCAP_MAGIC):
            return False
        f.seek(size - len(MCAP_MAGIC))
        return f.read() == MCAP_MAGIC


class _Body:
    """Reads the fields of one record body ``buf[start:end]`` in order, never past ``end``."""

    def __init__(self, buf: Any, start: int, end: int) -> None:
        self.buf, self.pos, self.end = buf, start, end

    def _take(self, size: int) -> int:
        at = self.pos
        if at + size > self.end:
            raise ReaderError(f"a record field runs past its record at offset {at}")
        self.pos += size
        return at

    def unpack(self, layout: struct.Struct) -> tuple:
        return layout.unpack_from(self.buf, self._take(layout.size))

    def raw(self) -> bytes:
        """A byte string prefixed with its uint32 length."""
        (size,) = self.unpack(_U32)
        at = self._take(size)
        return bytes(self.buf[at : at + size])

    def text(self) -> str:
        """A UTF-8 string prefixed with its uint32 length."""
        try:
            return self.raw().decode()
        except UnicodeDecodeError as err:
            raise ReaderError(f"a record string is not UTF-8: {err}") from None


class _Schema(NamedTuple):
    name: str
    encoding: str
    data: str


class _Channel(NamedTuple):
    topic: str
    schema_id: int
    message_encoding: str


class UnclosedMcap:
    """Every complete message of an MCAP file that stops mid-way, for rosbags' AnyReader.

    It stands in for rosbags' McapReader, which needs the summary and footer such a file lacks,
    with the same attributes and methods (``connections``, ``metadata``, ``open``, ``close``,
    ``messages``). ``open`` reads the file front to back as the MCAP specification lays it out
    (records of opcode u8, body length u64, body; schema, channel and message records at top
    level or inside chunk records) and stops at the first record that is incomplete or cannot be
    decoded: a chunk cut short still yields the complete records before the cut when it is
    uncompressed (rosbag2's default); a compressed one is lost whole. ``messages`` reads the file
    again and yields the messages in file order (the order the recorder wrote them).

    After ``open``: ``message_count``, ``first_ns``/``last_ns`` (earliest/latest log time of the
    messages read, None without any), ``data_complete`` (the data section's end record was read:
    no message is missing, only the summary and footer are), ``readable_bytes`` (the file up to
    the end of the last record read) and ``size`` (the file's size in bytes).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.connections: list[Connection] = []
        self.metadata = ReaderMetadata(0, 2**63 - 1, 0, 0, None, None, None, None)
        self.message_count = 0
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.data_complete = False
        self.readable_bytes = 0
        self.size = 0
        self._file: Any = None
        self._map: mmap.mmap | None = None
        self._data_start = 0

    # -- rosbags storage reader interface -------------------------------------------------------
    def open(self) -> None:
        """Map the file, check its magic and header record, and count the complete messages.

        Raises ReaderError for a file that is empty, not MCAP, or cut inside its header record.
        """
        self._file = self.path.open("rb")
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def messages(
        self,
        connections: Collection[Connection],
        start: int | None = None,
        stop: int | None = None,
    ) -> Iterator[tuple[Connection, int, bytes]]:
        """(connection, log time ns, serialized message) of every complete message on
        ``connections`` with start <= log time < stop, in file order."""
        wanted = {c.id: c for c in connections}
        low = -(2**63) if start is None else start
        high = 2**63 if stop is None else stop
        for op, buf, at, end in self._records():
            if op != OP_MESSAGE:
                continue
            channel, _, log_ns, _ = _MESSAGE_HEAD.unpack_from(buf, at)
            if channel in wanted and low <= log_ns < high:
                yield wanted[channel], log_ns, bytes(buf[at + _MESSAGE_HEAD.size : end])

    # -- reading ---------------------------------------------------------------------------------
    def _open(self) -> None:
        self.size = self.path.stat().st_size
        if self.size == 0:
            raise ReaderError("the file is empty")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        if self._map[: len(MCAP_MAGIC)] != MCAP_MAGIC:
            raise ReaderError("not an MCAP file (no MCAP magic at its start)")
        header = len(MCAP_MAGIC)
        if header + _RECORD_HEAD.size > self.size:
            raise ReaderError("the file ends inside its header record")
        op, length = _RECORD_HEAD.unpack_from(self._map, header)
        self._data_start = header + _RECORD_HEAD.size + length
        if op != OP_HEADER or self._data_start > self.size:
            raise ReaderError("the file ends inside its header record or has none")

        schemas: dict[int, _Schema] = {}
        channels: dict[int, _Channel] = {}
        counts: dict[int, int] = {}
        for op, buf, at, end in self._records():
            body = _Body(buf, at, end)
            if op == OP_SCHEMA:
                (key,) = body.unpack(_U16)
                schemas[key] = _Schema(body.text(), body.text(), body.text())
            elif op == OP_CHANNEL:
                key, schema_id = body.unpack(_U16_PAIR)
                topic = body.text()
                channels[key] = _Channel(topic, schema_id, body.text())
            elif op == OP_MESSAGE:
                channel, _, log_ns, _ = body.unpack(_MESSAGE_HEAD)
                counts[channel] = counts.get(channel, 0) + 1
                self.first_ns = log_ns if self.first_ns is None else min(self.first_ns, log_ns)
                self.last_ns = log_ns if self.last_ns is None else max(self.last_ns, log_ns)
        self.message_count = sum(counts.values())
        self.connections = [
            self._connection(key, channel, schemas.get(channel.schema_id), counts.get(key, 0))
            for key, channel in sorted(channels.items())
        ]
        if self.first_ns is not None and self.last_ns is not None:
            self.metadata = self.metadata._replace(
                duration=self.last_ns - self.first_ns + 1,
                start_time=self.first_ns,
                end_time=self.last_ns + 1,
                message_count=self.message_count,
            )

    def _connection(
        self, key: int, channel: _Channel, schema: _Schema | None, count: int
    ) -> Connection:
        """A rosbags Connection for a channel: its schema's type name and definition (offered QoS
        profiles are not read: the conversion does not use them)."""
        msgdef = MessageDefinition(MessageDefinitionFormat.NONE, "")
        if schema is not None and schema.encoding in _DEFINITION_FORMATS:
            msgdef = MessageDefinition(_DEFINITION_FORMATS[schema.encoding], schema.data)
        return Connection(
            id=key,
            topic=channel.topic,
            msgtype=schema.name if schema is not None else "",
            msgdef=msgdef,
            digest="",
            msgcount=count,
            ext=ConnectionExtRosbag2(channel.message_encoding, []),
            owner=self,
        )

    def _records(self) -> Iterator[tuple[int, Any, int, int]]:
        """(opcode, buffer, body start, body end) of every complete record of the data section,
        the records inside complete chunks in place of those chunks; sets ``readable_bytes``.

        Stops at the data end or footer record, at a record that runs past the end of the file
        (after the complete records of an uncompressed partial chunk), or at a chunk that cannot be
        decompressed or fails its checksum.
        """
        buf = self._map
        assert buf is not None
        pos = self.readable_bytes = self._data_start
        while pos + _RECORD_HEAD.size <= self.size:
            op, length = _RECORD_HEAD.unpack_from(buf, pos)
            body, end = pos + _RECORD_HEAD.size, pos + _RECORD_HEAD.size + length
            if op in (OP_DATA_END, OP_FOOTER):
                self.data_complete = True
                self.readable_bytes = min(end, self.size) if op == OP_DATA_END else pos
                return
            if op == OP_CHUNK:
                inner = self._chunk(body, end)
                if inner is None:
                    return
                inner_buf, inner_start, inner_end, partial = inner
                last_end = None
                for record in _complete_records(inner_buf, inner_start, inner_end):
                    yield record
                    last_end = record[3]
                if partial:  # its records lie in the file itself: the last complete one ends there
                    if last_end is not None:
                        self.readable_bytes = last_end
                    return
            elif end > self.size:
                return
            else:
                yield op, buf, body, end
            pos = self.readable_bytes = end

    def _chunk(self, body: int, end: int) -> tuple[Any, int, int, bool] | None:
        """Where the records of the chunk record ``buf[body:end]`` are: (buffer, start, end,
        partial). A complete chunk is decompressed and its checksum checked; a chunk cut short by
        the end of the file gives the part present when it is uncompressed (partial=True). None
        when nothing of it can be read."""
        buf = self._map
        assert buf is not None
        try:
            head = _Body(buf, body, min(end, self.size))
            _, _, uncompressed_size, crc = head.unpack(_CHUNK_HEAD)
            compression = head.text()
            (records_length,) = head.unpack(_U64)
        except ReaderError:
            return None
        start = head.pos
        if end <= self.size and start + records_length <= end:
            try:
                data = decompress(
                    bytes(buf[start : start + records_length]), compression, uncompressed_size, crc
                )
            except Exception:  # rosbags raises ReaderError; lz4/zstd raise their own errors
                return None
            return data, 0, len(data), False
        if compression:
            return None
        return buf, start, self.size, True


def _complete_records(buf: Any, start: int, end: int) -> Iterator[tuple[int, Any, int, int]]:
    """(opcode, buf, body start, body end) of each complete record of ``buf[start:end]``."""
    pos = start
    while pos + _RECORD_HEAD.size <= end:
        op, length = _RECORD_HEAD.unpack_from(buf, pos)
        body = pos + _RECORD_HEAD.size
        if body + length > end:
            return
        yield op, buf, body, body + length
        pos = body + length
