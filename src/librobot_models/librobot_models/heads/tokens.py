"""Autoregressive discrete-token head (RT-2 / OpenVLA style) and its two action tokenizers.

Actions (normalised, clipped to [-1, 1]) become a sequence of k * A integer tokens, and a causal
transformer decoder predicts each token from the earlier ones and the conditioning:

    [BOS, tok_1 .. tok_{L-1}] -> embed + learned slot positions -> causal decoder (cross-attn to cond)
                              -> logits over the vocabulary -> cross-entropy against [tok_1 .. tok_L]

Tokenizers:
    UniformBinTokenizer  RT-2: each value falls in one of n_bins bins (256 by default); the bin edges are
                         uniform over [-1, 1] or data quantiles per dimension (fit on training actions).
                         Tokens are step-major: (step 0: dims 0..A-1), (step 1: ...), ...
    DCTTokenizer         FAST (Pertsch et al. 2025) without its BPE stage: a DCT-II over the time axis of
                         each action dimension, coefficients scaled and rounded to integers; integer c is
                         token c + max_coeff. Tokens are frequency-major (all dims' lowest frequency first).
                         Without BPE the sequence keeps its full length k * A; FAST's byte-pair merges
                         would shorten it (fewer decoding steps for long, smooth chunks) but carry the
                         same information.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from librobot_models.config import is_int, is_number
from librobot_models.heads.base import ActionHead, Conditioning, HeadConfig, hold_last_valid, masked_mean
from librobot_models.layers import TransformerDecoder

TOKENIZERS = ("uniform", "fast")
BIN_EDGES = ("uniform", "quantile")


def dct_matrix(n: int) -> torch.Tensor:
    """(n, n) orthonormal DCT-II: coefficients = M @ x, and x = M.T @ coefficients.

    M[f, t] = sqrt(2 / n) * cos(pi * (t + 1/2) * f / n), with row f = 0 scaled by 1 / sqrt(2).
    """
    t = torch.arange(n, dtype=torch.float64)
    f = torch.arange(n, dtype=torch.float64)[:, None]
    basis = math.sqrt(2.0 / n) * torch.cos(math.pi * (t + 0.5) * f / n)  # (n, n)
    basis[0] /= math.sqrt(2.0)
    return basis.float()


class UniformBinTokenizer(nn.Module):
    """Per-value bins: (B, k, A) in [-1, 1] <-> tokens (B, k * A) in [0, n_bins); decode gives bin centres."""

    def __init__(self, action_dim: int, n_bins: int) -> None:
        super().__init__()
        self.action_dim, self.n_bins = action_dim, n_bins
        self.vocab_size = n_bins
        edges = torch.linspace(-1.0, 1.0, n_bins + 1).repeat(action_dim, 1)  # (A, n_bins + 1)
        self.register_buffer("edges", edges)  # persistent: fitted edges travel with the checkpoint

    @torch.no_grad()
    def fit(self, actions: torch.Tensor) -> None:
        """Edges at the quantiles 0, 1/n, ..., 1 of each action dimension of actions (..., A)."""
        values = actions.reshape(-1, self.action_dim).T.float()  # (A, N)
        levels = torch.linspace(0, 1, self.n_bins + 1, device=values.device)
        self.edges.copy_(torch.quantile(values, levels, dim=1).T)  # (A, n_bins + 1)

    def encode(
        self, actions: torch.Tensor, action_is_pad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, k, A), (B, k) -> tokens (B, k * A) long, token_is_pad (B, k * A)."""
        B, k, A = actions.shape
        values = actions.reshape(-1, A).T.contiguous()  # (A, B*k)
        inner = self.edges[:, 1:-1].contiguous()  # (A, n_bins - 1): values below edge 1 are bin 0, ...
        bins = torch.searchsorted(inner, values.to(inner.dtype), right=True)  # (A, B*k) in [0, n_bins)
        return bins.T.reshape(B, k * A), action_is_pad.repeat_interleave(A, dim=1)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, k * A) -> (B, k, A): the centre of each token's bin."""
        centres = (self.edges[:, :-1] + self.edges[:, 1:]) / 2  # (A, n_bins)
        bins = tokens.view(tokens.shape[0], -1, self.action_dim).clamp(0, self.n_bins - 1)  # (B, k, A)
        return centres[torch.arange(self.action_dim, device=tokens.device), bins]  # (B, k, A)


