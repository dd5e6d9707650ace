"""The math under the heads against closed forms: noise schedules, the shared samplers with exact
(analytic) denoisers for Gaussian data, the action tokenizers and the optimal-transport assignment."""

import itertools
import math

import numpy as np
import pytest
import torch

from librobot_models.heads.base import hold_last_valid
from librobot_models.heads.optimal_transport import linear_assignment, pair_noise
from librobot_models.heads.sampling import ddim_update, integrate, ode_step
from librobot_models.heads.schedules import (
    alpha_bars,
    cosine_alpha_bar,
    cosine_betas,
    edm_preconditioning,
    karras_sigmas,
    linear_betas,
    spaced_timesteps,
)
from librobot_models.heads.tokens import DCTTokenizer, UniformBinTokenizer, dct_matrix

# Data ~ N(MU, S^2) per entry: every denoiser and velocity below is exact, so samplers can be checked.
MU, S = 0.3, 0.5


# -- schedules -------------------------------------------------------------------------------------
@pytest.mark.parametrize("T", [50, 1000])
def test_ddpm_alpha_bar_is_monotone_and_matches_the_closed_form(T):
    linear = alpha_bars(linear_betas(T))
    betas = [(1e-4 + (0.02 - 1e-4) * s / (T - 1)) * 1000 / T for s in range(T)]
    closed = torch.tensor([math.prod(1 - b for b in betas[: t + 1]) for t in range(T)], dtype=torch.float64)
    torch.testing.assert_close(linear, closed)
    cosine = alpha_bars(cosine_betas(T))
    uncapped = cosine_betas(T) < 0.999
    t = torch.arange(1, T + 1)
    torch.testing.assert_close(cosine[uncapped], cosine_alpha_bar(t, T)[uncapped])  # abar_t = f(t+1)/f(0)
    for abar in (linear, cosine):
        assert (abar[1:] < abar[:-1]).all() and 0 < abar[-1] < 1e-2 and abar[0] > 0.99


def test_spaced_timesteps_cover_the_range_in_order():
    assert spaced_timesteps(100, 100) == list(range(99, -1, -1))
    steps = spaced_timesteps(100, 10)
    assert len(steps) == 10 and steps[0] == 99 and steps[-1] == 0 and steps == sorted(steps, reverse=True)


