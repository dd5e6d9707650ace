"""Policy: one checkpoint behind `infer(obs) -> {"actions": chunk}` and `reset()`.

The ROS node, simulation evaluation, benchmarks and the policy server all call this. Observations
and actions are numpy in robot units; normalisation, tensors and devices stay inside:

    policy = Policy.from_checkpoint("runs/act_so100")
    policy.reset()                                    # at every episode start
    out = policy.infer({
        "images": {"front": rgb},                     # (H, W, 3) uint8 RGB, any size
        "state": qpos,                                # (state_dim,) float, robot units
        "instruction": "pick up the cube",            # optional
        "time_s": 12.3,                               # optional: the observation time (Helix's rates)
    })
    out["actions"]                                    # (chunk_size, action_dim) float32, robot units
    policy.observe(obs)                               # a control step without inference (see below)

A model with a history window (config.observation_history T > 1, e.g. Octo) is fed the last T
control steps, as in training. `infer` adds its observation to that window; a caller that replans
every k > 1 control steps also passes the k - 1 observations in between to `observe` (for other
models `observe` does nothing). Steps before the episode start are padded.

Pre- and post-processing are small frozen transforms (dict -> dict) composed in a list, so a robot
adapter or a new framework adds a step instead of editing a long method.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from librobot_models.checkpoint import checkpoint_id as compute_checkpoint_id
from librobot_models.checkpoint import load_checkpoint
from librobot_models.config import VLAConfig
from librobot_models.heads.guidance import Inpainting
from librobot_models.layers.vision import resize_images
from librobot_models.normalization import NormStats

Transform = Callable[[dict], dict]
BACKENDS = ("torch", "onnxruntime")  # what runs the model call (from_checkpoint)


def compose(transforms: Sequence[Transform]) -> Transform:
    def apply(data: dict) -> dict:
        for transform in transforms:
            data = transform(data)
        return data

    return apply


# -- transforms --------------------------------------------------------------------------------
def _describe(value: Any) -> str:
    return (
        f"a {value.dtype} array of shape {value.shape}" if isinstance(value, np.ndarray) else f"{value!r:.80}"
    )


@dataclass(frozen=True)
class CheckObservation:
    """Reject observations the model cannot use, naming the bad value and what was expected."""

    camera_names: tuple[str, ...]
    state_dim: int

    def __call__(self, obs: dict) -> dict:
        if not isinstance(obs, Mapping):
            raise ValueError(f"observation is {_describe(obs)}: expected a dict with 'images' and 'state'")
        images = obs.get("images")
        if not isinstance(images, Mapping):
            raise ValueError(f"obs['images'] is {_describe(images)}: expected a dict camera -> image")
        for name in self.camera_names:
            if name not in images:
                raise ValueError(f"obs['images'] lacks camera {name!r}; expected {list(self.camera_names)}")
            image = images[name]
            if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape[2:] == (3,)):
                raise ValueError(
                    f"obs['images'][{name!r}] is {_describe(image)}: expected an (H, W, 3) uint8 RGB array"
                )

        state = obs.get("state")
        if not (isinstance(state, (np.ndarray, list, tuple)) and np.asarray(state).dtype.kind in "fiu"):
            raise ValueError(f"obs['state'] is {_describe(state)}: expected ({self.state_dim},) floats")
        state = np.asarray(state, dtype=np.float32)
        if state.shape != (self.state_dim,):
            raise ValueError(f"obs['state'] has shape {state.shape}: expected ({self.state_dim},)")
        if not np.all(np.isfinite(state)):
            raise ValueError(f"obs['state'] = {state} has non-finite values: expected finite robot units")

        instruction = obs.get("instruction")
        if instruction is not None and not isinstance(instruction, str):
            raise ValueError(f"obs['instruction'] is {_describe(instruction)}: expected a str or nothing")
        time_s = obs.get("time_s")
        if time_s is not None and not (isinstance(time_s, (int, float, np.number)) and np.isfinite(time_s)):
            raise ValueError(f"obs['time_s'] is {_describe(time_s)}: expected a finite number of seconds or nothing")
        return {**obs, "state": state}


@dataclass(frozen=True)
class Normalize:
    """Standardise the keys present in `stats` (numpy or torch values)."""

    stats: Mapping[str, NormStats]

    def __call__(self, data: dict) -> dict:
        return {**data, **{key: s.normalize(data[key]) for key, s in self.stats.items() if key in data}}


@dataclass(frozen=True)
class Unnormalize:
    """Back to robot units for the keys present in `stats`."""

    stats: Mapping[str, NormStats]

    def __call__(self, data: dict) -> dict:
        return {**data, **{key: s.unnormalize(data[key]) for key, s in self.stats.items() if key in data}}


def _to_chw_float(image: np.ndarray, device: str) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1]."""
    pixels = torch.from_numpy(np.require(image, requirements="W"))  # copies read-only frames
    return pixels.to(device).permute(2, 0, 1).float() / 255.0


