"""The action-head interface: what every head is conditioned on, its config, and its two methods.

A framework turns observations into a `Conditioning` and hands it to a head:

    cond = Conditioning(tokens=vlm_hidden, padding_mask=~attention_mask)    # GR00T, pi0, RT-2, OFT
    cond = Conditioning(pooled=readout_token)                              # Octo, a plain MLP policy
    cond = Conditioning(tokens=obs_tokens, pooled=state_embedding)         # both: pooled comes first

    head = create_head("rectified_flow", action_dim=7, chunk_size=16, cond_dim=512)
    loss, logs = head.loss(cond, actions, action_is_pad)   # training: scalar, {name: float}
    actions = head.sample(cond, generator=g)               # inference: (B, chunk_size, action_dim)

Actions are normalised by the caller (policy.py); heads never see robot units. Tokens and the pooled
vector share the width `cond_dim`; a framework projects its features to that width first.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

from librobot_models.config import Config, is_int, is_number


@dataclass
class Conditioning:
    """Conditioning tensors for an action head; give tokens, a pooled vector, or both.

    tokens:       (B, L, cond_dim) e.g. VLM hidden states, observation tokens
    padding_mask: (B, L) bool, True where a token is padding (the same sense as key_padding_mask)
    pooled:       (B, cond_dim) e.g. a pooled embedding or a readout token
    """

    tokens: torch.Tensor | None = None
    padding_mask: torch.Tensor | None = None
    pooled: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.tokens is None and self.pooled is None:
            raise ValueError("Conditioning needs tokens (B, L, D), pooled (B, D) or both; got neither")
        if self.tokens is not None and self.tokens.ndim != 3:
            raise ValueError(f"Conditioning.tokens must be (B, L, D), got shape {tuple(self.tokens.shape)}")
        if self.pooled is not None and self.pooled.ndim != 2:
            raise ValueError(f"Conditioning.pooled must be (B, D), got shape {tuple(self.pooled.shape)}")
        if self.padding_mask is not None:
            if self.tokens is None:
                raise ValueError("Conditioning.padding_mask given without tokens")
            if self.padding_mask.shape != self.tokens.shape[:2] or self.padding_mask.dtype != torch.bool:
                raise ValueError(
                    f"Conditioning.padding_mask must be bool {tuple(self.tokens.shape[:2])}, "
                    f"got {self.padding_mask.dtype} {tuple(self.padding_mask.shape)}"
                )
        if self.tokens is not None and self.pooled is not None:
            if self.tokens.shape[0] != self.pooled.shape[0] or self.tokens.shape[2] != self.pooled.shape[1]:
                raise ValueError(
                    f"Conditioning.tokens {tuple(self.tokens.shape)} and pooled {tuple(self.pooled.shape)} "
                    "must share the batch size and the width"
                )

    @property
    def _any(self) -> torch.Tensor:
        return self.tokens if self.tokens is not None else self.pooled

    @property
    def batch_size(self) -> int:
        return self._any.shape[0]

    @property
    def width(self) -> int:
        return self._any.shape[-1]

    @property
    def device(self) -> torch.device:
        return self._any.device

    @property
    def dtype(self) -> torch.dtype:
        return self._any.dtype

    def as_tokens(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All conditioning as tokens (B, L', D) with a padding mask (B, L') or None; pooled comes first."""
        if self.tokens is None:
            return self.pooled[:, None], None  # (B, 1, D)
        if self.pooled is None:
            return self.tokens, self.padding_mask
        tokens = torch.cat([self.pooled[:, None], self.tokens], dim=1)  # (B, 1 + L, D)
        if self.padding_mask is None:
            return tokens, None
        return tokens, torch.cat([self.padding_mask.new_zeros(self.batch_size, 1), self.padding_mask], dim=1)

    def as_pooled(self) -> torch.Tensor:
        """One vector (B, D): `pooled` if given, else the mean of the non-padded tokens."""
        if self.pooled is not None:
            return self.pooled
        if self.padding_mask is None:
            return self.tokens.mean(dim=1)
        keep = (~self.padding_mask)[..., None].to(self.tokens.dtype)  # (B, L, 1)
        return (self.tokens * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)


@dataclass(frozen=True)
class HeadConfig(Config):
    """Fields every head shares. Subclasses add their own and define `create()`."""

    name: ClassVar[str] = ""  # the name in heads.HEADS

    # -- what goes in and out ------------------------------------------------------------------------
    action_dim: int = 6  # action size per step
    chunk_size: int = 20  # actions per chunk
    cond_dim: int = 256  # width of Conditioning.tokens / .pooled

    # -- network size -------------------------------------------------------------------------------
    hidden_dim: int = 256  # token / hidden width inside the head
    n_layers: int = 2  # transformer layers (or hidden MLP layers for pooled MLP heads)
    n_heads: int = 4  # attention heads
    dropout: float = 0.0

    def validate(self) -> None:
        for name in ("action_dim", "chunk_size", "cond_dim", "hidden_dim", "n_layers", "n_heads"):
            value = getattr(self, name)
            self.check(name, is_int(value) and value > 0, "an int > 0")
        self.check(
            "hidden_dim", self.hidden_dim % self.n_heads == 0, f"a multiple of n_heads ({self.n_heads})"
        )
        self.check("hidden_dim", self.hidden_dim % 2 == 0, "even (sinusoidal embeddings)")
        self.check("dropout", is_number(self.dropout) and 0.0 <= self.dropout < 1.0, "a number in [0, 1)")

    def check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        self.check(name, getattr(self, name) in choices, f"one of {list(choices)}")


