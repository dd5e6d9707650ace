"""State and history encoders: proprioception and past observations -> tokens for a policy.

    MLPStateEncoder(state_dim, dim)            (B, state_dim)   -> (B, dim)         one token
    TransformerStateEncoder(state_dim, dim)    (B, state_dim)   -> (B, state_dim, dim) a token per joint
    LSTMHistoryEncoder(in_dim, dim)            (B, T, in_dim)   -> (B, T, dim)      causal by construction
    TransformerHistoryEncoder(in_dim, dim)     (B, T, in_dim)   -> (B, T, dim)      causal unless told not

A history encoder's output at step t summarises steps 0..t (when causal); its last step (out[:, -1])
summarises the whole window.
"""

from __future__ import annotations

import torch
from torch import nn

from librobot_models.layers.attention import AttentionConfig
from librobot_models.layers.mlp import MLP
from librobot_models.layers.positional import sinusoidal_1d
from librobot_models.layers.transformer import TransformerEncoder


class MLPStateEncoder(MLP):
    """(B, state_dim) -> (B, dim) through `n_hidden` hidden layers of width `hidden_dim` (default dim)."""

    def __init__(
        self, state_dim: int, dim: int, hidden_dim: int | None = None, n_hidden: int = 1, act: str = "gelu"
    ) -> None:
        super().__init__(state_dim, [hidden_dim or dim] * n_hidden, dim, act=act)


class TransformerStateEncoder(nn.Module):
    """(B, J) joint values -> (B, J, dim): one token per joint, then self-attention across joints.

    Token j = value_j * w_j + e_j with a learned direction w_j and identity embedding e_j per joint,
    so joints are told apart without positions and each keeps its own scale.
    """

    def __init__(
        self, state_dim: int, dim: int, n_layers: int = 2, n_heads: int = 4, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.value_dir = nn.Parameter(torch.randn(state_dim, dim) * 0.02)  # (J, dim)
        self.joint_embed = nn.Parameter(torch.randn(state_dim, dim) * 0.02)  # (J, dim)
        self.encoder = TransformerEncoder(n_layers, dim, n_heads, 4 * dim, dropout, act="gelu", pre_norm=True)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        tokens = state[..., None] * self.value_dir + self.joint_embed  # (B, J, dim)
        return self.encoder(tokens)  # (B, J, dim)


class LSTMHistoryEncoder(nn.Module):
    """(B, T, in_dim) -> (B, T, dim) with an n_layers LSTM; step t sees only steps <= t."""

    def __init__(self, in_dim: int, dim: int, n_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_dim, dim, n_layers, batch_first=True, dropout=dropout if n_layers > 1 else 0.0)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(history)  # (B, T, dim)
        return out


class TransformerHistoryEncoder(nn.Module):
    """(B, T, in_dim) -> (B, T, dim): projection + sinusoidal time positions + a transformer encoder.

    causal=True (default) masks future steps, so step t summarises steps <= t. `attention` picks the
    self-attention variant (e.g. a sliding window over long histories, or RoPE instead of sinusoids
    with positions="none").
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        n_layers: int = 2,
        n_heads: int = 4,
        max_len: int = 256,
        causal: bool = True,
        dropout: float = 0.0,
        positions: str = "sinusoidal",
        attention: AttentionConfig | None = None,
    ) -> None:
        super().__init__()
        if positions not in ("sinusoidal", "none"):
            raise ValueError(f"unknown history positions {positions!r}; expected 'sinusoidal' or 'none'")
        self.causal = causal
        self.max_len = max_len  # longest history the sinusoidal table covers
        self.input = nn.Linear(in_dim, dim)
        pos = sinusoidal_1d(max_len, dim)[None] if positions == "sinusoidal" else None  # (1, max_len, dim)
        self.register_buffer("pos", pos, persistent=False)
        self.encoder = TransformerEncoder(
            n_layers, dim, n_heads, 4 * dim, dropout, act="gelu", pre_norm=True, attention=attention
        )

    def forward(self, history: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """padding_mask: (B, T) bool, True at steps to ignore (e.g. before the episode start)."""
        T = history.shape[1]
        if self.pos is not None and T > self.max_len:
            raise ValueError(f"history of {T} steps is longer than max_len {self.max_len}")
        x = self.input(history)  # (B, T, dim)
        if self.pos is not None:
            x = x + self.pos[:, :T]
        return self.encoder(x, key_padding_mask=padding_mask, is_causal=self.causal)  # (B, T, dim)
