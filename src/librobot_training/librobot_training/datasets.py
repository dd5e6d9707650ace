"""Training samples over episode sources: HDF5 directories, RLDS (Open X-Embodiment) TFRecords, dummy.

A *source* is a list of episodes, each readable by field along time:
    state           (T, state_dim) float32      joint positions (or whatever the source maps to state)
    action          (T, action_dim) float32     commanded positions; action[t] is in force at frame t
    images/<cam>    (T, H, W, 3) uint8 RGB
Three kinds, picked by a dataset *spec* (see `open_source`):
    DIR, hdf5:DIR   HDF5Source   one ALOHA-style file per episode (layout below)
    rlds:DIR        RLDSSource   (librobot_training.rlds) episodes of a TFDS/RLDS dataset directory
    dummy           DummySource  episodes generated in memory from a seed, for smoke runs

HDF5 layout, one file per episode:
    attrs:  joint_names, camera_names, rate_hz, instruction, success (embodiment optional)
    /observations/qpos            (T, D) float32   joint positions, robot units
    /observations/images/<cam>    (T, H, W, 3) uint8 RGB
    /action                       (T, D) float32   commanded joint positions

EpisodeDataset sample i is frame t of some episode:
    images          (N_cam, 3, H, W) uint8          cameras in the requested order, at t
    state           (state_dim,) float32            state[t]
    actions         (chunk_size, action_dim) float32 action[t : t + chunk_size], the last one repeated
                                                    past the episode end
    action_is_pad   (chunk_size,) bool              True on those repeated steps
    instruction     str
With history T > 1 (a framework that sees earlier steps: VLAConfig.observation_history) frames
t - T + 1 .. t instead, steps before the episode start repeating its first frame:
    images              (T, N_cam, 3, H, W) uint8
    state               (T, state_dim) float32
    observation_is_pad  (T,) bool           True on those repeated steps
Values are raw (robot units, uint8 images): the trainer normalises whole batches.
"""

from __future__ import annotations

import abc
import functools
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np
import torch

from librobot_models.normalization import NormStats

EPISODE_SUFFIXES = (".hdf5", ".h5")
_MAX_OPEN_FILES = 64  # per worker; the oldest handle is closed beyond this


def _str_list(value: Any) -> list[str]:
    values = [value] if isinstance(value, (str, bytes)) else list(value)
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class DatasetInfo:
    """What the model config needs from a dataset."""

    joint_names: list[str]
    camera_names: list[str]
    rate_hz: float
    state_dim: int
    action_dim: int
    embodiment: str | None


@dataclass(frozen=True)
class EpisodeMeta:
    length: int  # frames
    instruction: str
    name: str  # where it comes from, for messages (a file, a shard and record, "dummy episode 3")


class EpisodeSource(abc.ABC):
    """The episodes of one dataset. `info` is known when the source is made (cheap: `describe_dataset`);
    the per-episode index may be built on first use of `__len__` / `episode`."""

    info: DatasetInfo

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of episodes."""

    @abc.abstractmethod
    def episode(self, index: int) -> EpisodeMeta: ...

    @abc.abstractmethod
    def open(self, index: int) -> Mapping[str, Any]:
        """Episode `index` by field ("state", "action", "images/<cam>"): each value takes a time slice
        `[start:stop]` and returns an array; nothing more is read than the slices asked for."""

    def read(self, index: int, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Whole arrays of the fields `names` of one episode."""
        episode, length = self.open(index), self.episode(index).length
        return {name: np.asarray(episode[name][0:length]) for name in names}

    def close(self) -> None:
        """Release open files (they reopen on the next read)."""


# -- HDF5 --------------------------------------------------------------------------------------------
def episode_paths(root: str | Path) -> list[Path]:
    """The episode files of a dataset directory, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory {root} does not exist")
    paths = sorted(p for p in root.iterdir() if p.suffix in EPISODE_SUFFIXES and p.is_file())
    if not paths:
        raise FileNotFoundError(f"dataset directory {root} holds no episodes (*.hdf5 or *.h5 files)")
    return paths


_HDF5_FIELDS = {"state": "observations/qpos", "action": "action"}


def _hdf5_key(name: str) -> str:
    return _HDF5_FIELDS.get(name) or "observations/" + name  # images/<cam> -> observations/images/<cam>


class _HDF5Episode(Mapping):
    """One open episode file seen through the source's field names (h5py datasets slice lazily)."""

    def __init__(self, file: h5py.File) -> None:
        self._file = file

    def __getitem__(self, name: str) -> Any:
        return self._file[_hdf5_key(name)]

    def __iter__(self):
        return iter(("state", "action"))

    def __len__(self) -> int:
        return 2