@dataclass(frozen=True)
class ToModelInputs:
    """numpy observation -> batch of one in the model contract, on `device`."""

    camera_names: tuple[str, ...]
    image_size: tuple[int, int]
    device: str

    def __call__(self, obs: dict) -> dict:
        images = [
            resize_images(_to_chw_float(obs["images"][name], self.device), self.image_size)  # (3, H', W')
            for name in self.camera_names
        ]
        batch = {
            "images": torch.stack(images)[None],  # (1, N, 3, H', W')
            "state": torch.from_numpy(obs["state"]).to(self.device)[None],  # (1, state_dim)
        }
        if obs.get("instruction") is not None:
            batch["instruction"] = [obs["instruction"]]
        if obs.get("time_s") is not None:
            batch["time_s"] = float(obs["time_s"])
        return batch


def actions_to_numpy(out: dict) -> dict:
    """(1, k, action_dim) tensor -> (k, action_dim) float32 numpy."""
    return {**out, "actions": out["actions"][0].float().cpu().numpy()}


class ObservationHistory:
    """The model inputs of the last `steps` control steps, as one window of the batch contract:
    images (1, T, N, 3, H, W), state (1, T, D), observation_is_pad (1, T), zeros where padded."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self._batches: deque[dict] = deque(maxlen=steps)

    def clear(self) -> None:
        self._batches.clear()

    def append(self, batch: dict) -> None:
        self._batches.append(batch)

    def window(self) -> dict:
        current = self._batches[-1]
        missing = self.steps - len(self._batches)

        def stack(key: str) -> torch.Tensor:
            pad = [torch.zeros_like(current[key])] * missing
            return torch.stack(pad + [b[key] for b in self._batches], dim=1)

        is_pad = torch.arange(self.steps, device=current["state"].device) < missing
        return {**current, "images": stack("images"), "state": stack("state"), "observation_is_pad": is_pad[None]}


class TemporalEnsembler:
    """ACT's temporal ensembling, extended to the whole chunk.

    Call once per control step with the newest chunk (k, A). Row j of the result is the weighted
    mean of every kept chunk's prediction for step t + j, the chunk predicted `age` calls ago
    weighing exp(coeff * age) (older predictions count more, as in ACT's exp(-m * i) with i = 0 the
    oldest); row 0 is exactly ACT's ensembled action.
    """

    def __init__(self, coeff: float, chunk_size: int) -> None:
        self.coeff = coeff
        self.chunks: deque[np.ndarray] = deque(maxlen=chunk_size)

    def reset(self) -> None:
        self.chunks.clear()

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        self.chunks.append(chunk)
        k = chunk.shape[0]
        total = np.zeros_like(chunk, dtype=np.float64)  # (k, A)
        weight = np.zeros((k, 1))  # (k, 1)
        for age, past in enumerate(reversed(self.chunks)):  # age 0: the chunk just predicted
            w = np.exp(self.coeff * age)
            total[: k - age] += w * past[age:]
            weight[: k - age] += w
        return (total / weight).astype(np.float32)


# -- policy ------------------------------------------------------------------------------------
class Policy:
    def __init__(
        self,
        model: torch.nn.Module,
        config: VLAConfig,
        norm_stats: Mapping[str, NormStats],
        metadata: Mapping[str, Any] | None = None,
        checkpoint_id: str | None = None,
        device: str = "cpu",
    ) -> None:
        for key, dim in (("state", config.state_dim), ("actions", config.action_dim)):
            if key not in norm_stats or norm_stats[key].dim != dim:
                found = norm_stats[key].dim if key in norm_stats else "none"
                raise ValueError(f"norm_stats[{key!r}] has dimension {found}: expected {dim}")
        self.model = model.to(device).eval()
        self.config = config
        self._action_stats = norm_stats["actions"]
        self.metadata = dict(metadata or {})
        self._checkpoint_id = checkpoint_id
        self.input_transforms: list[Transform] = [
            CheckObservation(tuple(config.camera_names), config.state_dim),
            Normalize({"state": norm_stats["state"]}),
            ToModelInputs(tuple(config.camera_names), tuple(config.image_size), str(device)),
        ]
        self.output_transforms: list[Transform] = [
            actions_to_numpy,
            Unnormalize({"actions": norm_stats["actions"]}),
        ]
        self._preprocess = compose(self.input_transforms)  # lists stay editable: compose reads them per call
        self._postprocess = compose(self.output_transforms)
        coeff = getattr(config, "temporal_ensemble_coeff", None)
        self.ensembler = None if coeff is None else TemporalEnsembler(coeff, config.chunk_size)
        steps = config.observation_history
        self.history = ObservationHistory(steps) if steps > 1 else None

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "cpu", backend: str = "torch", onnx_file: str | Path | None = None
    ) -> Policy:
        """backend "torch": the checkpoint's model; "onnxruntime": its exported ONNX graph runs the model
        call (`onnx_file`, by default <path>/model.onnx or <path>.onnx beside the directory; see
        librobot_models.exported), with the same transforms around it. The torch model is still loaded
        for the Python side of the graph's inputs (the tokenizer) and to check the file against it."""
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: expected one of {list(BACKENDS)}")
        model, config, norm_stats, metadata = load_checkpoint(path, device=device)
        checkpoint_id = compute_checkpoint_id(path)
        if backend == "onnxruntime":
            from librobot_models.exported import OnnxRuntimeModel, find_onnx  # onnxruntime only when asked

            model = OnnxRuntimeModel(find_onnx(path, onnx_file), model, config, checkpoint_id)
        return cls(model, config, norm_stats, metadata, checkpoint_id, device)

    def infer(self, obs: dict, inpaint: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
        """{"images": {cam: (H, W, 3) uint8}, "state": (state_dim,), "instruction"?: str}
        -> {"actions": (chunk_size, action_dim) float32 in robot units}.

        `inpaint` = (targets (chunk_size, action_dim) in robot units, weights (chunk_size,)):
        sample a chunk that agrees with the targets where the weights say so (RTC's guidance,
        from ChunkExecutor.inpainting); only for models whose `supports_inpainting`."""
        batch = self._preprocess(obs)
        if self.history is not None:
            self.history.append(batch)
            batch = self.history.window()
        if inpaint is not None:
            if not self.supports_inpainting:
                raise ValueError(f"{self.framework}: its action head cannot inpaint a chunk (RTC "
                                 "guidance needs a flow-matching, DDPM/DDIM or EDM head, run by torch)")
            with torch.no_grad():  # the guidance differentiates through the network: no inference_mode
                actions = self.model.sample_actions(batch, inpaint=self._inpainting(*inpaint))
        else:
            with torch.inference_mode():
                actions = self.model.sample_actions(batch)  # (1, k, action_dim), normalised
        out = self._postprocess({"actions": actions})
        if self.ensembler is not None:
            out["actions"] = self.ensembler(out["actions"])
        return out

    def _inpainting(self, targets: np.ndarray, weights: np.ndarray) -> Inpainting:
        targets = np.asarray(targets, dtype=np.float32)
        expected = (self.chunk_size, self.action_dim)
        if targets.shape != expected or np.shape(weights) != (self.chunk_size,):
            raise ValueError(f"inpainting targets {targets.shape} and weights {np.shape(weights)}: "
                             f"expected {expected} and ({self.chunk_size},)")
        normalised = self._action_stats.normalize(targets)
        device = next(self.model.parameters()).device
        return Inpainting(torch.as_tensor(normalised, dtype=torch.float32, device=device)[None],
                          torch.as_tensor(np.asarray(weights), dtype=torch.float32, device=device))

    @property
    def supports_inpainting(self) -> bool:
        """The model samples its chunks with a head that takes RTC's guidance (flow matching); never
        with backend "onnxruntime" (the guidance differentiates through the network)."""
        head = getattr(self.model, "head", None)
        return bool(getattr(head, "supports_inpainting", False))

    def observe(self, obs: dict) -> None:
        """A control step without inference, kept for the model's history window (if it has one)."""
        if self.history is not None:
            self.history.append(self._preprocess(obs))

    def reset(self) -> None:
        """Forget per-episode state: the observation window, the temporal ensembling history, and the
        model's own when it keeps some between calls (a `reset()` method: Helix's cached latent)."""
        if self.history is not None:
            self.history.clear()
        if self.ensembler is not None:
            self.ensembler.reset()
        model_reset = getattr(self.model, "reset", None)
        if callable(model_reset):
            model_reset()

    # -- what the node and tools need to know ------------------------------------------------------
    @property
    def framework(self) -> str:
        return self.config.framework

    @property
    def checkpoint_id(self) -> str | None:
        return self._checkpoint_id

    @property
    def camera_names(self) -> list[str]:
        return list(self.config.camera_names)

    @property
    def chunk_size(self) -> int:
        return self.config.chunk_size

    @property
    def action_dim(self) -> int:
        return self.config.action_dim

    @property
    def observation_history(self) -> int:
        """Control steps the model sees per inference (see observe)."""
        return self.config.observation_history

    @property
    def joint_names(self) -> list[str] | None:
        return self.metadata.get("joint_names")

    @property
    def rate_hz(self) -> float | None:
        return self.metadata.get("rate_hz")
