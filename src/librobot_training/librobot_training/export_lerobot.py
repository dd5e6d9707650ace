"""Export episodes (HDF5 directory, or any dataset spec the trainer takes) as a LeRobot v3.0 dataset.

    python -m librobot_training.export_lerobot --dataset data/so100_sim/hdf5 --output exports/so100_sim \
        [--repo-id user/so100_sim] [--vcodec libsvtav1|h264] [--robot-type so100] \
        [--dataset-option KEY=VALUE ...] [--no-progress]

What it writes, in LeRobot's v3.0 layout (field names as LeRobot's own dataset code uses them):
    meta/info.json        codebase_version "v3.0", robot_type, fps, features (dtype, shape, names; video
                          features with their stream info), totals, chunks_size, file size limits,
                          data_path / video_path templates, splits {"train": "0:N"}
    meta/stats.json       per feature: min, max, mean, std, count, q01, q10, q50, q90, q99 (images per
                          channel in [0, 1], from up to 100 evenly spaced frames per episode)
    meta/tasks.parquet    task (the pandas index) and task_index: one row per distinct instruction
    meta/episodes/chunk-000/file-000.parquet   one row per episode: episode_index, tasks, length,
                          data/{chunk,file}_index, dataset_{from,to}_index,
                          videos/<key>/{chunk_index,file_index,from_timestamp,to_timestamp},
                          meta/episodes/{chunk,file}_index, stats/<feature>/<stat>
    data/chunk-CCC/file-FFF.parquet            observation.state, action (fixed-size float32 lists),
                          timestamp (float32, frame_index / fps), frame_index, episode_index, index,
                          task_index (int64)
    videos/observation.images.<cam>/chunk-CCC/file-FFF.mp4   the camera's episodes one after another,
                          yuv420p, one frame every 1/fps s; an episode is [from_timestamp, to_timestamp)
    README.md             a dataset card: --repo-id as its title, the parquet files as its data, info.json
A data or video file is closed and the next one begun (file-001, ..., a new chunk after chunks_size
files) once it holds data_files_size_in_mb / video_files_size_in_mb.

Everything is written into a temporary directory beside --output and renamed to it at the end: a
failed export leaves no half-written dataset. A bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from tqdm import tqdm

from librobot_training.datasets import EpisodeSource, open_source

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk directory
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # stats keys q01, q10, q50, q90, q99
IMAGE_STAT_FRAMES = 100  # frames per episode sampled for image statistics
IMAGE_STAT_SIDE = 150  # images are subsampled (by a whole stride) to at most about this side for stats
# --vcodec -> (PyAV encoder, its options); GOP 2 and CRF 30 as LeRobot's default encoder settings
VCODECS = {
    "libsvtav1": ("libsvtav1", {"g": "2", "crf": "30", "preset": "12"}),
    "h264": ("libx264", {"g": "2", "crf": "30"}),
}


class ExportError(ValueError):
    """A bad input: reported as one line, exit status 2."""


def _next_file(chunk: int, file: int) -> tuple[int, int]:
    file += 1
    return (chunk + 1, 0) if file == CHUNKS_SIZE else (chunk, file)


# -- statistics --------------------------------------------------------------------------------------
def vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of the rows of `values` (N, D): each (D,), count (1,)."""
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)  # (N, D)
    stats = {
        "min": values.min(0), "max": values.max(0), "mean": values.mean(0), "std": values.std(0),
        "count": np.array([len(values)]),
    }
    for q, value in zip(QUANTILES, np.quantile(values, QUANTILES, axis=0)):
        stats[f"q{round(q * 100):02d}"] = value
    return stats


def pixel_histogram(frames: np.ndarray) -> np.ndarray:
    """(3, 256) int64: how many pixels of uint8 frames (N, H, W, 3) take each value, per channel."""
    channels = frames.reshape(-1, 3)  # (N * H * W, 3)
    return np.stack([np.bincount(channels[:, c], minlength=256) for c in range(3)])