class HDF5Source(EpisodeSource):
    """A directory of HDF5 episode files (layout in the module docstring), sorted by name.

    `info` comes from the first file; the others are checked against it on first use of the index.
    Each process opens files lazily and keeps up to 64 open (a forked or spawned DataLoader worker
    opens its own).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.paths = episode_paths(self.root)
        self.info = self._describe(self.paths[0])
        self._files: dict[int, h5py.File] = {}
        self._pid = os.getpid()

    @staticmethod
    def _describe(path: Path) -> DatasetInfo:
        with h5py.File(path, "r") as f:
            try:
                return DatasetInfo(
                    joint_names=_str_list(f.attrs["joint_names"]),
                    camera_names=_str_list(f.attrs["camera_names"]),
                    rate_hz=float(f.attrs["rate_hz"]),
                    state_dim=int(f["observations/qpos"].shape[1]),
                    action_dim=int(f["action"].shape[1]),
                    embodiment=_str(f.attrs["embodiment"]) if "embodiment" in f.attrs else None,
                )
            except KeyError as err:
                raise ValueError(
                    f"episode {path} lacks {err.args[0]!r} (expected the LibroBot HDF5 layout)"
                ) from None

    @functools.cached_property
    def _episodes(self) -> list[EpisodeMeta]:
        return [self._check(p) for p in self.paths]

    def _check(self, path: Path) -> EpisodeMeta:
        keys = ["observations/qpos", "action", *(f"observations/images/{c}" for c in self.info.camera_names)]
        with h5py.File(path, "r") as f:
            missing = [k for k in keys if k not in f]
            if missing:
                raise ValueError(f"episode {path} lacks {missing}")
            qpos, action = f["observations/qpos"], f["action"]
            length = qpos.shape[0]
            if length == 0:
                raise ValueError(f"episode {path} has no frames")
            if qpos.shape[1] != self.info.state_dim or action.shape != (length, self.info.action_dim):
                raise ValueError(
                    f"episode {path}: qpos {qpos.shape} / action {action.shape} do not match the first "
                    f"episode's state_dim {self.info.state_dim} / action_dim {self.info.action_dim}"
                )
            shapes = {c: f[f"observations/images/{c}"].shape for c in self.info.camera_names}
            if any(len(s) != 4 or s[0] != length or s[3] != 3 for s in shapes.values()):
                raise ValueError(f"episode {path}: camera arrays {shapes} must all be ({length}, H, W, 3)")
            return EpisodeMeta(length, _str(f.attrs.get("instruction", "")), str(path))

    def __len__(self) -> int:
        return len(self.paths)

    def episode(self, index: int) -> EpisodeMeta:
        return self._episodes[index]

    def open(self, index: int) -> _HDF5Episode:
        if self._pid != os.getpid():  # a forked DataLoader worker must not share the parent's handles
            self._files, self._pid = {}, os.getpid()
        if index not in self._files:
            if len(self._files) >= _MAX_OPEN_FILES:
                self._files.pop(next(iter(self._files))).close()
            self._files[index] = h5py.File(self.paths[index], "r")
        return _HDF5Episode(self._files[index])

    def read(self, index: int, names: Sequence[str]) -> dict[str, np.ndarray]:
        with h5py.File(self.paths[index], "r") as f:  # contiguous whole reads; no handle kept
            return {name: f[_hdf5_key(name)][()] for name in names}

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def __getstate__(self) -> dict:
        """Open HDF5 handles do not pickle (spawned workers): they reopen lazily."""
        return {**self.__dict__, "_files": {}}


# -- dummy -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DummyOptions:
    """Shape of the generated episodes (`dataset_options` of a `dummy` dataset)."""

    episodes: int = 4
    length: int = 30  # frames per episode
    state_dim: int = 6
    action_dim: int | None = None  # None: state_dim
    cameras: tuple[str, ...] = ("front",)
    image_size: tuple[int, int] = (48, 64)  # (H, W)
    rate_hz: float = 10.0
    instruction: str = "reach the target"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(self.cameras))
        object.__setattr__(self, "image_size", tuple(self.image_size))
        for name in ("episodes", "length", "state_dim"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"dummy dataset: {name} = {value!r}, expected an int >= 1")
        if self.action_dim is not None and not (isinstance(self.action_dim, int) and self.action_dim >= 1):
            raise ValueError(f"dummy dataset: action_dim = {self.action_dim!r}, expected null or an int >= 1")
        h_w = self.image_size
        if not (len(h_w) == 2 and all(isinstance(v, int) and v >= 8 for v in h_w)):
            raise ValueError(f"dummy dataset: image_size = {list(h_w)}, expected [H, W], both ints >= 8")
        if not (self.cameras and all(isinstance(c, str) and c for c in self.cameras)):
            raise ValueError(f"dummy dataset: cameras = {list(self.cameras)}, expected non-empty names")
        if not self.rate_hz > 0:
            raise ValueError(f"dummy dataset: rate_hz = {self.rate_hz!r}, expected a number > 0")


class _SquareFrames:
    """Frames (T, H, W, 3) uint8 of a dummy episode, drawn only for the slice asked for."""

    def __init__(self, columns: np.ndarray, size: tuple[int, int]) -> None:
        self._columns = columns  # (T,) left column of the square in each frame
        self._size = size

    def __getitem__(self, index: slice) -> np.ndarray:
        columns = self._columns[index]
        h, w = self._size
        frames = np.full((len(columns), h, w, 3), 40, dtype=np.uint8)
        for i, c in enumerate(columns):
            frames[i, h // 2 - 4 : h // 2 + 4, c : c + 8] = 230
        return frames


class DummySource(EpisodeSource):
    """Episodes generated in memory, deterministic from the seed (no files).

    Each joint follows a sinusoid with a per-episode phase. action[t] is the command in force at
    frame t; the joints reach it one period later (state[t + 1] == action[t]), as a
    position-controlled arm lags its command. A bright 8x8 square whose column follows joint 0 makes
    the images informative; every camera sees the same picture.
    """

    def __init__(self, options: DummyOptions = DummyOptions()) -> None:
        self.options = o = options
        action_dim = o.action_dim if o.action_dim is not None else o.state_dim
        self.info = DatasetInfo(
            joint_names=[f"joint_{j}" for j in range(o.state_dim)],
            camera_names=list(o.cameras),
            rate_hz=float(o.rate_hz),
            state_dim=o.state_dim,
            action_dim=action_dim,
            embodiment=None,
        )
        rng = np.random.default_rng(o.seed)
        dim = max(o.state_dim, action_dim)
        self._phases = [rng.uniform(0, 2 * np.pi, size=(1, dim)) for _ in range(o.episodes)]  # (1, dim) each

    def __len__(self) -> int:
        return self.options.episodes

    def episode(self, index: int) -> EpisodeMeta:
        if not 0 <= index < len(self):
            raise IndexError(f"dummy episode {index} out of range for {len(self)} episodes")
        return EpisodeMeta(self.options.length, self.options.instruction, f"dummy episode {index}")

    def open(self, index: int) -> dict[str, Any]:
        o = self.options
        self.episode(index)
        t = np.arange(o.length + 1)[:, None] / o.rate_hz  # (T + 1, 1) seconds
        trajectory = (0.5 * np.sin(2 * np.pi * 0.2 * t + self._phases[index])).astype(np.float32)  # (T+1, dim)
        state = trajectory[:-1, : self.info.state_dim]  # (T, state_dim): one period behind the command
        action = trajectory[1:, : self.info.action_dim]  # (T, action_dim)
        w = o.image_size[1]
        columns = ((trajectory[:-1, 0] + 0.5) * (w - 8)).astype(int)  # joint 0 in [-0.5, 0.5] -> column
        frames = _SquareFrames(columns, o.image_size)
        return {"state": state, "action": action, **{f"images/{c}": frames for c in o.cameras}}


# -- picking a source --------------------------------------------------------------------------------
def _options(cls: type, options: Mapping[str, Any], what: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"{what} dataset_options: unknown keys {unknown}; expected some of {sorted(known)}")
    return cls(**options)


def open_source(spec: str | Path | EpisodeSource, options: Mapping[str, Any] | None = None) -> EpisodeSource:
    """The episode source a dataset spec names.

    spec: a directory of HDF5 episodes (also written `hdf5:DIR`), `rlds:DIR` (a TFDS/RLDS dataset
    directory; options: librobot_training.rlds.RLDSOptions), or `dummy` (options: DummyOptions).
    An EpisodeSource is returned as it is.
    """
    if isinstance(spec, EpisodeSource):
        return spec
    options = dict(options or {})
    text = str(spec)
    kind, sep, rest = text.partition(":")
    if text == "dummy":
        return DummySource(_options(DummyOptions, options, "dummy"))
    if sep and kind == "rlds":
        from librobot_training.rlds import RLDSOptions, RLDSSource

        return RLDSSource(rest, _options(RLDSOptions, options, "rlds"))
    path = rest if sep and kind == "hdf5" else text
    if options:
        raise ValueError(f"dataset_options {sorted(options)} given, but HDF5 dataset {path} takes none")
    return HDF5Source(path)


def describe_dataset(spec: str | Path | EpisodeSource, options: Mapping[str, Any] | None = None) -> DatasetInfo:
    """Joint and camera names, rate and dimensions of a dataset spec (see `open_source`)."""
    return open_source(spec, options).info


# -- samples -----------------------------------------------------------------------------------------
class EpisodeDataset(torch.utils.data.Dataset):
    """Frames of a source's episodes with their next `chunk_size` actions.

    source: an EpisodeSource or a dataset spec (`open_source`; a plain path is an HDF5 directory).
    episodes: indices into the source's episodes (None: all), e.g. to hold some out for evaluation.
    cache_in_memory: read every episode into RAM once (for datasets that fit); otherwise each sample
    reads one time slice per field (an HDF5 source keeps per-worker open files).
    history: observation steps per sample (see the module docstring).
    """

    def __init__(
        self,
        source: str | Path | EpisodeSource,
        chunk_size: int,
        camera_names: Sequence[str] | None = None,
        episodes: Sequence[int] | None = None,
        cache_in_memory: bool = False,
        history: int = 1,
    ) -> None:
        self.source = open_source(source)
        self.info = self.source.info
        self.chunk_size = int(chunk_size)
        if not (isinstance(history, int) and history >= 1):
            raise ValueError(f"history = {history!r}: expected an int >= 1 (observation steps per sample)")
        self.history = history
        self.camera_names = list(camera_names) if camera_names is not None else self.info.camera_names
        unknown = [c for c in self.camera_names if c not in self.info.camera_names]
        if unknown:
            raise ValueError(
                f"cameras {unknown} are not in the dataset {source}, which has {self.info.camera_names}"
            )
        self._fields = ["state", "action", *(f"images/{c}" for c in self.camera_names)]
        n = len(self.source)
        self.episode_indices = list(range(n)) if episodes is None else [int(i) for i in episodes]
        bad = [i for i in self.episode_indices if not 0 <= i < n]
        if bad:
            raise ValueError(f"episodes {bad} are out of range for the {n} episodes of {source}")
        self.episodes = [self.source.episode(i) for i in self.episode_indices]
        self._ends = np.cumsum([e.length for e in self.episodes])  # exclusive end index of each episode
        self._cache = (
            [self.source.read(i, self._fields) for i in self.episode_indices] if cache_in_memory else None
        )

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def _episode_fields(self, k: int) -> Mapping[str, Any]:
        """Fields of the k-th episode of this dataset: the RAM cache or the source's reader."""
        return self._cache[k] if self._cache is not None else self.source.open(self.episode_indices[k])

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} frames")
        k = int(np.searchsorted(self._ends, index, side="right"))
        t = index - (int(self._ends[k - 1]) if k else 0)
        length = self.episodes[k].length
        src = self._episode_fields(k)

        end = min(t + self.chunk_size, length)
        actions = np.asarray(src["action"][t:end], dtype=np.float32)  # (end - t, action_dim), a slice read
        n_pad = self.chunk_size - (end - t)
        actions = np.concatenate([actions, np.repeat(actions[-1:], n_pad, axis=0)])  # (chunk, action_dim)
        return {
            **self._observation(src, t, self.episodes[k].name),
            "actions": actions,
            "action_is_pad": np.arange(self.chunk_size) >= end - t,  # (chunk,)
            "instruction": self.episodes[k].instruction,
        }

    def _observation(self, src: Mapping[str, Any], t: int, name: str) -> dict[str, np.ndarray]:
        """images and state at frame t; with history T > 1 frames t - T + 1 .. t, read as one slice."""
        steps = np.arange(t - self.history + 1, t + 1)  # (T,) frame indices, negative before the start
        first = max(0, int(steps[0]))
        rows = np.maximum(steps, 0) - first  # (T,) into the slice [first, t]
        state = np.asarray(src["state"][first : t + 1], dtype=np.float32)[rows]  # (T, D)
        frames = [np.asarray(src[f"images/{c}"][first : t + 1]) for c in self.camera_names]  # (t+1-first, H, W, 3)
        if len({f.shape for f in frames}) != 1:
            raise ValueError(
                f"cameras {self.camera_names} of {name} have different image sizes "
                f"{[f.shape[1:] for f in frames]}; they are stacked into one array, so they must match"
            )
        images = np.stack(frames, axis=1)[rows]  # (T, N, H, W, 3)
        images = np.ascontiguousarray(images.transpose(0, 1, 4, 2, 3))  # (T, N, 3, H, W) uint8
        if self.history == 1:
            return {"images": images[0], "state": state[0]}
        return {"images": images, "state": state, "observation_is_pad": steps < 0}

    def compute_norm_stats(self) -> dict[str, NormStats]:
        """Mean/std/min/max of state and actions over every frame of these episodes."""
        arrays = [
            self._cache[k] if self._cache is not None else self.source.read(i, ["state", "action"])
            for k, i in enumerate(self.episode_indices)
        ]
        return {
            "state": NormStats.from_array(np.concatenate([a["state"] for a in arrays])),
            "actions": NormStats.from_array(np.concatenate([a["action"] for a in arrays])),
        }

    def close(self) -> None:
        self.source.close()
