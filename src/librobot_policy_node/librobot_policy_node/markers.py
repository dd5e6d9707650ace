"""RViz markers of the predicted motion: each end effector's path for the current chunk (green)
and the previous one (grey), one namespace per end effector (`chunk/<link>`), and a status text
above the robot."""

from __future__ import annotations

import numpy as np
from collections.abc import Mapping

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from visualization_msgs.msg import Marker, MarkerArray

CURRENT_RGBA = (0.1, 0.9, 0.2, 1.0)
PREVIOUS_RGBA = (0.6, 0.6, 0.6, 0.5)
# Sizes as fractions of the robot's reach (0.3 m for the SO-100: 4 mm lines, 25 mm text 35 cm up),
# so that a wheel loader's paths are as visible as an arm's.
LINE_WIDTH, TEXT_HEIGHT, TEXT_ABOVE = 1 / 75, 1 / 12, 7 / 6
DEFAULT_REACH = 0.3  # m, where a robot's reach is unknown (its end effectors at the root)


def _marker(frame: str, stamp: Time, ns: str, marker_id: int, kind: int) -> Marker:
    marker = Marker(id=marker_id, ns=ns, type=kind, action=Marker.ADD)
    marker.header.frame_id, marker.header.stamp = frame, stamp
    marker.pose.orientation.w = 1.0
    return marker


def chunk_markers(frame: str, stamp: Time, paths: Mapping[str, np.ndarray],
                  previous: Mapping[str, np.ndarray] | None, text: str, reach: float = DEFAULT_REACH) -> MarkerArray:
    """paths, previous: link -> (N, 3) positions in `frame` (id 0 the current chunk's, id 1 the
    previous one's, in namespace `chunk/<link>`); text: the status line; reach: the robot's size
    in m (the end effectors' distance from `frame`), which the lines and the text scale with."""
    array = MarkerArray()
    for link, path in paths.items():
        before = None if previous is None else previous.get(link)
        for marker_id, points, rgba in ((0, path, CURRENT_RGBA), (1, before, PREVIOUS_RGBA)):
            if points is None:
                continue
            strip = _marker(frame, stamp, f"chunk/{link}", marker_id, Marker.LINE_STRIP)
            strip.scale.x = LINE_WIDTH * reach
            strip.color.r, strip.color.g, strip.color.b, strip.color.a = rgba
            strip.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in points]
            array.markers.append(strip)
    status = _marker(frame, stamp, "status", 2, Marker.TEXT_VIEW_FACING)
    status.pose.position.z = TEXT_ABOVE * reach
    status.scale.z = TEXT_HEIGHT * reach
    status.color.r = status.color.g = status.color.b = status.color.a = 1.0
    status.text = text
    array.markers.append(status)
    return array
