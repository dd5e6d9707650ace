"""Diffusion heads: DDPM and DDIM (noise prediction over discrete timesteps) and EDM (Karras et al.).

All three share the ChunkDenoiser network, the schedules in schedules.py and the loop in sampling.py.

DDPM (Ho et al. 2020; Diffusion Policy, Chi et al. 2023)
    train   t ~ U{0..T-1}, x_t = sqrt(abar_t) a + sqrt(1 - abar_t) eps, loss = |eps_hat(x_t, t) - eps|^2
    sample  ancestral: every timestep T-1 .. 0, ddim_update with eta = 1
DDIM (Song et al. 2021): trained exactly like DDPM; samples over n_sample_steps evenly spaced
    timesteps, deterministic with eta = 0 (the default)
EDM (Karras et al. 2022; Octo-style heads use a close variant)
    train   ln sigma ~ N(p_mean, p_std^2), x = a + sigma eps,
            D(x; sigma) = c_skip x + c_out F(c_in x, c_noise), loss = lambda(sigma) |D - a|^2
    sample  Heun (or Euler) on dx/dsigma = (x - D(x; sigma)) / sigma over the Karras sigmas
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from librobot_models.config import is_int, is_number
from librobot_models.heads.base import ActionHead, Conditioning, HeadConfig, hold_last_valid, masked_mean
from librobot_models.heads.denoiser import ChunkDenoiser
from librobot_models.heads.guidance import Inpainting, guided_clean, guided_noise
from librobot_models.heads.sampling import ODE_METHODS, ddim_update, integrate, ode_step
from librobot_models.heads.schedules import (
    BETA_SCHEDULES,
    alpha_bars,
    edm_preconditioning,
    karras_sigmas,
    make_betas,
    spaced_timesteps,
)


@dataclass(frozen=True)
class DDPMConfig(HeadConfig):
    name: ClassVar[str] = "ddpm"

    n_train_steps: int = 100  # T diffusion timesteps
    beta_schedule: str = "cosine"  # "cosine" (Diffusion Policy's default) or "linear"
    # While sampling, clamp the predicted clean chunk into the range of the training actions, each
    # dimension's [min, max] widened about its centre by this factor (null: off). It keeps the
    # first, noisiest steps of an undertrained model from diverging. Diffusion Policy clamps to
    # [-1, 1], its actions' range after min-max scaling; LibroBot standardises actions (z-scores,
    # about +-3 for demonstrations), so the head records the range it is trained on instead.
    clip_sample: float | None = 1.0

    def validate(self) -> None:
        super().validate()
        self.check("n_train_steps", is_int(self.n_train_steps) and self.n_train_steps >= 2, "an int >= 2")
        self.check_choice("beta_schedule", BETA_SCHEDULES)
        self.check(
            "clip_sample", self.clip_sample is None or (is_number(self.clip_sample) and self.clip_sample > 0),
            "null or a number > 0",
        )

    def sampling_plan(self) -> tuple[list[int], float]:
        """Timesteps visited while sampling (T-1 down to 0) and DDIM's eta (1: DDPM's ancestral step)."""
        return list(range(self.n_train_steps - 1, -1, -1)), 1.0

    def create(self) -> DiffusionHead:
        return DiffusionHead(self)


@dataclass(frozen=True)
class DDIMConfig(DDPMConfig):
    name: ClassVar[str] = "ddim"

    n_sample_steps: int = 10  # timesteps visited while sampling, evenly spaced over T
    eta: float = 0.0  # 0: deterministic; 1: as noisy as DDPM

    def validate(self) -> None:
        super().validate()
        self.check(
            "n_sample_steps",
            is_int(self.n_sample_steps) and 1 <= self.n_sample_steps <= self.n_train_steps,
            f"an int in [1, n_train_steps = {self.n_train_steps}]",
        )
        self.check("eta", is_number(self.eta) and 0 <= self.eta <= 1, "a number in [0, 1]")

    def sampling_plan(self) -> tuple[list[int], float]:
        return spaced_timesteps(self.n_train_steps, self.n_sample_steps), self.eta


class DiffusionHead(ActionHead):
    """Noise-prediction diffusion; DDPMConfig and DDIMConfig differ only in their sampling plan."""

    def __init__(self, config: DDPMConfig) -> None:
        super().__init__(config)
        self.denoiser = ChunkDenoiser(config)
        betas = make_betas(config.beta_schedule, config.n_train_steps)  # (T,) float64
        self.alpha_bars: tuple[float, ...] = tuple(alpha_bars(betas).tolist())  # kept in float64
        with torch.device("cpu"):  # Python values made once, so that sampling traces (torch.export) as constants
            timesteps, self.eta = config.sampling_plan()
        self.timesteps: tuple[int, ...] = tuple(timesteps)
        # the range of the (normalised) training actions, per dimension; [-1, 1] until trained
        self.register_buffer("action_low", torch.full((config.action_dim,), -1.0))
        self.register_buffer("action_high", torch.full((config.action_dim,), 1.0))
        self.register_buffer("action_range_seen", torch.tensor(False))

    @torch.no_grad()
    def _record_range(self, actions: torch.Tensor, action_is_pad: torch.Tensor) -> None:
        """Widen the recorded range to this batch's valid actions; on the device, no host sync
        (the first step of every chunk is valid, so a batch always has some)."""
        pad = action_is_pad.unsqueeze(-1)  # (B, k, 1)
        low = actions.masked_fill(pad, float("inf")).amin((0, 1)).to(self.action_low)  # (A,)
        high = actions.masked_fill(pad, float("-inf")).amax((0, 1)).to(self.action_high)
        seen = self.action_range_seen
        self.action_low.copy_(torch.where(seen, torch.minimum(low, self.action_low), low))
        self.action_high.copy_(torch.where(seen, torch.maximum(high, self.action_high), high))
        seen.fill_(True)

    def clip_bounds(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(low, high) the predicted clean chunk is clamped into, (A,) each; None without a clip."""
        if self.config.clip_sample is None:
            return None
        centre = (self.action_high + self.action_low) / 2
        half = (self.action_high - self.action_low) / 2 * self.config.clip_sample
        return centre - half, centre + half

    def loss(
        self, cond: Conditioning, actions: torch.Tensor, action_is_pad: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        action_is_pad = self.check_inputs(cond, actions, action_is_pad)
        if self.training:
            self._record_range(actions, action_is_pad)
        actions = hold_last_valid(actions, action_is_pad)  # the network sees the chunk: fill its padding
        B = actions.shape[0]
        t = torch.randint(0, self.config.n_train_steps, (B,), device=actions.device)  # (B,)
        abar = torch.tensor(self.alpha_bars, dtype=actions.dtype, device=actions.device)[t].view(B, 1, 1)
        eps = torch.randn_like(actions)
        noisy = abar.sqrt() * actions + (1 - abar).sqrt() * eps  # (B, k, A)
        mse = masked_mean((self.denoiser(noisy, t.to(actions.dtype), cond) - eps) ** 2, action_is_pad)
        return mse, {"loss": mse.item(), "noise_mse": mse.item()}

    supports_inpainting = True  # RTC's guided sampling (heads.guidance)

    def noise_draws(self) -> int:
        """The starting noise, then one draw per visited timestep when eta > 0."""
        return 1 + (len(self.timesteps) if self.eta > 0 else 0)

    @torch.no_grad()
    def sample(self, cond: Conditioning, generator: torch.Generator | None = None,
               inpaint: Inpainting | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """A chunk; with `inpaint`, one that agrees with its target where its weights say so.
        `noise` (noise_draws(), B, k, A): the draws, in order, instead of draws from `generator`."""
        self.check_inputs(cond)
        if inpaint is not None:
            inpaint.check(cond.batch_size, self.config.chunk_size, self.config.action_dim)
        timesteps, eta = self.timesteps, self.eta
        draw = self.noise_source(cond, generator, noise)
        clip = self.clip_bounds()

        def step(x: torch.Tensor, t: float, t_prev: float) -> torch.Tensor:
            abar = self.alpha_bars[int(t)]
            predict = lambda x: self.denoiser(x, x.new_full((x.shape[0],), t), cond)  # noqa: E731
            if inpaint is not None:
                predict = guided_noise(predict, inpaint, math.sqrt(abar), math.sqrt(1.0 - abar))
            eps = predict(x)  # (B, k, A)
            abar_prev = self.alpha_bars[int(t_prev)] if t_prev >= 0 else 1.0  # past step 0: clean
            step_noise = draw() if eta > 0 else None
            return ddim_update(x, eps, abar, abar_prev, eta, step_noise, clip)

        return integrate(draw(), [*timesteps, -1], step)


@dataclass(frozen=True)
class EDMConfig(HeadConfig):
    name: ClassVar[str] = "edm"

    sigma_min: float = 0.002  # smallest noise level visited while sampling
    sigma_max: float = 80.0  # noise level sampling starts from
    sigma_data: float = 1.0  # the actions' standard deviation: 1 once standardised (Karras' 0.5 is for images)
    rho: float = 7.0  # Karras schedule curvature: larger spends more steps at low noise
    p_mean: float = -1.2  # training noise levels: ln sigma ~ N(p_mean, p_std^2)
    p_std: float = 1.2
    n_sample_steps: int = 10  # noise levels visited (Heun evaluates the network 2n - 1 times)
    solver: str = "heun"  # "heun" or "euler"

    def validate(self) -> None:
        super().validate()
        for name in ("sigma_min", "sigma_max", "sigma_data", "rho", "p_std"):
            self.check(name, is_number(getattr(self, name)) and getattr(self, name) > 0, "a number > 0")
        self.check("sigma_max", self.sigma_max > self.sigma_min, f"greater than sigma_min ({self.sigma_min})")
        self.check("p_mean", is_number(self.p_mean), "a number")
        self.check("n_sample_steps", is_int(self.n_sample_steps) and self.n_sample_steps >= 2, "an int >= 2")
        self.check_choice("solver", ODE_METHODS)

    def create(self) -> EDMHead:
        return EDMHead(self)


class EDMHead(ActionHead):
    def __init__(self, config: EDMConfig) -> None:
        super().__init__(config)
        self.denoiser = ChunkDenoiser(config)
        with torch.device("cpu"):  # Python floats made once, so that sampling traces as constants
            self.sigmas = tuple(karras_sigmas(config.n_sample_steps, config.sigma_min, config.sigma_max,
                                              config.rho).tolist())  # sigma_max .. 0

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """D(x; sigma): the preconditioned estimate of the clean chunk; x (B, k, A), sigma (B,)."""
        c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma.view(-1, 1, 1), self.config.sigma_data)
        network_out = self.denoiser(c_in * x, 1000 * c_noise.view(-1), cond)  # (B, k, A)
        return c_skip * x + c_out * network_out

    def loss(
        self, cond: Conditioning, actions: torch.Tensor, action_is_pad: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        action_is_pad = self.check_inputs(cond, actions, action_is_pad)
        actions = hold_last_valid(actions, action_is_pad)  # the network sees the chunk: fill its padding
        c = self.config
        B = actions.shape[0]
        log_sigma = torch.randn(B, device=actions.device, dtype=actions.dtype) * c.p_std + c.p_mean
        sigma = log_sigma.exp()  # (B,)
        noisy = actions + sigma.view(B, 1, 1) * torch.randn_like(actions)
        weight = ((sigma**2 + c.sigma_data**2) / (sigma * c.sigma_data) ** 2).view(B, 1, 1)  # lambda(sigma)
        loss = masked_mean(weight * (self.denoise(noisy, sigma, cond) - actions) ** 2, action_is_pad)
        return loss, {"loss": loss.item()}

    supports_inpainting = True  # RTC's guided sampling (heads.guidance), on the denoiser's estimate

    def noise_draws(self) -> int:
        return 1

    @torch.no_grad()
    def sample(self, cond: Conditioning, generator: torch.Generator | None = None,
               inpaint: Inpainting | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """A chunk; with `inpaint`, one that agrees with its target where its weights say so.
        `noise` (1, B, k, A): the starting noise (before scaling by sigma_max) instead of a draw."""
        self.check_inputs(cond)
        if inpaint is not None:
            inpaint.check(cond.batch_size, self.config.chunk_size, self.config.action_dim)
        c = self.config
        sigmas = self.sigmas

        def velocity(x: torch.Tensor, sigma: float) -> torch.Tensor:
            denoise = lambda x: self.denoise(x, x.new_full((x.shape[0],), sigma), cond)  # noqa: E731
            if inpaint is not None:
                denoise = guided_clean(denoise, inpaint, 1.0, sigma)
            return (x - denoise(x)) / sigma  # dx/dsigma

        start = self.noise_source(cond, generator, noise)()
        return integrate(sigmas[0] * start, sigmas, ode_step(velocity, c.solver))