def test_edm_sigma_schedule_endpoints_and_preconditioning():
    sigmas = karras_sigmas(18, 0.002, 80.0, rho=7.0)
    assert sigmas.shape == (19,)
    assert sigmas[0].item() == pytest.approx(80.0) and sigmas[-2].item() == pytest.approx(0.002)
    assert sigmas[-1] == 0 and (sigmas[1:] < sigmas[:-1]).all()
    sigma = torch.tensor([1e-8, 0.5, 10.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, sigma_data=0.5)
    assert c_skip[0].item() == pytest.approx(1.0) and c_out[0].item() == pytest.approx(0.0, abs=1e-7)
    assert c_skip[1].item() == pytest.approx(0.5)  # sigma = sigma_data: half skip
    torch.testing.assert_close(c_in**2 * (sigma**2 + 0.25), torch.ones(3, dtype=torch.float64))  # unit input
    torch.testing.assert_close(c_noise, sigma.log() / 4)


# -- samplers with exact denoisers -----------------------------------------------------------------
def gaussian_eps(x, abar):
    """The exact noise prediction E[eps | x_t] for data ~ N(MU, S^2)."""
    x0 = MU + math.sqrt(abar) * S**2 / (abar * S**2 + 1 - abar) * (x - math.sqrt(abar) * MU)
    return (x - math.sqrt(abar) * x0) / math.sqrt(1 - abar)


def test_ddim_step_with_eta_one_is_the_ddpm_posterior():
    """eta = 1: mean = DDPM's posterior mean mu~(x_t, x0), standard deviation = sqrt(beta~_t)."""
    abar = alpha_bars(cosine_betas(100)).tolist()
    torch.manual_seed(0)
    x, eps, z = torch.randn(3, 4, 2, dtype=torch.float64).unbind(0)
    for t in (1, 10, 50, 98):
        a, a_prev = abar[t], abar[t - 1]
        beta = 1 - a / a_prev
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        mean = math.sqrt(a_prev) * beta / (1 - a) * x0 + math.sqrt(1 - beta) * (1 - a_prev) / (1 - a) * x
        std = math.sqrt((1 - a_prev) / (1 - a) * beta)
        torch.testing.assert_close(ddim_update(x, eps, a, a_prev, eta=1.0, noise=torch.zeros_like(x)), mean)
        torch.testing.assert_close(ddim_update(x, eps, a, a_prev, eta=1.0, noise=z), mean + std * z)
    clean = (x - math.sqrt(1 - abar[0]) * eps) / math.sqrt(abar[0])
    torch.testing.assert_close(ddim_update(x, eps, abar[0], 1.0, eta=0.0), clean)  # past step 0: x0


def test_ddpm_ancestral_sampler_recovers_gaussian_data():
    """All T steps with eta = 1 (DDPM) turn noise into samples with the data's mean and std."""
    T = 1000
    abar = alpha_bars(linear_betas(T)).tolist()
    g = torch.Generator().manual_seed(0)

    def step(x, t, t_prev):
        a_prev = abar[int(t_prev)] if t_prev >= 0 else 1.0
        noise = torch.randn(x.shape, dtype=x.dtype, generator=g)
        return ddim_update(x, gaussian_eps(x, abar[int(t)]), abar[int(t)], a_prev, 1.0, noise)

    x_T = torch.randn(20000, dtype=torch.float64, generator=g)
    samples = integrate(x_T, [*range(T - 1, -1, -1), -1], step)
    assert samples.mean().item() == pytest.approx(MU, abs=0.02)
    assert samples.std().item() == pytest.approx(S, abs=0.02)


def ddim_solve(x_T, n_steps):
    """DDIM, eta = 0, over n_steps of T = 1000 (linear betas), with the exact noise prediction."""
    abar = alpha_bars(linear_betas(1000)).tolist()

    def step(x, t, t_prev):
        a_prev = abar[int(t_prev)] if t_prev >= 0 else 1.0
        return ddim_update(x, gaussian_eps(x, abar[int(t)]), abar[int(t)], a_prev, eta=0.0)

    return integrate(x_T, [*spaced_timesteps(1000, n_steps), -1], step)


def ddim_exact(x_T):
    """The probability-flow ODE keeps (y - MU) / sqrt(S^2 + sigma^2) constant, y = x / sqrt(abar),
    sigma = sqrt((1 - abar) / abar): DDIM's variables."""
    abar_T = alpha_bars(linear_betas(1000))[-1].item()
    sigma_T = math.sqrt((1 - abar_T) / abar_T)
    return MU + S * (x_T / math.sqrt(abar_T) - MU) / math.sqrt(S**2 + sigma_T**2)


def edm_solve(method):
    def solve(x_T, n_steps):
        def velocity(x, sigma):  # dx/dsigma = (x - D(x; sigma)) / sigma with the exact D
            return (x - (MU + S**2 / (S**2 + sigma**2) * (x - MU))) / sigma

        return integrate(80.0 * x_T, karras_sigmas(n_steps, 0.002, 80.0).tolist(), ode_step(velocity, method))

    return solve


def edm_exact(x_T):
    return MU + S * (80.0 * x_T - MU) / math.sqrt(S**2 + 80.0**2)  # (x - MU) / sqrt(S^2 + sigma^2) constant


def flow_solve(method):
    def solve(x_T, n_steps):
        def velocity(x, t):  # x_t = t eps + (1 - t) a ~ N(m, s^2): exact velocity m' + s'/s (x - m)
            m, s = (1 - t) * MU, math.sqrt(t**2 + (1 - t) ** 2 * S**2)
            return -MU + (t - (1 - t) * S**2) / s**2 * (x - m)

        return integrate(x_T, torch.linspace(1, 0, n_steps + 1).tolist(), ode_step(velocity, method))

    return solve


def flow_exact(x_T):
    return MU + S * x_T  # the flow keeps (x - m) / s constant, s = 1 at t = 1 and S at t = 0


@pytest.mark.parametrize(
    "solve, exact, order, n_steps, tol",
    [
        (ddim_solve, ddim_exact, 1, 500, 0.02),
        (edm_solve("euler"), edm_exact, 1, 200, 0.03),
        (edm_solve("heun"), edm_exact, 2, 100, 0.01),
        (flow_solve("euler"), flow_exact, 1, 100, 0.03),
        (flow_solve("heun"), flow_exact, 2, 20, 0.015),
    ],
    ids=["ddim", "edm-euler", "edm-heun", "flow-euler", "flow-heun"],
)
def test_deterministic_samplers_converge_to_the_exact_ode_solution(solve, exact, order, n_steps, tol):
    """With exact denoisers for Gaussian data, each sampler lands on the ODE's closed-form solution, and
    doubling the steps divides the error by 2^order (Euler and DDIM first order, Heun second)."""
    x_T = torch.randn(2000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    coarse = (solve(x_T, n_steps // 2) - exact(x_T)).abs().max().item()
    fine = (solve(x_T, n_steps) - exact(x_T)).abs().max().item()
    assert fine < tol
    assert coarse / fine > 0.8 * 2**order


# -- tokenizers ------------------------------------------------------------------------------------
def test_uniform_bins_round_trip_within_half_a_bin():
    tokenizer = UniformBinTokenizer(action_dim=3, n_bins=256)
    g = torch.Generator().manual_seed(0)
    actions = torch.rand(8, 5, 3, generator=g) * 2 - 1
    actions[0, 0] = torch.tensor([-1.0, 1.0, 0.0])  # the ends and an edge
    tokens, token_is_pad = tokenizer.encode(actions, torch.zeros(8, 5, dtype=torch.bool))
    assert tokens.shape == (8, 15) and tokens.min() >= 0 and tokens.max() <= 255 and not token_is_pad.any()
    assert (tokenizer.decode(tokens) - actions).abs().max() <= 1 / 256 + 1e-6  # half of the 2/256 bin width
    outside, _ = tokenizer.encode(torch.tensor([[[-3.0, 3.0, 0.0]]]), torch.zeros(1, 1, dtype=torch.bool))
    assert outside[0, :2].tolist() == [0, 255]  # clipped to the end bins
    pad = torch.zeros(8, 5, dtype=torch.bool)
    pad[1, 3:] = True
    assert tokenizer.encode(actions, pad)[1].view(8, 5, 3)[1, 3:].all()  # step-major: 3 tokens per step


def test_quantile_bins_follow_the_data_and_round_trip_within_half_a_bin():
    tokenizer = UniformBinTokenizer(action_dim=2, n_bins=16)
    g = torch.Generator().manual_seed(0)
    narrow, flat = torch.randn(4000, generator=g) * 0.1, torch.rand(4000, generator=g) * 2 - 1
    data = torch.stack([narrow, flat], -1)  # (N, 2)
    tokenizer.fit(data)
    tokens, _ = tokenizer.encode(data.view(-1, 1, 2), torch.zeros(4000, 1, dtype=torch.bool))
    counts = torch.bincount(tokens[:, 0], minlength=16)
    assert counts.min() >= 200 and counts.max() <= 300  # ~4000 / 16 in every bin
    edges = tokenizer.edges  # (2, 17)
    decoded = tokenizer.decode(tokens).view(-1, 2)
    half_width = (edges[:, 1:] - edges[:, :-1]).gather(1, tokens.T) / 2  # (2, N): the containing bin's
    assert ((decoded - data).abs().T <= half_width + 1e-6).all()


def test_dct_is_orthonormal_dct_ii():
    n = 6
    basis = dct_matrix(n)
    expected = torch.tensor(
        [
            [math.sqrt((1 if f == 0 else 2) / n) * math.cos(math.pi * (t + 0.5) * f / n) for t in range(n)]
            for f in range(n)
        ]
    )
    torch.testing.assert_close(basis, expected)
    torch.testing.assert_close(basis @ basis.T, torch.eye(n), atol=1e-6, rtol=0)  # inverse = transpose
    x = torch.randn(n, 3)
    torch.testing.assert_close(basis.T @ (basis @ x), x, atol=1e-5, rtol=0)


def test_fast_tokens_round_trip_within_the_rounding_bound():
    k, scale = 10, 20.0
    tokenizer = DCTTokenizer(chunk_size=k, action_dim=2, scale=scale)
    t = torch.linspace(0, 1, k)
    smooth = torch.stack([0.8 * torch.sin(3 * t), 0.5 - t], -1)[None]  # (1, k, 2)
    rough = torch.rand(4, k, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for actions in (smooth, rough, torch.ones(1, k, 2), -torch.ones(1, k, 2)):
        tokens, token_is_pad = tokenizer.encode(actions, torch.zeros(actions.shape[:2], dtype=torch.bool))
        assert tokens.min() >= 0 and tokens.max() < tokenizer.vocab_size and not token_is_pad.any()
        assert (tokenizer.decode(tokens) - actions).abs().max() <= 0.5 * math.sqrt(k) / scale
    constant, _ = tokenizer.encode(torch.full((1, k, 2), 0.5), torch.zeros(1, k, dtype=torch.bool))
    assert (constant[0, 2:] == tokenizer.max_coeff).all()  # a constant chunk has only DC coefficients


def test_padding_is_filled_with_the_last_valid_action():
    actions = torch.arange(12.0).view(2, 3, 2)
    pad = torch.tensor([[False, True, True], [False, False, False]])
    filled = hold_last_valid(actions, pad)
    assert filled[0].tolist() == [[0.0, 1.0]] * 3 and torch.equal(filled[1], actions[1])


# -- optimal transport -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_linear_assignment_matches_brute_force(seed):
    cost = np.random.default_rng(seed).random((6, 6))
    if seed == 4:
        cost = np.round(cost * 3)  # many ties
    best = min(itertools.permutations(range(6)), key=lambda p: sum(cost[i, p[i]] for i in range(6)))
    found = linear_assignment(cost)
    assert sorted(found.tolist()) == list(range(6))
    assert sum(cost[i, found[i]] for i in range(6)) == pytest.approx(sum(cost[i, best[i]] for i in range(6)))


def test_ot_pairing_beats_random_pairing():
    g = torch.Generator().manual_seed(0)
    actions = torch.rand(32, 4, 3, generator=g) * 2 - 1
    noise = torch.randn(32, 4, 3, generator=g)
    paired = pair_noise(noise, actions, torch.zeros(32, 4, dtype=torch.bool))
    assert torch.equal(paired.sort(dim=0).values, noise.sort(dim=0).values)  # a reordering of the noise

    def total(n):
        return ((n - actions) ** 2).sum().item()

    random_costs = [total(noise[torch.randperm(32, generator=g)]) for _ in range(20)]
    assert total(paired) < 0.9 * min(random_costs)
