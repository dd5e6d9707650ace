import pytest
import torch

from librobot_models.frameworks.act import ACTConfig
from librobot_models.registry import get_vla_config, list_vlas


@pytest.mark.parametrize("name", list_vlas())
def test_every_framework_meets_the_model_contract(name):
    """compute_loss -> (finite scalar, float logs); sample_actions -> (B, chunk, action_dim)."""
    config = get_vla_config(name)
    model = config.create()
    batch = config.fake_batch(2)
    loss, logs = model.compute_loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert logs and all(isinstance(v, float) for v in logs.values())
    model.eval()
    with torch.inference_mode():
        actions = model.sample_actions({"images": batch["images"], "state": batch["state"]})
    assert actions.shape == (2, config.chunk_size, config.action_dim)


def test_backprop_reaches_every_trainable_parameter(tiny_act_config):
    model = tiny_act_config.create()
    loss, _ = model.compute_loss(tiny_act_config.fake_batch(2))
    loss.backward()
    no_grad = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    assert no_grad == []


def test_kl_matches_the_posterior_and_vanishes_without_vae(tiny_act_config):
    model = tiny_act_config.create().eval()  # eval: no dropout, so both passes see the same posterior
    batch = tiny_act_config.fake_batch(4)
    _, logs = model.compute_loss(batch)
    mean, logvar = model.encode_latent(batch["state"], batch["actions"], batch["action_is_pad"])
    expected = (0.5 * (mean**2 + logvar.exp() - 1 - logvar)).sum(-1).mean()
    assert logs["kl"] == pytest.approx(expected.item(), rel=1e-5)
    assert logs["kl"] >= 0
    assert logs["loss"] == pytest.approx(logs["l1"] + tiny_act_config.kl_weight * logs["kl"], rel=1e-5)

    plain = tiny_act_config.replace(use_vae=False).create()
    assert not hasattr(plain, "vae_encoder")
    _, logs = plain.compute_loss(batch)
    assert logs["kl"] == 0.0 and logs["loss"] == pytest.approx(logs["l1"])


def test_padded_steps_change_nothing(tiny_act_config):
    """Actions past the episode end are hidden from the CVAE encoder and excluded from the L1."""
    model = tiny_act_config.create().eval()
    batch = tiny_act_config.fake_batch(2)
    pad = batch["action_is_pad"]
    assert pad.any()
    altered = {**batch, "actions": torch.where(pad[..., None], batch["actions"] + 100.0, batch["actions"])}
    torch.manual_seed(0)
    loss, _ = model.compute_loss(batch)
    torch.manual_seed(0)
    loss_altered, _ = model.compute_loss(altered)
    torch.testing.assert_close(loss, loss_altered)


def test_inference_uses_z_zero_and_is_deterministic_in_eval_mode(tiny_act_config):
    model = tiny_act_config.create().eval()
    batch = tiny_act_config.fake_batch(2)
    obs = {"images": batch["images"], "state": batch["state"]}
    first = model.sample_actions(obs)
    torch.testing.assert_close(first, model.sample_actions({**obs, "actions": batch["actions"] * 5}))
    zero = torch.zeros(2, tiny_act_config.latent_dim)
    torch.testing.assert_close(first, model(batch["images"], batch["state"], zero))
    assert not torch.allclose(first, model(batch["images"], batch["state"], zero + 3.0))  # z does matter


def test_images_of_any_size_are_resized(tiny_act_config):
    model = tiny_act_config.create().eval()
    obs = {"images": torch.rand(1, 2, 3, 50, 70), "state": torch.zeros(1, 4)}
    assert model.sample_actions(obs).shape == (1, 8, 3)
    with pytest.raises(ValueError, match="expects 2 cameras"):
        model.sample_actions({"images": torch.rand(1, 1, 3, 32, 32), "state": torch.zeros(1, 4)})


def test_a_few_steps_on_a_fixed_batch_reduce_the_loss(tiny_act_config):
    torch.manual_seed(0)
    config = tiny_act_config.replace(dropout=0.0)
    model = config.create()
    batch = config.fake_batch(4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(30):
        loss, logs = model.compute_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(logs)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["l1"] < 0.9 * history[0]["l1"]


def test_default_config_is_cpu_sized():
    model = ACTConfig().create()
    n_params = sum(p.numel() for p in model.parameters())
    assert 1e6 < n_params < 10e6
