"""ACT: Action Chunking with Transformers (Zhao et al. 2023, "Learning Fine-Grained Bimanual
Manipulation with Low-Cost Hardware", arXiv:2304.13705).

A conditional VAE whose decoder is a transformer that predicts a whole chunk of future actions:

  training   [CLS, state, a_1..a_k] --VAE encoder--> CLS token --> mean, logvar --> z ~ N(mean, var)
  both       [z, state, image features of every camera] --encoder--> memory
             k learned queries --decoder(memory)--> k tokens --linear--> actions (k, action_dim)
  inference  z = 0 (the prior's mean), so outputs are deterministic in eval mode

Loss: L1 between predicted and demonstrated actions over the non-padded steps, plus
kl_weight * KL(q(z | state, actions) || N(0, I)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from librobot_models.config import VLAConfig, builds, is_int, is_number
from librobot_models.frameworks.common import (
    check_attention_width,
    check_bools,
    check_dropout,
    check_positive_ints,
    check_vision_channels,
)
from librobot_models.layers import (
    ACTIVATIONS,
    ConvImageEncoder,
    TransformerDecoder,
    TransformerEncoder,
    resize_images,
    sinusoidal_1d,
    sinusoidal_2d,
)
from librobot_models.registry import register_vla


@register_vla("act", aliases=("aloha_act",))
@dataclass(frozen=True)
class ACTConfig(VLAConfig):
    """ACT hyper-parameters. Inputs/outputs (state_dim, action_dim, chunk_size, camera_names,
    image_size) come from VLAConfig. Defaults train on a CPU in minutes (4.2 M parameters)."""

    # -- vision backbone (trained from scratch, shared by all cameras) --------------------------------
    vision_channels: tuple[int, ...] = (32, 64, 128, 128)  # one stride-2 stage each: 96x128 -> 6x8 tokens

    # -- transformer ------------------------------------------------------------------------------
    dim_model: int = 192  # token width everywhere
    n_heads: int = 6
    dim_feedforward: int = 768
    n_encoder_layers: int = 3  # observation encoder
    n_decoder_layers: int = 1  # action decoder (the original code effectively used only the first)
    activation: str = "relu"
    pre_norm: bool = False  # post-norm as in the paper
    dropout: float = 0.1

    # -- CVAE ---------------------------------------------------------------------------------------
    use_vae: bool = True  # False: plain L1 regression with z always 0
    n_vae_encoder_layers: int = 3
    latent_dim: int = 32
    kl_weight: float = 10.0

    # -- inference (used by Policy, not by the module) --------------------------------------------
    temporal_ensemble_coeff: float | None = None  # None: plain chunks; m >= 0: ACT's exp(-m*i) ensembling

    def validate(self) -> None:
        super().validate()
        check_positive_ints(self, "dim_model", "n_heads", "dim_feedforward", "n_encoder_layers",
                            "n_decoder_layers", "latent_dim")
        self.check(
            "n_vae_encoder_layers",
            is_int(self.n_vae_encoder_layers) and self.n_vae_encoder_layers >= (1 if self.use_vae else 0),
            "an int >= 0, and > 0 when use_vae is true",
        )
        check_attention_width(self, "dim_model")
        check_vision_channels(self)
        self.check("activation", self.activation in ACTIVATIONS, f"one of {sorted(ACTIVATIONS)}")
        check_bools(self, "pre_norm", "use_vae")
        check_dropout(self)
        self.check("kl_weight", is_number(self.kl_weight) and self.kl_weight >= 0, "a number >= 0")
        self.check(
            "temporal_ensemble_coeff",
            self.temporal_ensemble_coeff is None
            or (is_number(self.temporal_ensemble_coeff) and self.temporal_ensemble_coeff >= 0),
            "null or a number >= 0 (ACT used 0.01)",
        )


@builds(ACTConfig)
class ACT(nn.Module):
    """The ACT network; `compute_loss` and `sample_actions` are the model contract."""

    def __init__(self, config: ACTConfig) -> None:
        super().__init__()
        self.config = config
        c, D = config, config.dim_model

        def encoder(n_layers: int) -> TransformerEncoder:
            return TransformerEncoder(
                n_layers, D, c.n_heads, c.dim_feedforward, c.dropout, c.activation, c.pre_norm
            )

        # CVAE encoder q(z | state, actions): training only
        if c.use_vae:
            self.vae_cls = nn.Parameter(torch.randn(1, 1, D) * 0.02)
            self.vae_state_in = nn.Linear(c.state_dim, D)
            self.vae_action_in = nn.Linear(c.action_dim, D)
            self.vae_encoder = encoder(c.n_vae_encoder_layers)
            self.vae_to_latent = nn.Linear(D, 2 * c.latent_dim)  # -> mean, logvar
            self.register_buffer("vae_pos", sinusoidal_1d(2 + c.chunk_size, D)[None], persistent=False)

        # observation encoder over [z, state, image features]
        self.backbone = ConvImageEncoder(c.vision_channels)
        self.image_in = nn.Conv2d(self.backbone.out_channels, D, kernel_size=1)
        self.latent_in = nn.Linear(c.latent_dim, D)
        self.state_in = nn.Linear(c.state_dim, D)
        self.token_pos = nn.Parameter(torch.randn(1, 2, D) * 0.02)  # learned positions of [z, state]
        self.camera_pos = nn.Parameter(torch.randn(len(c.camera_names), 1, D) * 0.02)  # tells cameras apart
        h, w = self.backbone.feature_size(c.image_size)
        self.register_buffer("image_pos", sinusoidal_2d(h, w, D)[None], persistent=False)  # (1, h*w, D)
        self.encoder = encoder(c.n_encoder_layers)

        # action decoder: chunk_size learned queries attend to the encoder memory
        self.queries = nn.Parameter(torch.randn(1, c.chunk_size, D) * 0.02)
        self.decoder = TransformerDecoder(
            c.n_decoder_layers, D, c.n_heads, c.dim_feedforward, c.dropout, c.activation, c.pre_norm
        )
        self.action_out = nn.Linear(D, c.action_dim)

    def encode_latent(
        self, state: torch.Tensor, actions: torch.Tensor, action_is_pad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, each (B, latent_dim), from the state and the action chunk."""
        B = state.shape[0]
        tokens = torch.cat(
            [
                self.vae_cls.expand(B, -1, -1),  # (B, 1, D)
                self.vae_state_in(state)[:, None],  # (B, 1, D)
                self.vae_action_in(actions),  # (B, k, D)
            ],
            dim=1,
        )  # (B, 2 + k, D)
        pad = torch.cat([action_is_pad.new_zeros(B, 2), action_is_pad], dim=1)  # (B, 2 + k)
        cls = self.vae_encoder(tokens, pos=self.vae_pos, key_padding_mask=pad)[:, 0]  # (B, D)
        mean, logvar = self.vae_to_latent(cls).chunk(2, dim=-1)  # (B, latent), (B, latent)
        return mean, logvar

    def forward(self, images: torch.Tensor, state: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """(B, N_cam, 3, H, W), (B, state_dim), (B, latent_dim) -> actions (B, chunk_size, action_dim)."""
        c = self.config
        B, n_cam = images.shape[:2]
        if n_cam != len(c.camera_names):
            raise ValueError(f"ACT expects {len(c.camera_names)} cameras {list(c.camera_names)}, got {n_cam}")
        images = resize_images(images, c.image_size)  # (B, N, 3, H', W')
        feats = self.image_in(self.backbone(images.flatten(0, 1)))  # (B*N, D, h, w)
        feats = feats.flatten(2).transpose(1, 2).reshape(B, -1, c.dim_model)  # (B, N*h*w, D)
        image_pos = (self.image_pos + self.camera_pos).reshape(1, -1, c.dim_model)  # (1, N*h*w, D)

        tokens = torch.cat([self.latent_in(latent)[:, None], self.state_in(state)[:, None], feats], dim=1)
        pos = torch.cat([self.token_pos, image_pos], dim=1)  # (1, 2 + N*h*w, D)
        memory = self.encoder(tokens, pos=pos)  # (B, 2 + N*h*w, D)

        # The queries are both the decoder's input and its positions. (The original starts from zeros,
        # which leaves the first layer's value projection without gradient.)
        queries = self.queries.expand(B, -1, -1)  # (B, k, D)
        x = self.decoder(queries, memory, pos=self.queries, memory_pos=pos)  # (B, k, D)
        return self.action_out(x)  # (B, k, action_dim)

    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        state, actions = batch["state"], batch["actions"]  # (B, state_dim), (B, k, action_dim)
        action_is_pad = batch.get("action_is_pad")
        if action_is_pad is None:
            action_is_pad = torch.zeros(actions.shape[:2], dtype=torch.bool, device=actions.device)

        if self.config.use_vae:
            mean, logvar = self.encode_latent(state, actions, action_is_pad)  # (B, latent) each
            latent = mean + torch.randn_like(mean) * (0.5 * logvar).exp()  # reparameterisation
            kl = (-0.5 * (1 + logvar - mean.pow(2) - logvar.exp())).sum(-1).mean()  # per sample, averaged
        else:
            latent = state.new_zeros(state.shape[0], self.config.latent_dim)
            kl = state.new_zeros(())

        predicted = self(batch["images"], state, latent)  # (B, k, action_dim)
        valid = (~action_is_pad)[..., None].to(predicted.dtype)  # (B, k, 1)
        l1 = ((predicted - actions).abs() * valid).sum() / (valid.sum() * actions.shape[-1]).clamp(min=1)
        loss = l1 + self.config.kl_weight * kl
        return loss, {"loss": loss.item(), "l1": l1.item(), "kl": kl.item()}

    def sample_actions(self, obs: dict[str, Any]) -> torch.Tensor:
        """Action chunk (B, chunk_size, action_dim) with z = 0; `obs` needs "images" and "state"."""
        state = obs["state"]
        latent = state.new_zeros(state.shape[0], self.config.latent_dim)
        return self(obs["images"], state, latent)
