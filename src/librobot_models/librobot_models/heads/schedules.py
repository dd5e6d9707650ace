"""Noise schedules and time distributions for the generative heads, each written once.

Discrete diffusion (DDPM / DDIM), t = 0..T-1:
    x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps,   abar_t = prod_{s <= t} (1 - beta_s)
EDM (Karras et al. 2022), continuous noise level sigma:
    x = x_0 + sigma * eps,  denoiser D(x; sigma) = c_skip * x + c_out * F(c_in * x, c_noise)
Flow matching, t in [0, 1] with t = 1 pure noise (the pi0 convention):
    x_t = (sigma_min + (1 - sigma_min) * t) * eps + (1 - t) * x_0
    dx_t/dt = (1 - sigma_min) * eps - x_0
"""

from __future__ import annotations

import math

import torch

BETA_SCHEDULES = ("linear", "cosine")
FLOW_TIME_SAMPLING = ("beta", "uniform")


# -- discrete diffusion -----------------------------------------------------------------------------
def linear_betas(n_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """(T,) betas rising linearly (Ho et al. 2020). The endpoints are for T = 1000 and are scaled by
    1000 / T (Nichol & Dhariwal 2021), so abar at the last step stays near 0 for any T."""
    scale = 1000.0 / n_steps
    return torch.linspace(beta_start * scale, beta_end * scale, n_steps, dtype=torch.float64)


def cosine_alpha_bar(t: torch.Tensor, n_steps: int, s: float = 0.008) -> torch.Tensor:
    """The cosine schedule's closed form abar(t) = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) * pi/2)."""

    def f(u: torch.Tensor) -> torch.Tensor:
        return torch.cos((u / n_steps + s) / (1 + s) * math.pi / 2) ** 2

    return f(t.double()) / f(torch.zeros((), dtype=torch.float64))


def cosine_betas(n_steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """(T,) betas of the cosine schedule (Nichol & Dhariwal 2021): beta_t = 1 - abar(t + 1) / abar(t),
    capped at max_beta so the last steps stay invertible. Diffusion Policy's default."""
    t = torch.arange(n_steps + 1, dtype=torch.float64)
    abar = cosine_alpha_bar(t, n_steps, s)  # (T + 1,), abar[0] = 1
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def make_betas(schedule: str, n_steps: int) -> torch.Tensor:
    if schedule == "linear":
        return linear_betas(n_steps)
    if schedule == "cosine":
        return cosine_betas(n_steps)
    raise ValueError(f"unknown beta schedule {schedule!r}; expected one of {list(BETA_SCHEDULES)}")


def alpha_bars(betas: torch.Tensor) -> torch.Tensor:
    """(T,) abar_t = prod_{s <= t} (1 - beta_s), strictly decreasing for betas in (0, 1)."""
    return torch.cumprod(1 - betas, dim=0)


def spaced_timesteps(n_train_steps: int, n_sample_steps: int) -> list[int]:
    """DDIM's timestep subsequence: n_sample_steps evenly spaced steps from T-1 down to 0 (distinct)."""
    if not 1 <= n_sample_steps <= n_train_steps:
        raise ValueError(f"n_sample_steps must be in [1, {n_train_steps}], got {n_sample_steps}")
    steps = torch.linspace(n_train_steps - 1, 0, n_sample_steps).round().long()
    return steps.unique_consecutive().tolist()


# -- EDM -------------------------------------------------------------------------------------------
def karras_sigmas(n_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """(n_steps + 1,) noise levels from sigma_max down to sigma_min, then a final 0 (Karras et al. eq. 5):
    sigma_i = (sigma_max^(1/rho) + i / (n - 1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho."""
    if n_steps < 2:
        raise ValueError(f"the Karras schedule needs n_steps >= 2, got {n_steps}")
    ramp = torch.linspace(0, 1, n_steps, dtype=torch.float64)
    inv_max, inv_min = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (inv_max + ramp * (inv_min - inv_max)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def edm_preconditioning(
    sigma: torch.Tensor, sigma_data: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM's c_skip, c_out, c_in, c_noise for noise levels sigma (Karras et al. 2022, table 1)."""
    total = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / total
    c_out = sigma * sigma_data / total.sqrt()
    c_in = 1 / total.sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


# -- flow matching ---------------------------------------------------------------------------------
def sample_flow_time(
    batch_size: int, kind: str, device: torch.device, alpha: float = 1.5, beta: float = 1.0
) -> torch.Tensor:
    """(B,) training times in (0, 1]. "uniform": U(0, 1). "beta": 0.001 + 0.999 * Beta(alpha, beta),
    as in pi0, which with the defaults favours noisier times (t near 1)."""
    if kind == "uniform":
        return torch.rand(batch_size, device=device)
    if kind == "beta":
        draw = torch.distributions.Beta(torch.tensor(alpha), torch.tensor(beta)).sample((batch_size,))
        return (0.001 + 0.999 * draw).to(device)
    raise ValueError(f"unknown flow time sampling {kind!r}; expected one of {list(FLOW_TIME_SAMPLING)}")
