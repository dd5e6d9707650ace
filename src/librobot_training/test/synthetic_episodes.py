"""Test helper: small HDF5 episode directories with the dummy source's content.

Import it from a test file with `sys.path.insert(0, str(Path(__file__).parent))` (pytest runs in
importlib mode, which does not put test directories on sys.path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import h5py

from librobot_training.datasets import DummyOptions, DummySource


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
    embodiment: str = "synthetic",
) -> list[Path]:
    """Write `n_episodes` episodes in the HDF5 layout; returns their paths. `embodiment` names the
    robot they claim to come from (a robot's name when a test rolls their policy out in its twin).

    The content is DummySource's: sinusoidal joints one period behind their command
    (qpos[t + 1] == action[t]) and a bright square whose column follows joint 0.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    options = DummyOptions(
        episodes=n_episodes, length=length, state_dim=state_dim, cameras=tuple(camera_names),
        image_size=tuple(image_shape), rate_hz=rate_hz, instruction=instruction, seed=seed,
    )
    source = DummySource(options)
    h, w = image_shape
    paths = []
    for e in range(n_episodes):
        episode = source.read(e, ["state", "action", *(f"images/{c}" for c in camera_names)])
        path = directory / f"episode_{e:04d}.hdf5"
        with h5py.File(path, "w") as f:
            f.attrs["joint_names"] = source.info.joint_names
            f.attrs["camera_names"] = list(camera_names)
            f.attrs["rate_hz"] = rate_hz
            f.attrs["instruction"] = instruction
            f.attrs["success"] = True
            f.attrs["embodiment"] = embodiment
            f.create_dataset("observations/qpos", data=episode["state"])
            f.create_dataset("action", data=episode["action"])
            for cam in camera_names:
                f.create_dataset(f"observations/images/{cam}", data=episode[f"images/{cam}"], chunks=(1, h, w, 3))
        paths.append(path)
    return paths