class DCTTokenizer(nn.Module):
    """FAST without BPE: (B, k, A) in [-1, 1] <-> tokens (B, k * A) of rounded, scaled DCT coefficients.

    An orthonormal DCT keeps |coefficient| <= ||column||_2 <= sqrt(k) for values in [-1, 1], so the
    integers fit in [-max_coeff, max_coeff] with max_coeff = ceil(scale * sqrt(k)). Rounding moves each
    coefficient by <= 0.5 / scale, so each decoded value is off by <= 0.5 * sqrt(k) / scale.
    """

    def __init__(self, chunk_size: int, action_dim: int, scale: float) -> None:
        super().__init__()
        self.chunk_size, self.action_dim, self.scale = chunk_size, action_dim, scale
        self.max_coeff = math.ceil(scale * math.sqrt(chunk_size))
        self.vocab_size = 2 * self.max_coeff + 1
        self.register_buffer("basis", dct_matrix(chunk_size), persistent=False)  # (k, k)

    def encode(
        self, actions: torch.Tensor, action_is_pad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, k, A), (B, k) -> tokens (B, k * A), token_is_pad (B, k * A) all False.

        Every coefficient mixes all steps, so padded steps cannot be left out token by token: they are
        filled with the last valid action (holding still) before the transform.
        """
        B, k, A = actions.shape
        actions = hold_last_valid(actions, action_is_pad).clamp(-1, 1)
        coeffs = torch.einsum("ft,bta->bfa", self.basis.to(actions.dtype), actions)  # (B, k freqs, A)
        ints = (coeffs * self.scale).round().clamp(-self.max_coeff, self.max_coeff).long()
        tokens = (ints + self.max_coeff).reshape(B, k * A)
        return tokens, torch.zeros_like(tokens, dtype=torch.bool)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, k * A) -> (B, k, A) by the inverse DCT of the de-scaled coefficients."""
        ints = tokens.view(tokens.shape[0], self.chunk_size, self.action_dim).float() - self.max_coeff
        coeffs = ints / self.scale  # (B, k freqs, A)
        return torch.einsum("ft,bfa->bta", self.basis, coeffs)  # (B, k, A)


@dataclass(frozen=True)
class AutoregressiveConfig(HeadConfig):
    name: ClassVar[str] = "autoregressive"

    # -- tokenizer ----------------------------------------------------------------------------------
    tokenizer: str = "uniform"  # "uniform": RT-2 bins per value; "fast": DCT coefficients (FAST, no BPE)
    n_bins: int = 256  # uniform: bins per value
    bin_edges: str = "uniform"  # uniform: "uniform" over [-1, 1] or "quantile" (head.fit_tokenizer first)
    dct_scale: float = 10.0  # fast: coefficients are multiplied by this before rounding

    # -- sampling -----------------------------------------------------------------------------------
    temperature: float = 0.0  # 0: greedy (argmax); > 0: sample from softmax(logits / temperature)

    def validate(self) -> None:
        super().validate()
        self.check_choice("tokenizer", TOKENIZERS)
        self.check_choice("bin_edges", BIN_EDGES)
        self.check("n_bins", is_int(self.n_bins) and self.n_bins >= 2, "an int >= 2")
        self.check("dct_scale", is_number(self.dct_scale) and self.dct_scale > 0, "a number > 0")
        self.check("temperature", is_number(self.temperature) and self.temperature >= 0, "a number >= 0")

    def create(self) -> AutoregressiveHead:
        return AutoregressiveHead(self)


