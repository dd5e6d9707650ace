"""The sampling loop shared by every generative head, and the two kinds of step it takes.

    integrate(x, times, step)      x_T -> ... -> x_0: one step(x, t, t_next) per consecutive pair of times
    ode_step(velocity, "heun")     a step of dx/dt = velocity(x, t): Euler or Heun (2nd order)
    ddim_update(x, eps, ...)       a step of DDIM (Song et al. 2021); eta = 1 is DDPM's ancestral step

Which head uses which:
    rectified_flow, ot_cfm   ode_step over t from 1 (noise) to 0, velocity = the network's output
    edm                      ode_step over the Karras sigmas, velocity = (x - D(x; sigma)) / sigma
    ddpm, ddim               ddim_update over timesteps T-1 .. 0 (eta = 1 all steps, eta = 0 a subsequence)
DDIM with eta = 0 is itself Euler's method on EDM's ODE in the variables x / sqrt(abar) and
sigma = sqrt((1 - abar) / abar), so the two families differ only in how the network is parametrised.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

Step = Callable[[torch.Tensor, float, float], torch.Tensor]  # (x, t, t_next) -> x at t_next
Velocity = Callable[[torch.Tensor, float], torch.Tensor]  # (x, t) -> dx/dt, same shape as x

ODE_METHODS = ("euler", "heun")


def integrate(x: torch.Tensor, times: Sequence[float], step: Step) -> torch.Tensor:
    """Carry x from times[0] to times[-1] through every time in between."""
    for t, t_next in zip(times[:-1], times[1:]):
        x = step(x, float(t), float(t_next))
    return x


def ode_step(velocity: Velocity, method: str = "euler") -> Step:
    """A step of the ODE dx/dt = velocity(x, t) by Euler's method or Heun's (Karras et al. 2022, alg. 1).

    Heun's correction averages the slope at both ends; it is skipped on a step that ends at t = 0,
    where EDM's velocity (x - D) / sigma is undefined, so that step is Euler's.
    """
    if method not in ODE_METHODS:
        raise ValueError(f"unknown ODE method {method!r}; expected one of {list(ODE_METHODS)}")

    def step(x: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
        dt = t_next - t
        slope = velocity(x, t)
        x_next = x + dt * slope
        if method == "heun" and t_next != 0:
            x_next = x + dt * 0.5 * (slope + velocity(x_next, t_next))
        return x_next

    return step


def ddim_update(
    x: torch.Tensor,
    eps: torch.Tensor,
    alpha_bar: float,
    alpha_bar_prev: float,
    eta: float,
    noise: torch.Tensor | None = None,
    clip: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """x_t -> x_prev given the predicted noise eps (Song et al. 2021, eq. 12).

        x0    = (x - sqrt(1 - abar) * eps) / sqrt(abar)       (clamped into clip = (low, high) if given)
        s     = eta * sqrt((1 - abar_prev) / (1 - abar)) * sqrt(1 - abar / abar_prev)
        x_prev = sqrt(abar_prev) * x0 + sqrt(1 - abar_prev - s^2) * eps + s * noise

    With eta = 1, s^2 is the DDPM posterior variance and the mean is the DDPM posterior mean; with
    eta = 0 the step is deterministic. alpha_bar_prev = 1 (past the last step) returns x0.
    """
    a, a_prev = alpha_bar, alpha_bar_prev
    x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
    if clip is not None:
        x0 = torch.clamp(x0, *clip)
        eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)  # the noise consistent with the clipped x0
    s = eta * math.sqrt((1 - a_prev) / (1 - a)) * math.sqrt(1 - a / a_prev)
    direction = math.sqrt(max(1 - a_prev - s**2, 0.0))
    x_prev = math.sqrt(a_prev) * x0 + direction * eps
    if s > 0:
        if noise is None:
            raise ValueError(f"ddim_update with eta = {eta} needs noise")
        x_prev = x_prev + s * noise
    return x_prev
