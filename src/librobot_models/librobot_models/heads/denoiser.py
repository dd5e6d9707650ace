"""The network inside every generative head (DDPM, DDIM, EDM, rectified flow, OT-CFM).

(noisy chunk (B, k, A), time (B,), Conditioning) -> (B, k, A), a small DiT-style transformer over the
chunk's k action tokens, built from layers/:

    time  -> sinusoidal embedding -> MLP -> t                                   (B, D)
    g = t + Linear(pooled conditioning)                                         (B, D)
    chunk -> Linear -> + sinusoidal step positions -> FiLM(g)                   (B, k, D)
    decoder layers: self-attention over the chunk, cross-attention to
                    memory = [g, conditioning tokens], feed-forward             (B, k, D)
    -> Linear                                                                   (B, k, A)

The output's meaning (noise, velocity, EDM's F) belongs to the head. Times should span roughly
[0, 1000] so the sinusoidal embedding resolves them: heads pass a DDPM timestep as is, a flow time
t in [0, 1] times 1000, EDM's c_noise times 1000.
"""

from __future__ import annotations

import torch
from torch import nn

from librobot_models.heads.base import Conditioning, HeadConfig
from librobot_models.layers import MLP, FiLM, TransformerDecoder, sinusoidal_1d


class ChunkDenoiser(nn.Module):
    """(noisy chunk, time, Conditioning) -> chunk-shaped output; sized by the head's config."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        c, D = config, config.hidden_dim
        self.dim = D
        self.time_mlp = MLP(D, [D], D, act="silu")
        self.action_in = nn.Linear(c.action_dim, D)
        self.register_buffer("step_pos", sinusoidal_1d(c.chunk_size, D)[None], persistent=False)  # (1, k, D)
        self.pooled_in = nn.Linear(c.cond_dim, D)
        self.film = FiLM(D, D)
        self.cond_in = nn.Linear(c.cond_dim, D)
        self.decoder = TransformerDecoder(
            c.n_layers, D, c.n_heads, 4 * D, c.dropout, act="gelu", pre_norm=True
        )
        self.action_out = nn.Linear(D, c.action_dim)

    def forward(self, x: torch.Tensor, time: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """x (B, k, A), time (B,) -> (B, k, A)."""
        t = self.time_mlp(sinusoidal_1d(time, self.dim).to(x.dtype))  # (B, D)
        g = t + self.pooled_in(cond.as_pooled())  # (B, D): time and a summary of the conditioning
        tokens, padding = cond.as_tokens()  # (B, L, cond_dim), (B, L) | None
        memory = torch.cat([g[:, None], self.cond_in(tokens)], dim=1)  # (B, 1 + L, D)
        if padding is not None:
            padding = torch.cat([padding.new_zeros(padding.shape[0], 1), padding], dim=1)  # (B, 1 + L)
        h = self.film(self.action_in(x) + self.step_pos, g)  # (B, k, D)
        h = self.decoder(h, memory, memory_key_padding_mask=padding)  # (B, k, D)
        return self.action_out(h)  # (B, k, A)
