"""Action heads behind one interface (heads.base): `loss(cond, actions, action_is_pad)` and
`sample(cond, generator)`, each built from a frozen config.

    head = create_head("ddim", action_dim=7, chunk_size=16, cond_dim=512, n_sample_steps=8)
    HEADS.get("ot_cfm")        # OTCFMConfig (HEADS is the registry; plugins: "librobot.heads")
    head_config("edm", ...)    # the config alone, e.g. to nest in a framework config
"""

from __future__ import annotations

from typing import Any

from librobot_models.heads.base import ActionHead, Conditioning, HeadConfig
from librobot_models.heads.diffusion import DDIMConfig, DDPMConfig, DiffusionHead, EDMConfig, EDMHead
from librobot_models.heads.flow import FlowHead, OTCFMConfig, RectifiedFlowConfig
from librobot_models.heads.guidance import Inpainting
from librobot_models.heads.mlp_oft import MLPOFTConfig, MLPOFTHead
from librobot_models.heads.tokens import AutoregressiveConfig, AutoregressiveHead
from librobot_models.heads.transformer import TransformerHead, TransformerHeadConfig
from librobot_models.registry import HEADS

for _config in (
    MLPOFTConfig,
    TransformerHeadConfig,
    AutoregressiveConfig,
    DDPMConfig,
    DDIMConfig,
    EDMConfig,
    RectifiedFlowConfig,
    OTCFMConfig,
):
    HEADS.add(_config.name, _config, caller="heads")


def head_config(name: str, **fields: Any) -> HeadConfig:
    """The config of head `name` with `fields` set; unknown names and bad values raise ValueError."""
    return HEADS.get(name).from_dict(fields)


def create_head(name: str, **config: Any) -> ActionHead:
    """Build head `name` from its config fields, e.g. create_head("mlp_oft", action_dim=7)."""
    return head_config(name, **config).create()


__all__ = [
    "HEADS",
    "ActionHead",
    "AutoregressiveConfig",
    "AutoregressiveHead",
    "Conditioning",
    "DDIMConfig",
    "DDPMConfig",
    "DiffusionHead",
    "EDMConfig",
    "EDMHead",
    "FlowHead",
    "HeadConfig",
    "MLPOFTConfig",
    "MLPOFTHead",
    "OTCFMConfig",
    "RectifiedFlowConfig",
    "TransformerHead",
    "TransformerHeadConfig",
    "create_head",
    "head_config",
]