class ActionHead(nn.Module, abc.ABC):
    """Maps a Conditioning to an action chunk (B, chunk_size, action_dim); see the module docstring."""

    supports_inpainting = False  # True: sample() takes `inpaint` (RTC guidance, heads.guidance)

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config

    @abc.abstractmethod
    def loss(
        self, cond: Conditioning, actions: torch.Tensor, action_is_pad: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss (scalar) and logs {name: float}; actions (B, chunk, action_dim), padded steps
        (action_is_pad (B, chunk) True) do not count."""

    @abc.abstractmethod
    def sample(self, cond: Conditioning, generator: torch.Generator | None = None) -> torch.Tensor:
        """An action chunk (B, chunk_size, action_dim); the same generator state gives the same chunk."""

    # -- helpers for subclasses -----------------------------------------------------------------------
    def check_inputs(
        self,
        cond: Conditioning,
        actions: torch.Tensor | None = None,
        action_is_pad: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """Raise on shapes that do not match the config; return action_is_pad (all False if None)."""
        c, head = self.config, type(self).__name__
        if cond.width != c.cond_dim:
            raise ValueError(f"{head}: conditioning width {cond.width}, expected cond_dim {c.cond_dim}")
        if actions is None:
            return None
        expected = (cond.batch_size, c.chunk_size, c.action_dim)
        if tuple(actions.shape) != expected:
            raise ValueError(f"{head}: actions of shape {tuple(actions.shape)}, expected {expected}")
        if action_is_pad is None:
            return torch.zeros(expected[:2], dtype=torch.bool, device=actions.device)
        if tuple(action_is_pad.shape) != expected[:2]:
            shape = tuple(action_is_pad.shape)
            raise ValueError(f"{head}: action_is_pad of shape {shape}, expected {expected[:2]}")
        return action_is_pad

    def noise(self, cond: Conditioning, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal (B, chunk_size, action_dim) on cond's device and dtype, from `generator`."""
        shape = (cond.batch_size, self.config.chunk_size, self.config.action_dim)
        return torch.randn(shape, generator=generator, device=cond.device, dtype=cond.dtype)

    def noise_draws(self) -> int:
        """How many standard-normal (B, chunk_size, action_dim) draws `sample` takes; 0: deterministic."""
        return 0

    def noise_source(
        self, cond: Conditioning, generator: torch.Generator | None, noise: torch.Tensor | None
    ) -> Callable[[], torch.Tensor]:
        """The function `sample` calls for each draw: fresh noise from `generator`, or, when `noise`
        (noise_draws(), B, chunk_size, action_dim) is given, its rows in order (so that an exported
        graph and eager sampling can be compared on the same noise)."""
        if noise is None:
            return lambda: self.noise(cond, generator)
        c = self.config
        expected = (self.noise_draws(), cond.batch_size, c.chunk_size, c.action_dim)
        if tuple(noise.shape) != expected:
            raise ValueError(f"{type(self).__name__}: noise of shape {tuple(noise.shape)}, expected {expected}")
        draws = iter(noise.to(device=cond.device, dtype=cond.dtype).unbind(0))
        return lambda: next(draws)


def masked_mean(values: torch.Tensor, action_is_pad: torch.Tensor) -> torch.Tensor:
    """Mean of values (B, chunk, ...) over the steps where action_is_pad (B, chunk) is False."""
    keep = (~action_is_pad).to(values.dtype).view(*action_is_pad.shape, *([1] * (values.ndim - 2)))
    per_step = math.prod(values.shape[2:])  # entries per step
    return (values * keep).sum() / (keep.sum() * per_step).clamp(min=1)


def hold_last_valid(actions: torch.Tensor, action_is_pad: torch.Tensor) -> torch.Tensor:
    """Replace padded steps (a suffix of each chunk) by the last valid action: (B, k, A) -> (B, k, A).

    Heads whose network sees the action chunk as input (noised, or as a transform of all steps) fill
    the padding this way (the robot holding still), so what lies past the episode end cannot matter.
    """
    n_valid = (~action_is_pad).sum(dim=1)  # (B,)
    steps = torch.arange(actions.shape[1], device=actions.device)  # (k,)
    source = torch.minimum(steps[None, :], (n_valid - 1).clamp(min=0)[:, None])  # (B, k)
    return actions.gather(1, source[..., None].expand_as(actions))
