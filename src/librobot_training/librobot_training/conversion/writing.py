"""Writing episodes: one HDF5 file per episode in the layout bag_to_hdf5 documents, written
under a temporary name and moved into place only when complete.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
from tqdm import tqdm

from librobot_training.conversion.base import ConversionError, JOINT_STREAM, check_stop
from librobot_training.conversion.messages import message_to_rgb
from librobot_training.conversion.sync import (
    EpisodePlan,
    EpisodeWindow,
    Recording,
    Stream,
    as_of,
    command_actions,
    measured_actions,
)


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


def instruction_for(rec: Recording, window: EpisodeWindow, start_ns: int) -> str:
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
    """Write one episode file atomically: arrays from ``plan``, images decoded frame by frame.

    Actions and their stamps come from the command stream (``meta.action_source`` "command") or
    from the joint states sampled for the observation ("measured")."""
    js = plan.index[JOINT_STREAM]
    states = rec.joint_states.items[js].astype(np.float32)  # (T, 3, D)
    if meta.action_source == "command":
        actions = command_actions(rec.command, plan.index["command"], plan.sample_ns)
        action_header = rec.command.header_ns[plan.index["command"]]
        action_receive = rec.command.receive_ns[plan.index["command"]]
    else:
        actions = measured_actions(states[:, 0])
        action_header = rec.joint_states.header_ns[js]
        action_receive = rec.joint_states.receive_ns[js]
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
            check_stop()
