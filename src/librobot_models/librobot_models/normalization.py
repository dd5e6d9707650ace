"""Per-key normalisation statistics ("state", "actions") that travel with every checkpoint.

    stats = NormStats.from_array(qpos)          # qpos: (N, D) in robot units
    z = stats.normalize(qpos)                   # (x - mean) / max(std, eps); numpy or torch
    qpos_again = stats.unnormalize(z)
    text = norm_stats_to_json({"state": stats}) # and norm_stats_from_json(text)

min and max are kept for frameworks that scale to [-1, 1] instead of standardising.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping, TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class NormStats:
    mean: np.ndarray  # (D,) float32
    std: np.ndarray  # (D,)
    min: np.ndarray  # (D,)
    max: np.ndarray  # (D,)
    eps: float = 1e-3  # std floor, so constant dimensions (a locked joint) do not blow up

    def __post_init__(self) -> None:
        arrays = {}
        for name in ("mean", "std", "min", "max"):
            value = np.asarray(getattr(self, name), dtype=np.float32)
            if value.ndim != 1 or not np.all(np.isfinite(value)):
                raise ValueError(f"NormStats.{name} = {value!r} is invalid: expected a finite 1-D array")
            arrays[name] = value
        if len({a.shape for a in arrays.values()}) != 1:
            raise ValueError(f"NormStats arrays differ in size: { {k: a.shape for k, a in arrays.items()} }")
        if np.any(arrays["std"] < 0) or not self.eps > 0:
            raise ValueError(f"NormStats: std {arrays['std']} must be >= 0 and eps {self.eps} > 0")
        for name, value in arrays.items():
            object.__setattr__(self, name, value)

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    @classmethod
    def from_array(cls, values: np.ndarray, eps: float = 1e-3) -> NormStats:
        """Statistics over all rows of `values` (N, D) (any leading shape is flattened)."""
        values = np.asarray(values, dtype=np.float64)
        values = values.reshape(-1, values.shape[-1])  # (N, D)
        if values.shape[0] == 0:
            raise ValueError("cannot compute normalisation statistics from zero samples")
        return cls(values.mean(0), values.std(0), values.min(0), values.max(0), eps)

    def _params(self, like: ArrayT) -> tuple[ArrayT, ArrayT]:
        scale = np.maximum(self.std, self.eps)
        if isinstance(like, torch.Tensor):
            to = dict(device=like.device, dtype=like.dtype)
            return torch.as_tensor(self.mean).to(**to), torch.as_tensor(scale).to(**to)
        return self.mean.astype(like.dtype, copy=False), scale.astype(like.dtype, copy=False)

    def normalize(self, x: ArrayT) -> ArrayT:
        """(..., D) robot units -> zero mean, unit variance."""
        mean, scale = self._params(x)
        return (x - mean) / scale

    def unnormalize(self, x: ArrayT) -> ArrayT:
        """Inverse of normalize: (..., D) -> robot units."""
        mean, scale = self._params(x)
        return x * scale + mean

    def to_dict(self) -> dict:
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "min": self.min.tolist(),
            "max": self.max.tolist(),
            "eps": self.eps,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> NormStats:
        required, optional = {"mean", "std", "min", "max"}, {"eps"}
        if not required <= set(data) <= required | optional:
            raise ValueError(
                f"NormStats keys {sorted(data)} are invalid: expected {sorted(required)} and optionally 'eps'"
            )
        return cls(**data)


def norm_stats_to_json(stats: Mapping[str, NormStats]) -> str:
    return json.dumps({key: s.to_dict() for key, s in stats.items()}, indent=2)


def norm_stats_from_json(text: str) -> dict[str, NormStats]:
    return {key: NormStats.from_dict(value) for key, value in json.loads(text).items()}
