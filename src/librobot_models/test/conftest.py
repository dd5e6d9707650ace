import pytest
import torch

from librobot_models.frameworks.act import ACTConfig


@pytest.fixture
def tiny_act_config() -> ACTConfig:
    """An ACT small enough for sub-second tests, with two cameras and dims that differ from each other."""
    return ACTConfig(
        state_dim=4,
        action_dim=3,
        chunk_size=8,
        camera_names=("front", "wrist"),
        image_size=(32, 32),
        vision_channels=(16, 32),
        dim_model=32,
        n_heads=4,
        dim_feedforward=64,
        n_encoder_layers=1,
        n_decoder_layers=1,
        n_vae_encoder_layers=1,
        latent_dim=8,
    )


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread: thread hand-offs dominate, more so on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
