"""Names every stage of the rosbag2 -> HDF5 conversion shares: message types, option values,
the user-facing ConversionError and the stop flag main() sets on SIGINT/SIGTERM.
"""

from __future__ import annotations

import threading

import numpy as np


JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
TRAJECTORY_TYPE = "trajectory_msgs/msg/JointTrajectory"
STRING_TYPE = "std_msgs/msg/String"
EPISODE_EVENT_TYPE = "librobot_msgs/msg/EpisodeEvent"
EVENT_START, EVENT_END = 0, 1

TIME_SOURCES = ("header", "receive")
ACTION_SOURCES = ("auto", "command", "measured")
COMPRESSIONS = ("none", "lzf", "gzip")
JOINT_STREAM = "joint_states"
RESERVED_CAMERA_NAMES = (JOINT_STREAM, "command", "action")
NO_TIME = -1
INT64_MIN = int(np.iinfo(np.int64).min)
INT64_MAX = int(np.iinfo(np.int64).max)


class ConversionError(Exception):
    """A user-facing conversion failure; ``str(err)`` is one line that says what to fix."""


STOP_REQUESTED = threading.Event()  # set by main()'s SIGINT/SIGTERM handler


def check_stop() -> None:
    """Raise KeyboardInterrupt at a safe point once main() received SIGINT or SIGTERM."""
    if STOP_REQUESTED.is_set():
        raise KeyboardInterrupt
