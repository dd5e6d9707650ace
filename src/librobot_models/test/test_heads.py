"""Every action head meets the interface, parametrised over heads.HEADS (learning: test_heads_overfit.py)."""

import pytest
import torch

from librobot_models.heads import HEADS, ActionHead, Conditioning, create_head, head_config

TINY = dict(action_dim=3, chunk_size=4, cond_dim=16, hidden_dim=32, n_layers=1, n_heads=4)

# every registered head, plus the variants with code paths of their own
CASES = [(name, {}) for name in HEADS.names()] + [
    ("mlp_oft", {"mode": "pooled"}),
    ("transformer", {"loss": "l2"}),
    ("autoregressive", {"tokenizer": "fast"}),
    ("autoregressive", {"temperature": 1.0}),
    ("ddim", {"eta": 0.5}),
    ("edm", {"solver": "euler"}),
    ("rectified_flow", {"solver": "heun", "time_sampling": "uniform"}),
]
IDS = [name + "".join(f"-{k}={v}" for k, v in extra.items()) for name, extra in CASES]


def make_head(name: str, **fields) -> ActionHead:
    """A tiny head (50 diffusion steps for DDPM / DDIM) with `fields` overriding, same weights every time."""
    torch.manual_seed(0)
    tiny = {**TINY, "n_train_steps": 50} if name in ("ddpm", "ddim") else TINY
    return create_head(name, **{**tiny, **fields})


def make_cond(batch: int = 2, seed: int = 0) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    pad = torch.zeros(batch, 3, dtype=torch.bool)
    pad[0, -1] = True
    tokens, pooled = torch.randn(batch, 3, 16, generator=g), torch.randn(batch, 16, generator=g)
    return Conditioning(tokens=tokens, padding_mask=pad, pooled=pooled)


def make_actions(batch: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 4, 3, generator=g) * 1.6 - 0.8  # inside [-1, 1], as the tokenizers expect


# -- the interface -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, extra", CASES, ids=IDS)
def test_loss_is_finite_and_reaches_every_parameter(name, extra):
    head = make_head(name, **extra)
    pad = torch.zeros(2, 4, dtype=torch.bool)
    pad[1, 3] = True
    loss, logs = head.loss(make_cond(), make_actions(), pad)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert logs["loss"] == pytest.approx(loss.item()) and all(isinstance(v, float) for v in logs.values())
    loss.backward()
    no_grad = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []


@pytest.mark.parametrize("name, extra", CASES, ids=IDS)
def test_sample_shape_and_determinism_given_a_generator(name, extra):
    head = make_head(name, **extra).eval()
    cond = make_cond(batch=3)
    first = head.sample(cond, generator=torch.Generator().manual_seed(7))
    again = head.sample(cond, generator=torch.Generator().manual_seed(7))
    assert first.shape == (3, 4, 3) and torch.isfinite(first).all()
    torch.testing.assert_close(first, again)


@pytest.mark.parametrize("extra", [{"tokenizer": "uniform"}, {"tokenizer": "fast"}, {"temperature": 1.0}])
def test_kv_cached_decoding_gives_the_tokens_of_full_prefix_passes(extra):
    head = make_head("autoregressive", **extra).eval()
    cond = make_cond()
    cached = head.sample(cond, torch.Generator().manual_seed(3))
    uncached = head.sample(cond, torch.Generator().manual_seed(3), use_cache=False)
    torch.testing.assert_close(cached, uncached)


@pytest.mark.parametrize("name", ["ddpm", "edm", "ot_cfm", "autoregressive"])
def test_padded_steps_do_not_change_the_loss(name):
    head = make_head(name)
    actions, pad = make_actions(), torch.zeros(2, 4, dtype=torch.bool)
    pad[0, 2:] = True
    altered = torch.where(pad[..., None], torch.full_like(actions, 0.9), actions)
    torch.manual_seed(3)
    loss, _ = head.loss(make_cond(), actions, pad)
    torch.manual_seed(3)
    loss_altered, _ = head.loss(make_cond(), altered, pad)
    torch.testing.assert_close(loss, loss_altered)


def test_conditioning_accepts_tokens_pooled_or_both():
    tokens, pooled = torch.randn(2, 3, 8), torch.randn(2, 8)
    pad = torch.tensor([[False, False, True], [False, False, False]])
    only_tokens = Conditioning(tokens=tokens, padding_mask=pad)
    torch.testing.assert_close(only_tokens.as_pooled()[0], tokens[0, :2].mean(0))  # padding left out
    assert Conditioning(pooled=pooled).as_tokens()[0].shape == (2, 1, 8)
    both, both_pad = Conditioning(tokens=tokens, padding_mask=pad, pooled=pooled).as_tokens()
    assert both.shape == (2, 4, 8) and both_pad[:, 0].logical_not().all() and torch.equal(both[:, 0], pooled)
    with pytest.raises(ValueError, match="needs tokens"):
        Conditioning()
    with pytest.raises(ValueError, match=r"padding_mask must be bool \(2, 3\)"):
        Conditioning(tokens=tokens, padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="must share the batch size and the width"):
        Conditioning(tokens=tokens, pooled=torch.randn(2, 5))


def test_heads_reject_mismatched_shapes():
    head = make_head("mlp_oft")
    with pytest.raises(ValueError, match="conditioning width 8, expected cond_dim 16"):
        head.sample(Conditioning(pooled=torch.randn(2, 8)))
    with pytest.raises(ValueError, match=r"actions of shape \(2, 5, 3\), expected \(2, 4, 3\)"):
        head.loss(make_cond(), torch.zeros(2, 5, 3))


