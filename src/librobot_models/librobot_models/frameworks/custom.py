"""A template for adding a framework: a small, working policy to copy, with any registered head.

    images --ImageTokenizer (conv, 2D positions, camera embeddings)--> tokens (B, N_cam * h * w, dim)
    state  --MLP--> pooled (B, dim)
    Conditioning(tokens, pooled) --head chosen by name ("ddim", "rectified_flow", "mlp_oft", ...)--> chunk

    model = create_vla("custom", head="rectified_flow", head_config={"n_sample_steps": 5})

Adding a framework, step by step (this file is the worked example):
1. A config: a frozen dataclass deriving from VLAConfig (inputs/outputs already there) with your
   hyper-parameters, grouped and commented; `validate()` calls `self.check(name, ok, expected)` for
   each field so a bad value is reported with what was expected. Configs are plain data: no paths,
   no I/O (pretrained weights are an argument of `create`, see frameworks/common.py).
2. Register it: `@register_vla("my_vla", aliases=("my-vla",))` above the dataclass. `create()` builds
   the module; `get_vla_config("my_vla", chunk_size=10)` and the trainer (`framework: my_vla`) find it.
3. The module implements the contract `compute_loss(batch) -> (loss, logs)` and
   `sample_actions(obs) -> (B, chunk_size, action_dim)` on the batch of VLAConfig's docstring.
   Compose blocks from layers/ (attention, transformers, encoders, fusion, vision) and a head from
   heads/; deriving from HeadedFramework (below) leaves only `conditioning(batch)` to write.
   Put a pretrained or vision part under the attribute `backbone` (it gets train.lr_backbone).
   A model that keeps state between calls (a cache, an observation window) defines `reset()`.
4. Test it: src/librobot_models/test/test_frameworks.py runs every registered framework through
   build, loss, gradients, sampling, checkpoint round trip and Policy.infer; add its own checks there.
5. Outside this repository, publish it as a plugin through the entry-point group "librobot.frameworks",
   e.g. in the plugin's setup.py or pyproject.toml:
       entry_points={"librobot.frameworks": ["my_vla = my_package.my_vla"]}
   The module is imported on the first registry lookup and registers itself with @register_vla (or
   the entry point names the config class, registered under the entry-point name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from librobot_models.config import VLAConfig, builds
from librobot_models.frameworks.common import HeadedFramework, check_positive_ints, check_vision_channels
from librobot_models.heads import Conditioning, HeadConfig, head_config
from librobot_models.layers import ImageTokenizer, MLPStateEncoder
from librobot_models.registry import HEADS, register_vla

SHAPE_FIELDS = ("action_dim", "chunk_size", "cond_dim")  # set from the framework, not in head_config


@register_vla("custom")
@dataclass(frozen=True)
class CustomConfig(VLAConfig):
    """Template hyper-parameters; inputs/outputs come from VLAConfig."""

    # -- observation encoders -----------------------------------------------------------------------
    vision_channels: tuple[int, ...] = (32, 64, 128, 128)  # one stride-2 stage each: 96x128 -> 6x8 tokens
    dim: int = 128  # token width, the head's cond_dim

    # -- action head --------------------------------------------------------------------------------
    head: str = "ddim"  # any registered head (librobot_models.heads.HEADS.names())
    head_config: dict = field(default_factory=dict)  # that head's fields, e.g. {"n_sample_steps": 5}

    def validate(self) -> None:
        super().validate()
        check_vision_channels(self)
        check_positive_ints(self, "dim")
        self.check("dim", self.dim % 4 == 0, "a multiple of 4 (2D sinusoidal positions)")
        try:
            HEADS.canonical(self.head)
        except ValueError as err:
            raise ValueError(f"CustomConfig.head = {self.head!r} is invalid: {err}") from None
        self.check("head_config", isinstance(self.head_config, dict), "a mapping of the head's fields")
        reserved = sorted(set(self.head_config) & set(SHAPE_FIELDS))
        self.check("head_config", not reserved, f"no {reserved}: they come from the framework")
        self.make_head_config()  # the head's own checks, now rather than at build time

    def make_head_config(self) -> HeadConfig:
        shapes = {"action_dim": self.action_dim, "chunk_size": self.chunk_size, "cond_dim": self.dim}
        return head_config(self.head, **self.head_config, **shapes)


@builds(CustomConfig)
class Custom(HeadedFramework):
    def __init__(self, config: CustomConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.backbone = ImageTokenizer(c.vision_channels, c.dim, c.image_size, len(c.camera_names))
        self.state_encoder = MLPStateEncoder(c.state_dim, c.dim)
        self.head = c.make_head_config().create()

    def conditioning(self, batch: dict[str, Any]) -> Conditioning:
        """Image tokens (B, N_cam * h * w, dim) and the encoded state (B, dim)."""
        return Conditioning(tokens=self.backbone(batch["images"]), pooled=self.state_encoder(batch["state"]))