def _histogram_quantile(counts: np.ndarray, q: float) -> float:
    """np.quantile's default (linear) of the values a histogram (256,) counts, without the values."""
    cumulative = np.cumsum(counts)  # (256,)
    position = q * (cumulative[-1] - 1)
    low, high = int(np.floor(position)), int(np.ceil(position))
    value_low, value_high = np.searchsorted(cumulative, [low, high], side="right")  # the sorted values there
    return float(value_low + (value_high - value_low) * (position - low))


def image_stats(histogram: np.ndarray, n_frames: int) -> dict[str, np.ndarray]:
    """Per-channel statistics in [0, 1] of the pixels a (3, 256) histogram counts: each (3, 1, 1);
    count (1,) is the number of frames, as LeRobot counts images. Exact: uint8 has 256 values."""
    values = np.arange(256) / 255.0  # (256,)
    total = histogram.sum(1)  # (3,)
    mean = histogram @ values / total
    std = np.sqrt(np.maximum(histogram @ values**2 / total - mean**2, 0.0))
    present = histogram > 0  # (3, 256)
    stats = {
        "min": np.array([values[np.argmax(p)] for p in present]),
        "max": np.array([values[255 - np.argmax(p[::-1])] for p in present]),
        "mean": mean,
        "std": std,
    }
    for q in QUANTILES:
        stats[f"q{round(q * 100):02d}"] = np.array([_histogram_quantile(h, q) / 255.0 for h in histogram])
    stats = {k: v.reshape(3, 1, 1) for k, v in stats.items()}
    stats["count"] = np.array([n_frames])
    return stats


def _sample_frames(frames: np.ndarray) -> np.ndarray:
    """Up to IMAGE_STAT_FRAMES evenly spaced frames, subsampled by a stride to about IMAGE_STAT_SIDE."""
    rows = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), IMAGE_STAT_FRAMES)).round().astype(int))
    stride = max(1, max(frames.shape[1:3]) // IMAGE_STAT_SIDE)
    return frames[rows, ::stride, ::stride]  # (n, h, w, 3)


def _plain(stats: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: np.asarray(v).tolist() for k, v in stats.items()}


# -- video -------------------------------------------------------------------------------------------
class _VideoFiles:
    """One camera's MP4 files: frames appended episode after episode, a new file past the size limit."""

    def __init__(self, root: Path, key: str, fps: int, vcodec: str, limit_bytes: int) -> None:
        self.root, self.key, self.fps, self.limit = root, key, fps, limit_bytes
        self.encoder, self.options = VCODECS[vcodec]
        self.chunk, self.file = 0, 0
        self._container = None
        self._stream = None
        self._frames = 0  # frames in the open file
        self._bytes = 0  # encoded bytes in the open file
        self.size: tuple[int, int] | None = None  # (H, W)
        self.first_path: Path | None = None

    def _open(self) -> None:
        import av

        path = self.root / VIDEO_PATH.format(video_key=self.key, chunk_index=self.chunk, file_index=self.file)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(path), "w", format="mp4")
        self._stream = self._container.add_stream(self.encoder, rate=self.fps)
        self._stream.height, self._stream.width = self.size
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = dict(self.options)
        self._frames = self._bytes = 0
        self.first_path = self.first_path or path

    def _mux(self, packets: Sequence[Any]) -> None:
        for packet in packets:
            self._bytes += packet.size
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is not None:
            self._mux(self._stream.encode())  # flush
            self._container.close()
            self._container = None

    def add_episode(self, frames: np.ndarray, episode: int) -> dict[str, Any]:
        """Append frames (T, H, W, 3) uint8 RGB; returns the episode's videos/<key>/... columns."""
        import av

        if self.size is None:
            self.size = frames.shape[1:3]
            if self.size[0] % 2 or self.size[1] % 2:
                raise ExportError(f"camera {self.key}: images {self.size} must have an even height and width (yuv420p)")
        elif frames.shape[1:3] != self.size:
            raise ExportError(
                f"episode {episode}: {self.key} images are {frames.shape[1:3]}, but earlier episodes' are {self.size}"
                " (one video stream per camera needs one size)"
            )
        if self._container is not None and self._bytes >= self.limit:
            self.close()
            self.chunk, self.file = _next_file(self.chunk, self.file)
        if self._container is None:
            self._open()
        start = self._frames
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = self._frames  # time base 1/fps
            self._mux(self._stream.encode(video_frame))
            self._frames += 1
        return {
            f"videos/{self.key}/chunk_index": self.chunk,
            f"videos/{self.key}/file_index": self.file,
            f"videos/{self.key}/from_timestamp": start / self.fps,
            f"videos/{self.key}/to_timestamp": self._frames / self.fps,
        }

    def info(self) -> dict[str, Any]:
        """The feature's `info`: stream facts read back from the first file, and the encoder settings."""
        import av

        with av.open(str(self.first_path)) as container:
            stream = container.streams.video[0]
            info = {
                "video.height": stream.height,
                "video.width": stream.width,
                "video.codec": stream.codec_context.codec.canonical_name,
                "video.pix_fmt": stream.pix_fmt,
                "video.fps": int(stream.base_rate),
                "video.channels": 3,
                "has_audio": len(container.streams.audio) > 0,
            }
        info.update({f"video.{k}": (int(v) if v.isdigit() else v) for k, v in self.options.items()})
        info["is_depth_map"] = False
        return info


