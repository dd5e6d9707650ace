"""A framework's `sample_actions` as a graph with tensor inputs only (for ONNX and TorchScript export),
and that graph, exported to ONNX, running behind Policy (backend="onnxruntime").

The graph is `sample_actions` for a batch of one, with every step that stays in Python (the tokenizer,
the observation window, the noise draw) turned into an explicit input:

    images              (1, N, 3, H, W) float in [0, 1], (H, W) = config.image_size
                        (observation_history T > 1: (1, T, N, 3, H, W))
    state               (1, D) normalised                                   (T > 1: (1, T, D))
    observation_is_pad  (1, T) bool, True before the episode start          (T > 1 only)
    text_ids            (1, L) int64: the instruction's tokens               (frameworks that read text)
    text_mask           (1, L) bool, True on real tokens, right-padded to the longest prompt
    noise               (S, 1, k, A) standard normal: the S draws of a stochastic head, in order
    -> actions          (1, k, A) normalised

Float inputs and the output are in the graph's dtype (float32, float16 or bfloat16). Text frameworks
are fed their prompt padded to a fixed length L (the prompt of an instruction of max_text_tokens
tokens), so one graph serves every instruction; padded tokens are masked, as in a padded batch.

    graph = ExportGraph(model, config)               # an nn.Module: graph(*graph.example_inputs())
    graph.spec.inputs                                # names, shapes, dtypes of the inputs above
    graph.feeds(batch, generator)                    # a Policy batch -> the inputs, noise drawn fresh

What cannot be exported is refused by `not_exportable(model, config)` with the reason: Helix (its
System-2 latent is cached across calls), token sampling at a temperature > 0 (torch.multinomial).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from librobot_models.config import VLAConfig

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
ONNX_FILE = "model.onnx"  # Policy looks for it in the checkpoint directory, then for <dir>.onnx beside it


def sidecar_path(graph_file: str | Path) -> Path:
    """The JSON written next to an exported graph: model.onnx -> model.onnx.json."""
    graph_file = Path(graph_file)
    return graph_file.with_name(graph_file.name + ".json")


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # "float32", "float16", "bfloat16", "int64" or "bool"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class GraphSpec:
    """The inputs of an ExportGraph, in the order its forward takes them, and its output's shape."""

    inputs: tuple[InputSpec, ...]
    output_shape: tuple[int, ...]  # (1, k, A)
    dtype: str  # of the float inputs and of the output

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    def describe(self) -> str:
        return ", ".join(f"{i.name} {i.dtype}{list(i.shape)}" for i in self.inputs)


def not_exportable(model: nn.Module, config: VLAConfig) -> str | None:
    """Why `model` cannot become one graph, or None when it can."""
    if config.framework == "helix" or callable(getattr(model, "reset", None)):
        return (
            f"{config.framework}: the model keeps state across calls (Helix caches its System-2 VLM latent "
            "and refreshes it at slow_rate_hz); one graph per call would run the VLM on every call. "
            "Exporting it needs two graphs (System 2, System 1) with the cache in Python; not done"
        )
    head = getattr(model, "head", None)
    if getattr(getattr(head, "config", None), "temperature", 0) > 0:
        return (
            f"{config.framework}: its autoregressive head samples tokens at temperature "
            f"{head.config.temperature} (torch.multinomial, no exportable random op); only greedy "
            "decoding (temperature 0) is exported"
        )
    from librobot_models.frameworks import ACT
    from librobot_models.frameworks.common import HeadedFramework

    if not isinstance(model, (ACT, HeadedFramework)):
        return f"{config.framework}: {type(model).__name__} is neither ACT nor a HeadedFramework; no export recipe"
    if head is not None and head.noise_draws() and type(model).sample_actions is not HeadedFramework.sample_actions:
        return (f"{config.framework}: {type(model).__name__} overrides sample_actions around a stochastic head, "
                "so the graph could not take the noise as an input")
    return None


def _text_kind(model: nn.Module) -> str | None:
    """"vlm" (a VLM backbone tokenizes a prompt), "octo" (its own task tokenizer) or None (no text)."""
    from librobot_models.backbones import VLMBackbone

    if isinstance(getattr(model, "backbone", None), VLMBackbone):
        return "vlm"
    if callable(getattr(model, "text_tokens", None)):
        return "octo"
    return None


def _encode_ids(backbone: nn.Module, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
    """VLMBackbone.encode after its tokenizer: images (B, N, 3, H, W), ids (B, L), mask (B, L) -> VLMOutput.
    Its last lines repeated (the pooling); test_exported compares the two on every VLM framework."""
    from librobot_models.backbones import VLMOutput

    tokens = backbone.hidden_states(backbone.model_inputs(ids, mask, backbone.preprocess_images(images)))
    if backbone.config.pooling == "mean":
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)
    else:
        pooled = tokens[torch.arange(tokens.shape[0], device=tokens.device), mask.sum(1) - 1]
    return VLMOutput(tokens=tokens, mask=mask, pooled=pooled)


