"""Inpainting an action chunk while it is sampled: the guidance of real-time chunking (RTC, Black
et al. 2025, "Real-Time Execution of Action Chunking Flow Policies").

While a chunk is computed, the robot keeps executing the previous one; the new chunk must agree
with what will already have run when it arrives (the first d actions) and should join the rest of
the previous plan smoothly. RTC samples the new chunk with pseudo-inverse guidance (PiGDM): at
each integration step the clean chunk the velocity points to,

    a_hat = x_t - t v(x_t, t)                     (x_t = t noise + (1 - t) actions)

is compared with the target Y under per-step weights W (1 for the frozen steps, decaying over the
overlap, 0 beyond), and the velocity is corrected along the vector-Jacobian product

    g = (W (Y - a_hat))^T d a_hat / d x_t,        v <- v - min(beta, (1 - tau) / (tau r^2)) g

with tau = 1 - t (RTC's time, 0 at noise) and r^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2); beta
caps the correction near the noise end. The targets come from the chunk executor
(librobot_models.execution, `inpainting`), in the head's normalised action space.

Diffusion heads (DDPM/DDIM, x = s a + n eps with s = sqrt(abar), n = sqrt(1 - abar)) get the same
correction written on their clean estimate: rescaled to the flow's form (x / (s + n): t = n / (s +
n), tau = s / (s + n)), the flow's step moves a_hat by t c g_flow, which in x's units is
a_hat <- a_hat + n c g with g = (W (Y - a_hat))^T d a_hat / d x; the noise estimate handed to the
DDIM update is then the one that agrees with the corrected a_hat. EDM (x = a + sigma eps, its
denoiser the clean estimate itself) is the case s = 1, n = sigma.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from librobot_models.heads.sampling import Velocity


@dataclass(frozen=True)
class Inpainting:
    target: torch.Tensor  # (B, k, A): what the chunk should agree with, normalised like the actions
    weights: torch.Tensor  # (k,) in [0, 1]: 1 frozen, 0 free
    max_guidance: float = 5.0  # beta

    def check(self, batch: int, chunk_size: int, action_dim: int) -> None:
        if tuple(self.target.shape) != (batch, chunk_size, action_dim):
            raise ValueError(f"inpainting target of shape {tuple(self.target.shape)}, expected "
                             f"{(batch, chunk_size, action_dim)}")
        if tuple(self.weights.shape) != (chunk_size,):
            raise ValueError(f"inpainting weights of shape {tuple(self.weights.shape)}, expected ({chunk_size},)")
        if self.max_guidance <= 0:
            raise ValueError(f"max_guidance {self.max_guidance}: expected > 0")


def guidance_scale(t: float, max_guidance: float) -> float:
    """min(beta, (1 - tau) / (tau r^2)) at flow time t (tau = 1 - t)."""
    tau = 1.0 - t
    if tau <= 0.0:
        return max_guidance
    if tau >= 1.0:
        return 0.0
    r2 = (1.0 - tau) ** 2 / (tau ** 2 + (1.0 - tau) ** 2)
    return min(max_guidance, (1.0 - tau) / (tau * r2))


def guided(velocity: Velocity, inpaint: Inpainting) -> Velocity:
    """The velocity with RTC's inpainting guidance (needs autograd through the network)."""
    weights = inpaint.weights.view(1, -1, 1)

    def v(x: torch.Tensor, t: float) -> torch.Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            vel = velocity(x, t)
            predicted = x - t * vel  # the clean chunk at t = 0 along the current velocity
            error = (inpaint.target.to(predicted.dtype) - predicted) * weights.to(predicted.dtype)
            (grad,) = torch.autograd.grad(predicted, x, grad_outputs=error)
        return vel.detach() - guidance_scale(t, inpaint.max_guidance) * grad

    return v


def guided_clean(clean, inpaint: Inpainting, signal: float, noise: float):
    """A clean-chunk estimate, x -> a_hat(x), with RTC's guidance at the level where
    x = signal * a + noise * eps (see the module docstring): EDM's denoiser D(x; sigma) is one
    (signal 1, noise sigma)."""
    weights = inpaint.weights.view(1, -1, 1)
    tau = signal / (signal + noise)

    def estimate(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            predicted = clean(x)
            error = (inpaint.target.to(predicted.dtype) - predicted) * weights.to(predicted.dtype)
            (grad,) = torch.autograd.grad(predicted, x, grad_outputs=error)
        return predicted.detach() + noise * guidance_scale(1.0 - tau, inpaint.max_guidance) * grad

    return estimate


def guided_noise(predict_noise, inpaint: Inpainting, signal: float, noise: float):
    """A DDPM/DDIM noise prediction, x -> eps(x), with RTC's guidance: the noise that agrees with
    the guided clean estimate."""
    clean = guided_clean(lambda x: (x - noise * predict_noise(x)) / signal, inpaint, signal, noise)
    return lambda x: (x.detach() - signal * clean(x)) / noise
