"""HDF5 episode datasets (ALOHA-compatible layout) for training.

One file per episode:
    attrs:  joint_names, camera_names, rate_hz, instruction, success (embodiment optional)
    /observations/qpos            (T, D) float32   joint positions, robot units
    /observations/images/<cam>    (T, H, W, 3) uint8 RGB
    /action                       (T, D) float32   commanded joint positions

Sample i is frame t of some episode:
    images          (N_cam, 3, H, W) uint8          cameras in the requested order, at t
    state           (state_dim,) float32            qpos[t]
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

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

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


def episode_paths(root: str | Path) -> list[Path]:
    """The episode files of a dataset directory, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory {root} does not exist")
    paths = sorted(p for p in root.iterdir() if p.suffix in EPISODE_SUFFIXES and p.is_file())
    if not paths:
        raise FileNotFoundError(f"dataset directory {root} holds no episodes (*.hdf5 or *.h5 files)")
    return paths


@dataclass(frozen=True)
class DatasetInfo:
    """What the model config needs from a dataset, read from its first episode."""

    joint_names: list[str]
    camera_names: list[str]
    rate_hz: float
    state_dim: int
    action_dim: int
    embodiment: str | None


def describe_dataset(root: str | Path) -> DatasetInfo:
    path = episode_paths(root)[0]
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


@dataclass(frozen=True)
class Episode:
    path: Path
    length: int
    instruction: str


class EpisodeDataset(torch.utils.data.Dataset):
    """Frames of HDF5 episodes with their next `chunk_size` actions.

    episodes: indices into the sorted episode files (None: all), e.g. to hold some out for evaluation.
    cache_in_memory: read every episode into RAM once (for datasets that fit); otherwise each worker
    opens files lazily and reads one slice per dataset per sample (h5py fancy indexing is slow).
    history: observation steps per sample (see the module docstring).
    """

    def __init__(
        self,
        root: str | Path,
        chunk_size: int,
        camera_names: Sequence[str] | None = None,
        episodes: Sequence[int] | None = None,
        cache_in_memory: bool = False,
        history: int = 1,
    ) -> None:
        self.root = Path(root)
        self.info = describe_dataset(root)
        self.chunk_size = int(chunk_size)
        if not (isinstance(history, int) and history >= 1):
            raise ValueError(f"history = {history!r}: expected an int >= 1 (observation steps per sample)")
        self.history = history
        self.camera_names = list(camera_names) if camera_names is not None else self.info.camera_names
        unknown = [c for c in self.camera_names if c not in self.info.camera_names]
        if unknown:
            raise ValueError(
                f"cameras {unknown} are not in the dataset {root}, which has {self.info.camera_names}"
            )
        self._keys = ["observations/qpos", "action", *(f"observations/images/{c}" for c in self.camera_names)]
        paths = episode_paths(root)
        if episodes is not None:
            paths = [paths[i] for i in episodes]
        self.episodes = [self._check_episode(p) for p in paths]
        self._ends = np.cumsum([e.length for e in self.episodes])  # exclusive end index of each episode
        self._files: dict[int, h5py.File] = {}
        self._pid = os.getpid()
        self._cache = (
            [self._read(i, self._keys) for i in range(len(self.episodes))] if cache_in_memory else None
        )

    def _check_episode(self, path: Path) -> Episode:
        with h5py.File(path, "r") as f:
            missing = [k for k in self._keys if k not in f]
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
            shapes = {c: f[f"observations/images/{c}"].shape for c in self.camera_names}
            same_size = len({s[1:] for s in shapes.values()}) == 1  # cameras are stacked into one array
            if not same_size or any(len(s) != 4 or s[0] != length or s[3] != 3 for s in shapes.values()):
                raise ValueError(f"episode {path}: camera arrays {shapes} must all be ({length}, H, W, 3)")
            return Episode(path, length, _str(f.attrs.get("instruction", "")))

    # -- reading -----------------------------------------------------------------------------------
    def _read(self, episode: int, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Whole arrays of one episode (contiguous reads are fast; only index lists are slow)."""
        with h5py.File(self.episodes[episode].path, "r") as f:
            return {key: f[key][()] for key in keys}

    def _source(self, episode: int) -> Any:
        """Something indexable by dataset path: the RAM cache or this process's open file."""
        if self._cache is not None:
            return self._cache[episode]
        if self._pid != os.getpid():  # a forked DataLoader worker must not share the parent's handles
            self._files, self._pid = {}, os.getpid()
        if episode not in self._files:
            if len(self._files) >= _MAX_OPEN_FILES:
                self._files.pop(next(iter(self._files))).close()
            self._files[episode] = h5py.File(self.episodes[episode].path, "r")
        return self._files[episode]

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} frames")
        episode = int(np.searchsorted(self._ends, index, side="right"))
        t = index - (int(self._ends[episode - 1]) if episode else 0)
        length = self.episodes[episode].length
        src = self._source(episode)

        end = min(t + self.chunk_size, length)
        actions = np.asarray(src["action"][t:end], dtype=np.float32)  # (end - t, action_dim), a slice read
        n_pad = self.chunk_size - (end - t)
        actions = np.concatenate([actions, np.repeat(actions[-1:], n_pad, axis=0)])  # (chunk, action_dim)
        return {
            **self._observation(src, t),
            "actions": actions,
            "action_is_pad": np.arange(self.chunk_size) >= end - t,  # (chunk,)
            "instruction": self.episodes[episode].instruction,
        }

    def _observation(self, src: Any, t: int) -> dict[str, np.ndarray]:
        """images and state at frame t; with history T > 1 frames t - T + 1 .. t, read as one slice."""
        steps = np.arange(t - self.history + 1, t + 1)  # (T,) frame indices, negative before the start
        first = max(0, int(steps[0]))
        rows = np.maximum(steps, 0) - first  # (T,) into the slice [first, t]
        state = np.asarray(src["observations/qpos"][first : t + 1], dtype=np.float32)[rows]  # (T, D)
        images = np.stack(
            [src[f"observations/images/{c}"][first : t + 1] for c in self.camera_names], axis=1
        )[rows]  # (T, N, H, W, 3)
        images = np.ascontiguousarray(images.transpose(0, 1, 4, 2, 3))  # (T, N, 3, H, W) uint8
        if self.history == 1:
            return {"images": images[0], "state": state[0]}
        return {"images": images, "state": state, "observation_is_pad": steps < 0}

    def compute_norm_stats(self) -> dict[str, NormStats]:
        """Mean/std/min/max of state and actions over every frame of these episodes."""
        keys = ["observations/qpos", "action"]
        arrays = [
            self._cache[i] if self._cache is not None else self._read(i, keys)
            for i in range(len(self.episodes))
        ]
        return {
            "state": NormStats.from_array(np.concatenate([a["observations/qpos"] for a in arrays])),
            "actions": NormStats.from_array(np.concatenate([a["action"] for a in arrays])),
        }

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def __getstate__(self) -> dict:
        """Open HDF5 handles do not pickle (spawned workers): they reopen lazily."""
        return {**self.__dict__, "_files": {}}


