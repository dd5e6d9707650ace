"""The export graph (librobot_models.exported) in eager PyTorch: explicit noise reproduces the heads'
own draws, and the graph's tensor-only inputs (token ids, padded prompt, observation window, noise)
give the chunk `sample_actions` gives. Exporting and onnxruntime are tested in librobot_training."""

import pytest
import torch

from librobot_models.exported import ExportGraph, not_exportable
from librobot_models.frameworks.common import VLMFrameworkConfig
from librobot_models.heads import Conditioning, create_head
from librobot_models.registry import get_vla_config

SHAPES = {"state_dim": 4, "action_dim": 3, "chunk_size": 6, "camera_names": ("front", "wrist"), "image_size": (32, 32)}
HEAD = {"action_dim": 3, "chunk_size": 6, "cond_dim": 16, "hidden_dim": 16, "n_layers": 1, "n_heads": 2}
STOCHASTIC = [
    ("rectified_flow", {"n_sample_steps": 3}),
    ("ot_cfm", {"n_sample_steps": 2, "solver": "heun"}),
    ("ddpm", {"n_train_steps": 5}),
    ("ddim", {"n_train_steps": 10, "n_sample_steps": 3}),
    ("ddim", {"n_train_steps": 10, "n_sample_steps": 3, "eta": 0.5}),
    ("edm", {"n_sample_steps": 3}),
]


def tiny_config(name, **overrides):
    config = get_vla_config(name, **SHAPES, **overrides)
    if isinstance(config, VLMFrameworkConfig):
        config = config.replace(vlm="internvl2-2b", vlm_tiny=True)
    return config


@pytest.mark.parametrize(("name", "fields"), STOCHASTIC, ids=[f"{n}-{i}" for i, (n, _) in enumerate(STOCHASTIC)])
def test_explicit_noise_reproduces_the_generator_draws(name, fields):
    torch.manual_seed(0)
    head = create_head(name, **HEAD, **fields).eval()
    cond = Conditioning(tokens=torch.randn(2, 5, 16), pooled=torch.randn(2, 16))
    expected = head.sample(cond, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    draws = torch.stack([torch.randn(2, 6, 3, generator=g) for _ in range(head.noise_draws())])  # (S, B, k, A)
    torch.testing.assert_close(head.sample(cond, noise=draws), expected, rtol=0, atol=0)
    S = head.noise_draws()
    with pytest.raises(ValueError, match=rf"noise of shape \({S + 1}, 2, 6, 3\), expected \({S}, 2, 6, 3\)"):
        head.sample(cond, noise=torch.zeros(S + 1, 2, 6, 3))


def test_deterministic_heads_take_no_noise():
    assert create_head("mlp_oft", **HEAD).noise_draws() == 0
    assert create_head("transformer", **HEAD).noise_draws() == 0


@pytest.mark.parametrize("name", ["act", "custom", "octo", "groot", "pi0", "openvla", "rt2"])
def test_graph_inputs_give_the_chunk_of_sample_actions(name):
    """Same observation, same noise: the graph (token ids padded to the longest prompt, the window's
    padding and the noise as inputs) and sample_actions agree."""
    config = tiny_config(name)
    torch.manual_seed(0)
    model = config.create().eval()
    graph = ExportGraph(model, config)
    batch = config.fake_batch(1, seed=3)
    batch = {key: batch[key] for key in ("images", "state", "instruction", "observation_is_pad") if key in batch}
    feeds = graph.feeds(batch)
    if graph.noise_draws:  # the draws sample_actions will take from the global RNG, in its order
        torch.manual_seed(11)
        feeds["noise"] = torch.stack([torch.randn(1, config.chunk_size, config.action_dim)
                                      for _ in range(graph.noise_draws)])
    torch.manual_seed(11)
    with torch.no_grad():
        expected = model.sample_actions(batch)
        actual = graph(*(feeds[n] for n in graph.spec.names))
    assert actual.shape == (1, config.chunk_size, config.action_dim)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert [i.name for i in graph.spec.inputs][:2] == ["images", "state"]
    assert ("text_ids" in graph.spec.names) == (name not in ("act", "custom"))
    assert ("observation_is_pad" in graph.spec.names) == (config.observation_history > 1)


def test_what_cannot_be_exported_says_why():
    config = tiny_config("helix")
    assert "System-2" in not_exportable(config.create(), config)
    config = tiny_config("rt2", head={"temperature": 1.0, "hidden_dim": 32, "n_heads": 2})
    assert "temperature 1.0" in not_exportable(config.create(), config)
    with pytest.raises(ValueError, match="System-2"):
        ExportGraph(tiny_config("helix").create(), tiny_config("helix"))
