"""sensor_msgs/Image and CompressedImage payloads <-> numpy, without ROS or cv_bridge.

Duck-typed on the message fields, so the same functions serve rclpy messages (the nodes) and
rosbags messages (the dataset converter). Raw images become zero-copy views where the layout
allows it.
"""

from __future__ import annotations

import numpy as np

# encoding -> (channels, channel order to reach RGB)
_RAW_ENCODINGS = {
    "rgb8": (3, None),
    "bgr8": (3, [2, 1, 0]),
    "rgba8": (4, [0, 1, 2]),
    "bgra8": (4, [2, 1, 0]),
    "mono8": (1, [0, 0, 0]),
}
SUPPORTED_ENCODINGS = tuple(_RAW_ENCODINGS)


class ImageDecodeError(ValueError):
    pass


def decode_image(msg) -> np.ndarray:
    """A sensor_msgs/Image as (H, W, 3) uint8 RGB (a view of msg.data for rgb8)."""
    try:
        channels, order = _RAW_ENCODINGS[msg.encoding]
    except KeyError:
        raise ImageDecodeError(
            f"unsupported image encoding {msg.encoding!r}; expected one of {list(SUPPORTED_ENCODINGS)}"
        ) from None
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(msg.data, dtype=np.uint8)
    row_bytes = width * channels
    if step < row_bytes or data.size < step * height:
        raise ImageDecodeError(
            f"image of {width}x{height} {msg.encoding} needs step >= {row_bytes} and "
            f"{row_bytes * height} bytes; got step {step} and {data.size} bytes"
        )
    rows = data[: step * height].reshape(height, step)[:, :row_bytes]
    pixels = rows.reshape(height, width, channels)
    return pixels if order is None else pixels[..., order]


def decode_compressed(msg) -> np.ndarray:
    """A sensor_msgs/CompressedImage (jpeg/png) as (H, W, 3) uint8 RGB."""
    import cv2  # only the converter and nodes that see compressed streams need OpenCV

    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageDecodeError(
            f"could not decode a {len(buffer)}-byte compressed image (format {msg.format!r})"
        )
    return bgr[..., ::-1]


def encode_rgb8(image: np.ndarray) -> tuple[int, int, int, bytes]:
    """(H, W, 3) uint8 RGB -> (height, width, step, data) for an rgb8 sensor_msgs/Image."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageDecodeError(
            f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}"
        )
    height, width, _ = image.shape
    return height, width, width * 3, np.ascontiguousarray(image).tobytes()