def make_synthetic_episodes(
    directory: str | Path,
    n_episodes: int = 2,
    length: int = 30,
    state_dim: int = 6,
    camera_names: Sequence[str] = ("front",),
    image_shape: tuple[int, int] = (48, 64),
    rate_hz: float = 10.0,
    instruction: str = "reach the target",
    seed: int = 0,
) -> list[Path]:
    """Write `n_episodes` small episodes in the layout above (for tests and demos); returns their paths.

    Each joint follows a sinusoid with a per-episode phase. As everywhere, action[t] is the command
    in force at sample t; these joints reach it one period later (qpos[t + 1] == action[t]), as a
    position-controlled arm lags its command. A bright square whose column follows joint 0 makes
    the images informative.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = image_shape
    t = np.arange(length + 1)[:, None] / rate_hz  # (T + 1, 1) seconds
    paths = []
    for e in range(n_episodes):
        phase = rng.uniform(0, 2 * np.pi, size=(1, state_dim))
        trajectory = (0.5 * np.sin(2 * np.pi * 0.2 * t + phase)).astype(np.float32)  # (T + 1, D)
        qpos, action = trajectory[:-1], trajectory[1:]  # the joints lag the command by one period
        images = np.full((length, h, w, 3), 40, dtype=np.uint8)
        columns = ((qpos[:, 0] + 0.5) * (w - 8)).astype(int)  # joint 0 in [-0.5, 0.5] -> column
        for i, c in enumerate(columns):
            images[i, h // 2 - 4 : h // 2 + 4, c : c + 8] = 230
        path = directory / f"episode_{e:04d}.hdf5"
        with h5py.File(path, "w") as f:
            f.attrs["joint_names"] = [f"joint_{j}" for j in range(state_dim)]
            f.attrs["camera_names"] = list(camera_names)
            f.attrs["rate_hz"] = rate_hz
            f.attrs["instruction"] = instruction
            f.attrs["success"] = True
            f.attrs["embodiment"] = "synthetic"
            f.create_dataset("observations/qpos", data=qpos)
            f.create_dataset("action", data=action)
            for cam in camera_names:
                f.create_dataset(f"observations/images/{cam}", data=images, chunks=(1, h, w, 3))
        paths.append(path)
    return paths
