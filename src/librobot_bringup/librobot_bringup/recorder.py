"""Record topics into a real rosbag2 bag (MCAP or sqlite3), without rosbag2_py.

Subscriptions take the serialized CDR bytes (raw=True) and hand them straight to rosbags' writer,
with the receive time as log time, the way `ros2 bag record` stores them. Message definitions go
into the bag, so readers (ros2 bag, rosbags, Foxglove) can decode our own types too.
"""

from __future__ import annotations

import threading
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

STORAGE = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


def typestore_with(extra_msg_files: dict[str, Path]):
    """The Jazzy typestore plus our own types from their .msg files ({type name: path})."""
    typestore = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for name, path in extra_msg_files.items():
        types.update(get_types_from_msg(Path(path).read_text(), name))
    typestore.register(types)
    return typestore


def librobot_msg_files() -> dict[str, Path]:
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory("librobot_msgs")) / "msg"
    return {f"librobot_msgs/msg/{p.stem}": p for p in sorted(share.glob("*.msg"))}


class BagRecorder:
    """Subscribes `node` to `topics` ({topic: (msg class, QoSProfile)}) and writes a bag."""

    def __init__(self, node: Node, path: Path, topics: dict, storage: str = "mcap"):
        if storage not in STORAGE:
            raise ValueError(f"unknown storage {storage!r}; expected one of {sorted(STORAGE)}")
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"bag {path} already exists; choose another path")
        self.path = path
        self.counts: dict[str, int] = {topic: 0 for topic in topics}
        self._node = node
        self._lock = threading.Lock()
        typestore = typestore_with(librobot_msg_files())
        self._writer = Writer(path, version=9, storage_plugin=STORAGE[storage])
        self._writer.open()
        self._connections = {}
        self._subscriptions = []
        for topic, (msg_class, qos) in topics.items():
            msgtype = _type_name(msg_class)
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=typestore)
            self._subscriptions.append(
                node.create_subscription(
                    msg_class, topic, lambda data, topic=topic: self._write(topic, data), qos,
                    raw=True,
                )
            )

    def _write(self, topic: str, data: bytes) -> None:
        stamp = self._node.get_clock().now().nanoseconds
        with self._lock:
            if self._writer is None:
                return
            self._writer.write(self._connections[topic], stamp, data)
            self.counts[topic] += 1

    def close(self) -> None:
        for sub in self._subscriptions:
            self._node.destroy_subscription(sub)
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


def _type_name(msg_class) -> str:
    """sensor_msgs.msg.Image -> 'sensor_msgs/msg/Image'."""
    package = msg_class.__module__.split(".")[0]
    return f"{package}/msg/{msg_class.__name__}"


def reliable(depth: int = 100, latched: bool = False) -> QoSProfile:
    return QoSProfile(
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )
