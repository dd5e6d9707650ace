"""Octo-style: one transformer over task, observation and readout tokens with block-causal attention,
and a diffusion head on the readout tokens (Octo Model Team 2024, "Octo: An Open-Source Generalist
Robot Policy", arXiv:2405.12213). Trained from scratch; no VLM.

  task          instruction --byte-level BPE--> ids --Embedding + learned positions--> (B, Lt, D)
  observations  for each step t of the history window (T steps, the last one the current):
                [Linear(state_t)] + camera images --ImageTokenizer--> (B, n_obs, D)
  readouts      R learned tokens per step, (B, R, D)
  sequence      [task, obs_0, readout_0, obs_1, readout_1, ..., obs_{T-1}, readout_{T-1}]
                + a learned embedding of each step on its obs and readout tokens
  mask          block-causal (block_causal_mask): task tokens see the task; observation tokens see the
                task and observations of their own and earlier steps; readouts see those and the
                readouts of their own and earlier steps; nothing attends to a readout, so readouts
                read the sequence without changing it
  head          DDPM (20 steps, cosine schedule) on the last step's readout tokens

History. With history_window T > 1 a training batch carries the window (VLAConfig's contract with
observation_history = T; EpisodeDataset(history=T) gives it):
    images (B, T, N_cam, 3, H, W), state (B, T, state_dim), observation_is_pad (B, T) bool, True on
    steps before the episode start (the last step, the current one, is never padded)
The model itself keeps no state: at inference Policy builds the same window from the observations
of consecutive control steps (Policy.observe / Policy.infer), so the step before is one control
period earlier, as in training. Batches of one observation with T > 1 are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from librobot_models.backbones import build_tokenizer
from librobot_models.config import builds, is_int
from librobot_models.frameworks.common import (
    HeadedConfig,
    HeadedFramework,
    check_attention_width,
    check_bools,
    check_dropout,
    check_positive_ints,
    check_vision_channels,
    instructions,
)
from librobot_models.heads import Conditioning, DDPMConfig, DiffusionHead
from librobot_models.layers import ImageTokenizer, TransformerEncoder
from librobot_models.registry import register_vla

TASK, OBSERVATION, READOUT = 0, 1, 2


def block_causal_mask(n_task: int, n_obs: int, n_readouts: int, window: int) -> torch.Tensor:
    """(S, S) bool, True where token i may attend token j, for the sequence [task (n_task), then for
    each of `window` steps: observations (n_obs), readouts (n_readouts)]: S = n_task + window * (n_obs +
    n_readouts). The rules are the module docstring's."""
    per_step = [OBSERVATION] * n_obs + [READOUT] * n_readouts
    kinds = torch.tensor([TASK] * n_task + per_step * window)  # (S,)
    steps = torch.tensor([-1] * n_task + [t for t in range(window) for _ in per_step])  # (S,)
    kind_q, kind_k = kinds[:, None], kinds[None, :]
    earlier_or_same = steps[None, :] <= steps[:, None]  # (S, S): key step <= query step
    sees_obs = (kind_k == OBSERVATION) & (kind_q != TASK) & earlier_or_same
    sees_readout = (kind_k == READOUT) & (kind_q == READOUT) & earlier_or_same
    return (kind_k == TASK) | sees_obs | sees_readout


@register_vla("octo")
@dataclass(frozen=True)
class OctoConfig(HeadedConfig):
    """Octo hyper-parameters; inputs/outputs come from VLAConfig. Defaults train on a CPU."""

    # -- tokens ---------------------------------------------------------------------------------------
    history_window: int = 2  # observation steps seen, the current one included (as Octo)
    vision_channels: tuple[int, ...] = (32, 64, 128, 128)  # one stride-2 stage each: 96x128 -> 6x8 tokens
    max_text_tokens: int = 16  # instruction tokens (longer text is truncated)
    text_vocab: int = 512  # size bound of the byte-level BPE tokenizer built in code
    n_readouts: int = 1  # readout tokens per step
    use_state: bool = True  # a state token per step (Octo's released models use none)

    # -- transformer --------------------------------------------------------------------------------
    dim: int = 128  # token width, also the head's cond_dim
    n_layers: int = 4
    n_heads: int = 4
    dropout: float = 0.0
    head: DDPMConfig = field(
        default_factory=lambda: DDPMConfig(n_train_steps=20, hidden_dim=128, n_layers=2, n_heads=4)
    )

    def head_cond_dim(self) -> int:
        return self.dim

    def validate(self) -> None:
        super().validate()
        check_positive_ints(
            self, "history_window", "max_text_tokens", "n_readouts", "dim", "n_layers", "n_heads"
        )
        self.check(
            "text_vocab",
            is_int(self.text_vocab) and self.text_vocab >= 257,
            "an int >= 257 (256 bytes + pad)",
        )
        check_vision_channels(self)
        check_attention_width(self, "dim")
        check_bools(self, "use_state")
        check_dropout(self)

    @property
    def observation_history(self) -> int:
        return self.history_window