def _dataset_card(repo_id: str, info: dict[str, Any]) -> str:
    """A short Hugging Face dataset card: the parquet files as the default config, and info.json."""
    return (
        "---\ntask_categories:\n- robotics\ntags:\n- LeRobot\n"
        "configs:\n- config_name: default\n  data_files: data/*/*.parquet\n---\n\n"
        f"# {repo_id}\n\nExported from LibroBot episodes (LeRobot dataset format {CODEBASE_VERSION}).\n\n"
        f"meta/info.json:\n\n```json\n{json.dumps(info, indent=4)}\n```\n"
    )


# -- the export --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportSummary:
    output: Path
    episodes: int
    frames: int
    tasks: int
    seconds: float
    video_files: dict[str, int] = field(default_factory=dict)  # video key -> files


def _fixed_list(values: np.ndarray) -> pa.FixedSizeListArray:
    values = np.ascontiguousarray(values, dtype=np.float32)  # (T, D)
    kind = pa.list_(pa.float32(), values.shape[1])  # a fixed-length Sequence for Hugging Face datasets
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), type=kind)


def _tasks_table(tasks: list[str]) -> pa.Table:
    """tasks.parquet as pandas writes a frame indexed by "task" (so pandas.read_parquet restores the index)."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


@contextmanager
def _scheduling_kept():
    """SVT-AV1, run as root, switches the process to real-time scheduling (SCHED_FIFO 99) and
    leaves it so: whatever the process runs or starts afterwards inherits it (a test suite's ROS
    nodes: one busy DDS thread then starved the 2-core machine and the suite hung). The caller's
    scheduling is restored."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0)) != (policy, param):
            os.sched_setscheduler(0, policy, param)