def test_create_head_names_and_errors():
    assert HEADS.names() == sorted(
        ["mlp_oft", "transformer", "autoregressive", "ddpm", "ddim", "edm", "rectified_flow", "ot_cfm"]
    )
    assert all(cls.name == name for name, cls in ((n, HEADS.get(n)) for n in HEADS.names()))
    with pytest.raises(ValueError, match=r"unknown action head 'diffusion'\..* Available: autoregressive, ddim"):
        create_head("diffusion")
    expected = r"DDIMConfig.n_sample_steps = 200 is invalid: expected an int in \[1, n_train_steps = 100\]"
    with pytest.raises(ValueError, match=expected):
        head_config("ddim", n_sample_steps=200)
    with pytest.raises(ValueError, match=r"MLPOFTConfig: unknown keys \['modes'\]"):
        head_config("mlp_oft", modes="pooled")
    config = head_config("ot_cfm", **TINY)
    assert config.minibatch_ot and config.sigma_min > 0
    assert type(config).from_json(config.to_json()) == config


def test_quantile_tokenizer_must_be_fitted_and_travels_in_the_state_dict():
    head = make_head("autoregressive", bin_edges="quantile")
    with pytest.raises(ValueError, match="call head.fit_tokenizer"):
        head.loss(make_cond(), make_actions())
    head.fit_tokenizer(make_actions(64, seed=5))
    head.loss(make_cond(), make_actions())
    again = make_head("autoregressive", bin_edges="quantile")
    again.load_state_dict(head.state_dict())
    torch.testing.assert_close(again.tokenizer.edges, head.tokenizer.edges)
    again.loss(make_cond(), make_actions())  # fitted state came with the weights


@pytest.mark.parametrize("name", ["rectified_flow", "ot_cfm", "ddim", "ddpm", "edm"])
def test_rtc_guidance_makes_a_chunk_agree_with_the_frozen_steps(name):
    """RTC's guided sampling (heads.guidance): the steps weighted 1 come out at the target, the
    free ones (weight 0) stay close to what the same noise gives unguided (DDPM draws fresh
    noise at every step, so its free steps move more)."""
    from librobot_models.heads import Conditioning, Inpainting, create_head
    from librobot_models.heads.guidance import guidance_scale

    torch.manual_seed(0)
    head = create_head(name, action_dim=6, chunk_size=20, cond_dim=32, hidden_dim=64, n_layers=2).eval()
    assert head.supports_inpainting
    cond = Conditioning(tokens=torch.randn(1, 4, 32), pooled=torch.randn(1, 32))
    target = 0.5 * torch.randn(1, 20, 6)
    weights = torch.zeros(20)
    weights[:5] = 1.0
    free = head.sample(cond, torch.Generator().manual_seed(1))
    guided = head.sample(cond, torch.Generator().manual_seed(1), inpaint=Inpainting(target, weights))
    error_free = (free - target)[0, :5].abs().mean()
    error_guided = (guided - target)[0, :5].abs().mean()
    assert error_guided < 0.2 * error_free, (error_guided, error_free)
    assert (guided - free)[0, 12:].abs().mean() < 0.2  # far from the frozen steps: barely touched
    assert guidance_scale(1.0, 5.0) == 5.0 and guidance_scale(0.0, 5.0) == 0.0  # noise end, data end
    with pytest.raises(ValueError, match=r"inpainting weights of shape \(19,\), expected \(20,\)"):
        head.sample(cond, inpaint=Inpainting(target, weights[:19]))


def test_heads_that_cannot_be_guided_say_so():
    from librobot_models.heads import create_head

    assert not create_head("mlp_oft", action_dim=2, chunk_size=4, cond_dim=8, hidden_dim=16, n_heads=2).supports_inpainting


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_diffusion_samples_reach_the_whole_range_of_standardised_training_actions(name):
    """Actions are z-scores here (demonstrations span about +-3). With a denoiser that knows the
    clean chunk, sampling returns it: the clamp follows the range the head was trained on, not
    Diffusion Policy's [-1, 1] (its min-max scaled range), which held Octo's arm inside one
    standard deviation of the data."""
    head = make_head(name)
    cond = make_cond()
    clean = torch.linspace(-2.9, 2.4, 4 * 3).view(1, 4, 3).expand(2, 4, 3).contiguous()  # (B, k, A)
    head.loss(cond, clean)  # training records the range of the actions
    head.loss(cond, clean * 0.5)  # a narrower batch does not shrink it
    torch.testing.assert_close(head.action_low, clean.amin((0, 1)))
    torch.testing.assert_close(head.action_high, clean.amax((0, 1)))

    def oracle(x, t, cond):  # the exact noise of x_t around `clean`
        abar = torch.tensor([head.alpha_bars[int(s)] for s in t], dtype=x.dtype).view(-1, 1, 1)
        return (x - abar.sqrt() * clean) / (1 - abar).sqrt()

    head.eval().denoiser.forward = oracle
    torch.testing.assert_close(head.sample(cond, torch.Generator().manual_seed(0)), clean, atol=1e-4, rtol=0)
    # the range travels with the weights
    loaded = make_head(name)
    loaded.load_state_dict(head.state_dict())
    torch.testing.assert_close(loaded.clip_bounds()[0], clean.amin((0, 1)))
    # half the range: the samples stay inside it
    narrow = make_head(name, clip_sample=0.5)
    narrow.load_state_dict(head.state_dict())
    narrow.eval().denoiser.forward = oracle
    sampled = narrow.sample(cond, torch.Generator().manual_seed(0))
    low, high = narrow.clip_bounds()
    assert torch.all(sampled >= low - 1e-5) and torch.all(sampled <= high + 1e-5)
    assert torch.all(high - low < clean.amax((0, 1)) - clean.amin((0, 1)))