@builds(OctoConfig)
class Octo(HeadedFramework):
    def __init__(self, config: OctoConfig) -> None:
        super().__init__()
        self.config = config
        c, D, T = config, config.dim, config.history_window
        # deterministic, so a loaded checkpoint rebuilds the same vocabulary; not part of the state dict
        self.tokenizer = build_tokenizer({"pad": "<pad>"}, vocab_size=c.text_vocab)
        self.text_embed = nn.Embedding(len(self.tokenizer), D)
        self.text_pos = nn.Parameter(torch.randn(1, c.max_text_tokens, D) * 0.02)  # (1, Lt, D)
        self.backbone = ImageTokenizer(c.vision_channels, D, c.image_size, len(c.camera_names))
        self.state_in = nn.Linear(c.state_dim, D) if c.use_state else None
        self.readouts = nn.Parameter(torch.randn(1, 1, c.n_readouts, D) * 0.02)  # (1, 1, R, D)
        self.step_embed = nn.Parameter(torch.randn(1, T, 1, D) * 0.02)  # (1, T, 1, D)
        self.transformer = TransformerEncoder(
            c.n_layers, D, c.n_heads, 4 * D, c.dropout, "gelu", pre_norm=True
        )
        self.head = DiffusionHead(c.head)
        self.n_obs = int(c.use_state) + len(c.camera_names) * self.backbone.tokens_per_camera
        mask = block_causal_mask(c.max_text_tokens, self.n_obs, c.n_readouts, T)
        self.register_buffer("attn_mask", mask, persistent=False)  # (S, S)

    # -- inputs -------------------------------------------------------------------------------------
    def text_tokens(self, text: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Instructions -> ids (B, Lt) and padding (B, Lt) bool, right-padded to max_text_tokens."""
        encoded = self.tokenizer(
            text,
            add_special_tokens=False,
            padding="max_length",
            truncation=True,
            max_length=self.config.max_text_tokens,
            return_tensors="pt",
        )
        return encoded["input_ids"].to(device), encoded["attention_mask"].to(device) == 0

    def observation_window(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images (B, T, N, 3, H, W), state (B, T, state_dim), observation_is_pad (B, T))."""
        images, state = batch["images"], batch["state"]
        T, B = self.config.history_window, images.shape[0]
        if images.ndim == 5 and T == 1:
            return images[:, None], state[:, None], torch.zeros(B, 1, dtype=torch.bool, device=images.device)
        if images.ndim != 6 or images.shape[1] != T or tuple(state.shape[:2]) != (B, T):
            raise ValueError(
                f"OctoConfig.history_window = {T} needs observation windows: images (B, {T}, N_cam, 3, "
                f"H, W) and state (B, {T}, state_dim); got images {tuple(images.shape)} and state "
                f"{tuple(state.shape)}"
            )
        observation_is_pad = batch.get("observation_is_pad")
        if observation_is_pad is None:
            observation_is_pad = torch.zeros(B, T, dtype=torch.bool, device=images.device)
        return images, state, observation_is_pad

    # -- the transformer ----------------------------------------------------------------------------
    def conditioning(self, batch: dict[str, Any]) -> Conditioning:
        """The last step's readout tokens (B, R, D) after the block-causal transformer."""
        images, state, observation_is_pad = self.observation_window(batch)
        B, T = images.shape[:2]
        D, R = self.config.dim, self.config.n_readouts
        ids, text_pad = self.text_tokens(instructions(batch, B), images.device)  # (B, Lt), (B, Lt)
        task = self.text_embed(ids) + self.text_pos  # (B, Lt, D)
        obs = self.backbone(images.flatten(0, 1)).view(B, T, -1, D)  # (B, T, N*h*w, D)
        if self.state_in is not None:
            obs = torch.cat([self.state_in(state)[:, :, None], obs], dim=2)  # (B, T, n_obs, D)
        steps = (
            torch.cat([obs, self.readouts.expand(B, T, R, D)], dim=2) + self.step_embed
        )  # (B, T, n_obs+R, D)
        x = torch.cat([task, steps.flatten(1, 2)], dim=1)  # (B, S, D)
        step_pad = observation_is_pad[:, :, None].expand(B, T, self.n_obs + R).flatten(1)  # (B, T*(n_obs+R))
        padding = torch.cat([text_pad, step_pad], dim=1)  # (B, S)
        x = self.transformer(x, key_padding_mask=padding, attn_mask=self.attn_mask)  # (B, S, D)
        return Conditioning(tokens=x[:, -R:])  # the last R tokens: the current step's readouts