class AutoregressiveHead(ActionHead):
    def __init__(self, config: AutoregressiveConfig) -> None:
        super().__init__(config)
        c, D = config, config.hidden_dim
        if c.tokenizer == "uniform":
            self.tokenizer = UniformBinTokenizer(c.action_dim, c.n_bins)
        else:
            self.tokenizer = DCTTokenizer(c.chunk_size, c.action_dim, c.dct_scale)
        needs_fit = c.tokenizer == "uniform" and c.bin_edges == "quantile"
        self.register_buffer("tokenizer_fitted", torch.tensor(not needs_fit))  # travels with the edges
        self.seq_len = c.chunk_size * c.action_dim  # L tokens per chunk
        self.bos = self.tokenizer.vocab_size  # one extra embedding row starts every sequence
        self.token_embed = nn.Embedding(self.tokenizer.vocab_size + 1, D)
        self.token_pos = nn.Parameter(torch.randn(1, self.seq_len, D) * 0.02)  # (1, L, D) learned slots
        self.cond_in = nn.Linear(c.cond_dim, D)
        self.decoder = TransformerDecoder(
            c.n_layers, D, c.n_heads, 4 * D, c.dropout, act="gelu", pre_norm=True
        )
        self.logits_out = nn.Linear(D, self.tokenizer.vocab_size)

    def fit_tokenizer(self, actions: torch.Tensor) -> None:
        """Quantile bin edges from training actions (..., A); needed once when bin_edges = "quantile"."""
        if self.config.tokenizer != "uniform":
            raise ValueError(f"fit_tokenizer needs tokenizer 'uniform', got {self.config.tokenizer!r}")
        self.tokenizer.fit(actions)
        self.tokenizer_fitted.fill_(True)

    def _logits(
        self, inputs: torch.Tensor, memory: torch.Tensor, padding: torch.Tensor | None
    ) -> torch.Tensor:
        """inputs (B, n) tokens starting with BOS -> next-token logits (B, n, V)."""
        x = self.token_embed(inputs) + self.token_pos[:, : inputs.shape[1]]  # (B, n, D)
        x = self.decoder(x, memory, memory_key_padding_mask=padding, is_causal=True)  # (B, n, D)
        return self.logits_out(x)

    def _memory(self, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor | None]:
        tokens, padding = cond.as_tokens()  # (B, L, cond_dim), (B, L) | None
        return self.cond_in(tokens), padding  # (B, L, D)

    def loss(
        self, cond: Conditioning, actions: torch.Tensor, action_is_pad: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        action_is_pad = self.check_inputs(cond, actions, action_is_pad)
        if not self.tokenizer_fitted:
            raise ValueError("bin_edges is 'quantile': call head.fit_tokenizer(training_actions) first")
        targets, token_is_pad = self.tokenizer.encode(actions, action_is_pad)  # (B, L), (B, L)
        bos = targets.new_full((targets.shape[0], 1), self.bos)
        logits = self._logits(torch.cat([bos, targets[:, :-1]], dim=1), *self._memory(cond))  # (B, L, V)
        ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, L), teacher forcing
        loss = masked_mean(ce, token_is_pad)
        accuracy = masked_mean((logits.argmax(-1) == targets).float(), token_is_pad)
        return loss, {"loss": loss.item(), "cross_entropy": loss.item(), "token_accuracy": accuracy.item()}

    @torch.no_grad()
    def sample(
        self, cond: Conditioning, generator: torch.Generator | None = None, use_cache: bool = True
    ) -> torch.Tensor:
        """Decode L tokens one by one (greedy at temperature 0), then detokenize to (B, k, A).

        With `use_cache` each step feeds only the newest token: the decoder keeps the keys and values
        of the earlier ones (a KV cache) and of the memory, so a step costs one token. Without it each
        step re-runs the decoder over the whole prefix (same tokens; the benchmark's baseline).
        """
        self.check_inputs(cond)
        memory, padding = self._memory(cond)
        cache = self.decoder.new_cache() if use_cache else None
        tokens = torch.full((cond.batch_size, 1), self.bos, dtype=torch.long, device=cond.device)  # (B, 1)
        for i in range(self.seq_len):
            if cache is not None:
                x = self.token_embed(tokens[:, -1:]) + self.token_pos[:, i : i + 1]  # (B, 1, D)
            else:
                x = self.token_embed(tokens) + self.token_pos[:, : i + 1]  # (B, i + 1, D)
            x = self.decoder(x, memory, memory_key_padding_mask=padding, is_causal=True, cache=cache)
            logits = self.logits_out(x[:, -1])  # (B, V): the next token's logits
            if self.config.temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                probs = torch.softmax(logits.float() / self.config.temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
            tokens = torch.cat([tokens, nxt], dim=1)
        return self.tokenizer.decode(tokens[:, 1:]).to(cond.dtype)  # (B, k, A)