class ExportGraph(nn.Module):
    """`model.sample_actions` for a batch of one as forward(*inputs) -> actions (1, k, A); see the
    module docstring for the inputs. The model is used as is: cast it (and pass `dtype`) for fp16/bf16."""

    def __init__(self, model: nn.Module, config: VLAConfig, dtype: str = "float32") -> None:
        super().__init__()
        reason = not_exportable(model, config)
        if reason is not None:
            raise ValueError(reason)
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r}: expected one of {list(DTYPES)}")
        self.model = model.eval()
        self.config = config
        self.text_kind = _text_kind(model)
        head = getattr(model, "head", None)
        self.noise_draws = head.noise_draws() if head is not None else 0
        self.spec = self._spec(dtype)

    def _spec(self, dtype: str) -> GraphSpec:
        c = self.config
        T, N, (H, W) = c.observation_history, len(c.camera_names), c.image_size
        steps = (T,) if T > 1 else ()
        inputs = [
            InputSpec("images", (1, *steps, N, 3, H, W), dtype),
            InputSpec("state", (1, *steps, c.state_dim), dtype),
        ]
        if T > 1:
            inputs.append(InputSpec("observation_is_pad", (1, T), "bool"))
        if self.text_kind is not None:
            L = self.text_length()
            inputs += [InputSpec("text_ids", (1, L), "int64"), InputSpec("text_mask", (1, L), "bool")]
        if self.noise_draws:
            inputs.append(InputSpec("noise", (self.noise_draws, 1, c.chunk_size, c.action_dim), dtype))
        return GraphSpec(tuple(inputs), (1, c.chunk_size, c.action_dim), dtype)

    # -- the Python side: tokens, padding, noise ------------------------------------------------------
    def text_length(self) -> int:
        """L: the prompt length of an instruction of max_text_tokens tokens."""
        if self.text_kind == "octo":
            return self.config.max_text_tokens
        backbone = self.model.backbone
        filler = [backbone.pad_id] * backbone.config.max_text_tokens
        return len(backbone.prompt_ids(filler, len(self.config.camera_names)))

    def text_inputs(self, instruction: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The instruction as text_ids (1, L) int64 and text_mask (1, L) bool, as the model tokenizes it."""
        if self.text_kind == "octo":
            ids, pad = self.model.text_tokens([instruction], torch.device("cpu"))
            return ids.long(), ~pad
        backbone, L = self.model.backbone, self.text_length()
        tokens = backbone.tokenizer(
            [instruction], add_special_tokens=False, truncation=True, max_length=backbone.config.max_text_tokens
        )["input_ids"][0]
        row = backbone.prompt_ids(tokens, len(self.config.camera_names))
        ids = torch.full((1, L), backbone.pad_id, dtype=torch.long)
        mask = torch.zeros(1, L, dtype=torch.bool)
        ids[0, : len(row)], mask[0, : len(row)] = torch.tensor(row), True
        return ids, mask

    def feeds(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """A batch of one in the VLAConfig contract (Policy's) -> the graph's inputs by name, on the CPU,
        noise drawn from `generator` (the global RNG when None)."""
        dtype = DTYPES[self.spec.dtype]
        images, state = batch["images"], batch["state"]
        if images.shape[0] != 1:
            raise ValueError(f"an exported graph takes a batch of one; images have shape {tuple(images.shape)}")
        out = {"images": images.detach().cpu().to(dtype), "state": state.detach().cpu().to(dtype)}
        if "observation_is_pad" in self.spec.names:
            out["observation_is_pad"] = batch["observation_is_pad"].detach().cpu().bool()
        if self.text_kind is not None:
            text = batch.get("instruction") or [""]
            out["text_ids"], out["text_mask"] = self.text_inputs(text[0])
        if self.noise_draws:
            shape = next(i.shape for i in self.spec.inputs if i.name == "noise")
            out["noise"] = torch.randn(shape, generator=generator).to(dtype)
        return out

    def example_inputs(self, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Random inputs of the spec (images in [0, 1], the default instruction's tokens)."""
        g = torch.Generator().manual_seed(seed)
        dtype = DTYPES[self.spec.dtype]
        shapes = {i.name: i.shape for i in self.spec.inputs}
        batch = {
            "images": torch.rand(shapes["images"], generator=g),
            "state": torch.randn(shapes["state"], generator=g),
            "instruction": ["pick up the cube"],
        }
        if "observation_is_pad" in shapes:
            batch["observation_is_pad"] = torch.arange(shapes["observation_is_pad"][1])[None] == 0
        feeds = self.feeds(batch, g)
        return tuple(feeds[name].to(dtype) if feeds[name].is_floating_point() else feeds[name]
                     for name in self.spec.names)

    # -- the graph ------------------------------------------------------------------------------------
    @contextmanager
    def _text_from(self, named: dict[str, torch.Tensor]) -> Iterator[None]:
        """Inside forward: the model reads the instruction from text_ids / text_mask, not the tokenizer."""
        if self.text_kind is None:
            yield
            return
        ids, mask = named["text_ids"], named["text_mask"]
        if self.text_kind == "octo":
            target, name = self.model, "text_tokens"
            replacement = lambda text, device: (ids, ~mask)  # noqa: E731
        else:
            target, name = self.model.backbone, "encode"
            replacement = lambda images, text: _encode_ids(target, images, ids, mask)  # noqa: E731
        setattr(target, name, replacement)  # an instance attribute hides the method for this call
        try:
            yield
        finally:
            delattr(target, name)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        named = dict(zip(self.spec.names, inputs))
        batch = {"images": named["images"], "state": named["state"]}
        if "observation_is_pad" in named:
            batch["observation_is_pad"] = named["observation_is_pad"]
        if self.text_kind is not None:
            batch["instruction"] = [""]  # read from text_ids / text_mask instead (see _text_from)
        with torch.no_grad(), self._text_from(named):
            if "noise" in named:  # a HeadedFramework with a stochastic head: its sample_actions, noise given
                return self.model.head.sample(self.model.conditioning(batch), noise=named["noise"])
            return self.model.sample_actions(batch)


def find_onnx(checkpoint: str | Path, onnx_file: str | Path | None = None) -> Path:
    """`onnx_file`, else <checkpoint>/model.onnx, else <checkpoint>.onnx beside the directory."""
    if onnx_file is not None:
        path = Path(onnx_file)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file {path} does not exist")
        return path
    checkpoint = Path(checkpoint)
    candidates = (checkpoint / ONNX_FILE, checkpoint.with_name(checkpoint.name + ".onnx"))
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no exported ONNX graph for checkpoint {checkpoint}: looked for {' and '.join(map(str, candidates))}; "
        f"export one with python -m librobot_training.export --checkpoint {checkpoint} --format onnx "
        f"--output {candidates[0]}"
    )


_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(bfloat16)": "bfloat16",
              "tensor(int64)": "int64", "tensor(bool)": "bool"}