@_scheduling_kept()
def export(
    source: EpisodeSource,
    output: str | Path,
    repo_id: str | None = None,
    vcodec: str = "libsvtav1",
    robot_type: str | None = None,
    progress: bool = False,
) -> ExportSummary:
    """Write `source`'s episodes to `output` (which must not exist) in the LeRobot v3.0 layout."""
    start_time = time.monotonic()
    output = Path(output)
    if output.exists():
        raise ExportError(f"output {output} already exists (give a new directory)")
    if vcodec not in VCODECS:
        raise ExportError(f"vcodec {vcodec!r} is not one of {list(VCODECS)}")
    info = source.info
    fps = int(round(info.rate_hz))
    if abs(info.rate_hz - fps) > 1e-9 or fps <= 0:
        raise ExportError(f"rate {info.rate_hz} Hz is not a whole number of frames per second (LeRobot's fps is an int)")
    n_episodes = len(source)
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only, not its banner per file
    output.parent.mkdir(parents=True, exist_ok=True)
    temp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    videos = {c: _VideoFiles(temp, f"observation.images.{c}", fps, vcodec, VIDEO_FILES_SIZE_IN_MB << 20)
              for c in info.camera_names}
    writer: pq.ParquetWriter | None = None
    try:
        tasks: list[str] = []
        episode_rows: list[dict[str, Any]] = []
        all_state, all_action, all_task, all_frames = [], [], [], []
        image_histograms = {c: np.zeros((3, 256), np.int64) for c in info.camera_names}  # sampled pixels
        image_frames = {c: 0 for c in info.camera_names}  # sampled frames
        data_chunk, data_file, data_bytes, index = 0, 0, 0, 0
        for e in tqdm(range(n_episodes), desc="export", unit="episode", disable=not progress):
            meta = source.episode(e)
            arrays = source.read(e, ["state", "action", *(f"images/{c}" for c in info.camera_names)])
            length = meta.length
            if meta.instruction not in tasks:
                tasks.append(meta.instruction)
            task_index = tasks.index(meta.instruction)
            frame_index = np.arange(length, dtype=np.int64)
            table = pa.table({
                "observation.state": _fixed_list(arrays["state"]),
                "action": _fixed_list(arrays["action"]),
                "timestamp": pa.array((frame_index / fps).astype(np.float32)),
                "frame_index": pa.array(frame_index),
                "episode_index": pa.array(np.full(length, e, np.int64)),
                "index": pa.array(np.arange(index, index + length, dtype=np.int64)),
                "task_index": pa.array(np.full(length, task_index, np.int64)),
            })
            if writer is not None and data_bytes >= DATA_FILES_SIZE_IN_MB << 20:
                writer.close()
                writer = None
                data_chunk, data_file = _next_file(data_chunk, data_file)
            if writer is None:
                path = temp / DATA_PATH.format(chunk_index=data_chunk, file_index=data_file)
                path.parent.mkdir(parents=True, exist_ok=True)
                writer, data_bytes = pq.ParquetWriter(path, table.schema, compression="snappy"), 0
            writer.write_table(table)
            data_bytes += table.nbytes  # uncompressed: the file stays below the limit
            row: dict[str, Any] = {
                "episode_index": e, "tasks": [meta.instruction], "length": length,
                "data/chunk_index": data_chunk, "data/file_index": data_file,
                "dataset_from_index": index, "dataset_to_index": index + length,
            }
            for cam, video in videos.items():
                row.update(video.add_episode(arrays[f"images/{cam}"], e))
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            stats = {
                "observation.state": vector_stats(arrays["state"]),
                "action": vector_stats(arrays["action"]),
                "timestamp": vector_stats(frame_index[:, None] / fps),
                "frame_index": vector_stats(frame_index[:, None]),
                "episode_index": vector_stats(np.full((length, 1), e)),
                "index": vector_stats(np.arange(index, index + length)[:, None]),
                "task_index": vector_stats(np.full((length, 1), task_index)),
            }
            for cam in info.camera_names:
                sample = _sample_frames(arrays[f"images/{cam}"])  # (n, h, w, 3)
                histogram = pixel_histogram(sample)
                image_histograms[cam] += histogram
                image_frames[cam] += len(sample)
                stats[f"observation.images.{cam}"] = image_stats(histogram, len(sample))
            for feature, values in stats.items():
                for name, value in values.items():
                    row[f"stats/{feature}/{name}"] = np.asarray(value).tolist()
            episode_rows.append(row)
            all_state.append(arrays["state"])
            all_action.append(arrays["action"])
            all_task.append(np.full(length, task_index))
            all_frames.append(frame_index)
            index += length
        if writer is not None:
            writer.close()
            writer = None
        for video in videos.values():
            video.close()
        if n_episodes == 0:
            raise ExportError("the dataset has no episodes")

        frame_indices = np.concatenate(all_frames)
        episode_indices = np.concatenate([np.full(r["length"], r["episode_index"]) for r in episode_rows])
        stats = {
            "observation.state": vector_stats(np.concatenate(all_state)),
            "action": vector_stats(np.concatenate(all_action)),
            "timestamp": vector_stats(frame_indices[:, None] / fps),
            "frame_index": vector_stats(frame_indices[:, None]),
            "episode_index": vector_stats(episode_indices[:, None]),
            "index": vector_stats(np.arange(index)[:, None]),
            "task_index": vector_stats(np.concatenate(all_task)[:, None]),
            **{f"observation.images.{c}": image_stats(h, image_frames[c]) for c, h in image_histograms.items()},
        }
        action_names = info.joint_names if info.action_dim == info.state_dim else [
            f"action_{i}" for i in range(info.action_dim)
        ]
        features: dict[str, Any] = {
            "observation.state": {"dtype": "float32", "shape": [info.state_dim], "names": list(info.joint_names)},
            "action": {"dtype": "float32", "shape": [info.action_dim], "names": list(action_names)},
        }
        for cam, video in videos.items():
            features[video.key] = {
                "dtype": "video", "shape": [*video.size, 3], "names": ["height", "width", "channels"],
                "info": video.info(),
            }
        for name in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
            features[name] = {"dtype": "float32" if name == "timestamp" else "int64", "shape": [1], "names": None}
        info_json = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": robot_type if robot_type is not None else info.embodiment,
            "total_episodes": n_episodes,
            "total_frames": index,
            "total_tasks": len(tasks),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB,
            "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB,
            "fps": fps,
            "splits": {"train": f"0:{n_episodes}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if videos else None,
            "features": features,
        }
        (temp / "meta").mkdir(exist_ok=True)
        (temp / "meta/info.json").write_text(json.dumps(info_json, indent=4))
        (temp / "meta/stats.json").write_text(json.dumps({k: _plain(v) for k, v in stats.items()}, indent=4))
        pq.write_table(_tasks_table(tasks), temp / "meta/tasks.parquet")
        episodes_path = temp / EPISODES_PATH.format(chunk_index=0, file_index=0)
        episodes_path.parent.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(episode_rows), episodes_path)
        (temp / "README.md").write_text(_dataset_card(repo_id or output.name, info_json))
        os.rename(temp, output)
    except BaseException:
        if writer is not None:
            writer.close()
        for video in videos.values():
            try:
                video.close()
            except Exception:  # the export already failed; its temporary files go anyway
                pass
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return ExportSummary(
        output=output, episodes=n_episodes, frames=index, tasks=len(tasks),
        seconds=time.monotonic() - start_time,
        video_files={v.key: len(list((output / "videos" / v.key).rglob("*.mp4"))) for v in videos.values()},
    )


