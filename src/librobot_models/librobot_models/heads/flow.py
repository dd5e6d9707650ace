"""Flow-matching heads: rectified flow (pi0 / GR00T style) and OT-CFM (minibatch optimal transport).

A network predicts the velocity of a path from the action chunk (t = 0) to noise (t = 1):

    x_t = (sigma_min + (1 - sigma_min) t) eps + (1 - t) a        target u = (1 - sigma_min) eps - a
    train   loss = |v(x_t, t) - u|^2 over the non-padded steps
    sample  x_1 = eps, then Euler (or Heun) steps of dx/dt = v(x, t) from t = 1 to t = 0

rectified_flow  sigma_min = 0 (the straight line of Liu et al. 2022 and pi0), training times from
                pi0's Beta(1.5, 1) or uniform.
ot_cfm          conditional flow matching (Lipman et al. 2023) with sigma_min > 0, and each noise sample
                paired with an action chunk by minibatch optimal transport (Tong et al. 2023), which
                straightens the learned paths so fewer integration steps are needed.
Both are the same head; the two configs differ in their defaults. The velocity network is the shared
ChunkDenoiser unless a framework passes its own (pi0's action expert does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from librobot_models.config import is_int, is_number
from librobot_models.heads.base import ActionHead, Conditioning, HeadConfig, hold_last_valid, masked_mean
from librobot_models.heads.denoiser import ChunkDenoiser
from librobot_models.heads.guidance import Inpainting, guided
from librobot_models.heads.optimal_transport import pair_noise
from librobot_models.heads.sampling import ODE_METHODS, integrate, ode_step
from librobot_models.heads.schedules import FLOW_TIME_SAMPLING, sample_flow_time


@dataclass(frozen=True)
class RectifiedFlowConfig(HeadConfig):
    name: ClassVar[str] = "rectified_flow"

    time_sampling: str = "beta"  # training times: "beta" (pi0's Beta(1.5, 1)) or "uniform"
    sigma_min: float = 0.0  # noise left at t = 0; 0 is the straight rectified-flow path
    minibatch_ot: bool = False  # pair noise with actions by minibatch optimal transport
    n_sample_steps: int = 10  # integration steps from noise to actions
    solver: str = "euler"  # "euler" or "heun"

    def validate(self) -> None:
        super().validate()
        self.check_choice("time_sampling", FLOW_TIME_SAMPLING)
        self.check("sigma_min", is_number(self.sigma_min) and 0 <= self.sigma_min < 1, "a number in [0, 1)")
        self.check("minibatch_ot", isinstance(self.minibatch_ot, bool), "true or false")
        self.check("n_sample_steps", is_int(self.n_sample_steps) and self.n_sample_steps >= 1, "an int >= 1")
        self.check_choice("solver", ODE_METHODS)

    def create(self) -> FlowHead:
        return FlowHead(self)


@dataclass(frozen=True)
class OTCFMConfig(RectifiedFlowConfig):
    name: ClassVar[str] = "ot_cfm"

    time_sampling: str = "uniform"
    sigma_min: float = 1e-3
    minibatch_ot: bool = True


class FlowHead(ActionHead):
    supports_inpainting = True  # RTC's guided sampling (heads.guidance)

    def __init__(self, config: RectifiedFlowConfig, denoiser: nn.Module | None = None) -> None:
        """denoiser: the velocity network, (x (B, k, A), time (B,) in [0, 1000], Conditioning) -> (B, k, A);
        the shared ChunkDenoiser by default, or a framework's own (pi0's action expert), which then
        gets this head's loss and sampling loop unchanged."""
        super().__init__(config)
        self.denoiser = denoiser if denoiser is not None else ChunkDenoiser(config)
        # noise -> actions; Python floats made once, so that sampling traces (torch.export) as constants
        self.sample_times = tuple(torch.linspace(1.0, 0.0, config.n_sample_steps + 1, device="cpu").tolist())

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """v(x, t): x (B, k, A), t (B,) in [0, 1] -> (B, k, A)."""
        return self.denoiser(x, 1000 * t, cond)

    def loss(
        self, cond: Conditioning, actions: torch.Tensor, action_is_pad: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        action_is_pad = self.check_inputs(cond, actions, action_is_pad)
        actions = hold_last_valid(actions, action_is_pad)  # the network sees the chunk: fill its padding
        c = self.config
        B = actions.shape[0]
        noise = torch.randn_like(actions)  # (B, k, A)
        if c.minibatch_ot:
            noise = pair_noise(noise, actions, action_is_pad)
        t = sample_flow_time(B, c.time_sampling, actions.device).to(actions.dtype)  # (B,)
        t3 = t.view(B, 1, 1)
        x_t = (c.sigma_min + (1 - c.sigma_min) * t3) * noise + (1 - t3) * actions
        target = (1 - c.sigma_min) * noise - actions  # d x_t / dt
        mse = masked_mean((self.velocity(x_t, t, cond) - target) ** 2, action_is_pad)
        return mse, {"loss": mse.item(), "velocity_mse": mse.item()}

    def noise_draws(self) -> int:
        return 1

    @torch.no_grad()
    def sample(self, cond: Conditioning, generator: torch.Generator | None = None,
               inpaint: Inpainting | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """A chunk; with `inpaint`, one that agrees with its target where its weights say so.
        `noise` (1, B, k, A): the starting noise instead of a draw from `generator`."""
        self.check_inputs(cond)
        times = self.sample_times

        def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
            return self.velocity(x, x.new_full((x.shape[0],), t), cond)

        if inpaint is not None:
            inpaint.check(cond.batch_size, self.config.chunk_size, self.config.action_dim)
            velocity = guided(velocity, inpaint)
        start = self.noise_source(cond, generator, noise)()
        return integrate(start, times, ode_step(velocity, self.config.solver))