class OnnxRuntimeModel:
    """Stands in for the torch model inside Policy: `sample_actions(batch)` runs the exported ONNX graph
    in onnxruntime (CPU) on the inputs ExportGraph.feeds makes, with fresh noise per call from the
    global torch RNG. No `head`, so Policy.supports_inpainting is False (RTC's guidance differentiates
    through the network)."""

    def __init__(
        self, path: str | Path, model: nn.Module, config: VLAConfig, checkpoint_id: str | None = None
    ) -> None:
        """path: the .onnx file (its sidecar beside it); model, config: the checkpoint's, for the Python
        side (tokenizer, input layout); checkpoint_id: refuse a graph exported from another checkpoint."""
        import onnxruntime as ort

        self.path = Path(path)
        sidecar = sidecar_path(self.path)
        if not sidecar.is_file():
            raise FileNotFoundError(f"{sidecar} is missing: the export writes it next to {self.path.name}")
        self.sidecar = json.loads(sidecar.read_text())
        if checkpoint_id is not None and self.sidecar.get("checkpoint_id") != checkpoint_id:
            raise ValueError(
                f"{self.path} was exported from checkpoint {self.sidecar.get('checkpoint_id')!r}, not from "
                f"this one ({checkpoint_id!r}): export it again"
            )
        dtype = self.sidecar.get("dtype", "float32")
        if dtype not in DTYPES:
            raise ValueError(f"{sidecar}: dtype {dtype!r}, expected one of {list(DTYPES)}")
        self.graph = graph = ExportGraph(model, config, dtype)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = torch.get_num_threads()  # as many as torch (OMP_NUM_THREADS)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's own types: INVALID_PROTOBUF, NOT_IMPLEMENTED, FAIL
            lines = str(err).strip().splitlines() or [type(err).__name__]
            raise ValueError(f"onnxruntime cannot load {self.path}: {lines[0]}") from None
        found = tuple((i.name, tuple(i.shape), _ORT_TYPES.get(i.type, i.type)) for i in self.session.get_inputs())
        expected = tuple((i.name, i.shape, i.dtype) for i in graph.spec.inputs)
        if found != expected:
            describe = lambda items: ", ".join(f"{n} {t}{list(s)}" for n, s, t in items)  # noqa: E731
            raise ValueError(
                f"{self.path} does not match checkpoint ({graph.config.framework}): its inputs are "
                f"[{describe(found)}], expected [{describe(expected)}]"
            )
        self.device = torch.device("cpu")

    def sample_actions(self, batch: dict[str, Any]) -> torch.Tensor:
        """(1, k, A) float32 normalised actions on the Policy's device."""
        feeds = {name: _to_numpy(t) for name, t in self.graph.feeds(batch).items()}
        (actions,) = self.session.run(None, feeds)
        return torch.from_numpy(np.asarray(actions, dtype=np.float32)).to(self.device)

    def to(self, device: str | torch.device) -> OnnxRuntimeModel:
        """Where the actions go; the graph itself runs on onnxruntime's CPU provider."""
        self.device = torch.device(device)
        return self

    def eval(self) -> OnnxRuntimeModel:
        return self


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: onnxruntime takes ml_dtypes' when present
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()