# -- command line ------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="export_lerobot",
        description="Export LibroBot episodes as a LeRobot v3.0 dataset (parquet + MP4 videos).",
    )
    parser.add_argument("--dataset", required=True,
                        help="a directory of HDF5 episodes, or a dataset spec as in training (rlds:DIR, dummy)")
    parser.add_argument("--output", required=True, help="the new dataset directory (must not exist)")
    parser.add_argument("--repo-id", help="the dataset's name in its README.md card (default: the output's name)")
    parser.add_argument("--vcodec", default="libsvtav1", choices=list(VCODECS), help="video codec (default libsvtav1)")
    parser.add_argument("--robot-type", help="info.json robot_type (default: the dataset's embodiment)")
    parser.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a dataset option (values as YAML), e.g. rate_hz=10 for rlds:DIR; repeatable")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        options = {}
        for item in args.dataset_option:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ExportError(f"--dataset-option {item!r} is invalid: expected KEY=VALUE")
            options[key] = yaml.safe_load(value)
        source = open_source(args.dataset, options)
        summary = export(source, args.output, args.repo_id, args.vcodec, args.robot_type,
                         progress=not args.no_progress)
    except (ValueError, OSError, yaml.YAMLError) as err:
        print(f"export_lerobot: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(
        f"exported {summary.episodes} episodes, {summary.frames} frames, {summary.tasks} tasks to {summary.output} "
        f"in {summary.seconds:.1f} s ({summary.frames / max(summary.seconds, 1e-9):.0f} frames/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
