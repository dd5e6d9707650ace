"""Latest-only observation buffer: keeps the newest joint state and frame per camera.

ROS-free and thread-safe: subscription callbacks `put` raw messages (cheap), the inference thread
takes a `snapshot` that decodes them into the observation dict `Policy.infer` expects. A message
replaced before any snapshot used it counts as a dropped frame (cameras only:
joint states arrive far faster than inference by design).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


class ObservationNotReady(Exception):
    """No complete, fresh observation: the caller holds the robot still and says why."""


@dataclass
class _Slot:
    message: Any = None
    stamp_ns: int = 0
    used: bool = True


@dataclass(frozen=True)
class Snapshot:
    observation: dict  # {"images": {cam: (H, W, 3) uint8}, "state": (D,) float32, "instruction": str}
    stamp_ns: int  # the observation's time: the newest camera frame's stamp (the joint state's without cameras)
    oldest_stamp_ns: int  # the oldest part's stamp


class ObservationBuffer:
    """`decoders` turn a stored message into numpy: {"state": fn, "<camera>": fn, ...}."""

    def __init__(self, cameras: list[str], decode_state: Callable, decode_image: Callable):
        self.cameras = list(cameras)
        self._decode_state = decode_state
        self._decode_image = decode_image
        self._slots = {key: _Slot() for key in ["state", *self.cameras]}
        self._lock = threading.Lock()
        self.instruction = ""
        self.dropped_frames = 0
        self._arrivals = {key: deque(maxlen=50) for key in self._slots}  # receive times, ns

    def put(self, key: str, message: Any, stamp_ns: int, received_ns: int | None = None) -> None:
        with self._lock:
            self._arrivals[key].append(stamp_ns if received_ns is None else received_ns)
            slot = self._slots[key]
            if not slot.used and key != "state":  # joint states outpace inference by design
                self.dropped_frames += 1
            slot.message, slot.stamp_ns, slot.used = message, stamp_ns, False

    def clear(self) -> None:
        with self._lock:
            for key in self._slots:
                self._slots[key] = _Slot()

    def stream_stats(self, now_ns: int) -> dict[str, tuple[float, float]]:
        """Per input: (age of its newest message in ms, or inf if none; its rate in Hz over
        the recent messages, 0 if fewer than two)."""
        with self._lock:
            stats = {}
            for key, slot in self._slots.items():
                arrivals = self._arrivals[key]
                age = (now_ns - slot.stamp_ns) * 1e-6 if slot.message is not None else float("inf")
                span = (arrivals[-1] - arrivals[0]) * 1e-9 if len(arrivals) > 1 else 0.0
                stats[key] = (age, (len(arrivals) - 1) / span if span > 0 else 0.0)
            return stats

    @staticmethod
    def _decode(decoder: Callable, key: str, message: Any):
        try:
            return decoder(message)
        except (KeyError, ValueError) as err:  # a malformed message: hold, say which input
            reason = err.args[0] if err.args else repr(err)
            raise ObservationNotReady(f"invalid {key}: {reason}") from None

    def check(self, now_ns: int, max_age_s: float) -> None:
        """ObservationNotReady naming what is missing or stale, as `snapshot` would (nothing is
        decoded or marked used)."""
        with self._lock:
            parts = {key: (slot.message, slot.stamp_ns) for key, slot in self._slots.items()}
        self._check(parts, now_ns, max_age_s)

    def snapshot(self, now_ns: int, max_age_s: float) -> Snapshot:
        """The newest complete observation, or ObservationNotReady naming what is missing/stale."""
        with self._lock:
            parts = {key: (slot.message, slot.stamp_ns) for key, slot in self._slots.items()}
            for slot in self._slots.values():
                slot.used = True
        self._check(parts, now_ns, max_age_s)
        images = {cam: self._decode(self._decode_image, cam, parts[cam][0]) for cam in self.cameras}
        state = np.asarray(self._decode(self._decode_state, "state", parts["state"][0]), np.float32)
        # The frames fix what the model saw; the dataset pairs each sample time with the latest
        # frame at or before it, so the frame's stamp is the time its chunk starts from.
        frame_stamps = [parts[cam][1] for cam in self.cameras] or [parts["state"][1]]
        return Snapshot(
            observation={"images": images, "state": state, "instruction": self.instruction},
            stamp_ns=max(frame_stamps),
            oldest_stamp_ns=min(s for _, s in parts.values()),
        )

    @staticmethod
    def _check(parts: dict, now_ns: int, max_age_s: float) -> None:
        missing = [key for key, (message, _) in parts.items() if message is None]
        if missing:
            raise ObservationNotReady(f"waiting for {', '.join(missing)}")
        max_age_ns = int(max_age_s * 1e9)
        stale = {k: (now_ns - s) * 1e-6 for k, (_, s) in parts.items() if now_ns - s > max_age_ns}
        if stale:
            ages = ", ".join(f"{k} {age:.0f} ms" for k, age in stale.items())
            raise ObservationNotReady(f"stale input (max age {max_age_s * 1e3:.0f} ms): {ages}")
