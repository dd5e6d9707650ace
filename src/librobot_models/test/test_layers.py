import pytest
import torch

from librobot_models.layers import (
    MLP,
    Attention,
    ConvImageEncoder,
    TransformerDecoder,
    TransformerEncoder,
    resize_images,
    sinusoidal_1d,
    sinusoidal_2d,
)


def test_sinusoidal_embeddings_are_distinct_and_bounded():
    pe = sinusoidal_1d(10, 16)
    assert pe.shape == (10, 16) and pe.abs().max() <= 1.0
    torch.testing.assert_close(pe[0], torch.cat([torch.zeros(8), torch.ones(8)]))
    grid = sinusoidal_2d(3, 4, 32)
    assert grid.shape == (12, 32)
    assert torch.unique(grid, dim=0).shape[0] == 12  # every cell has its own code
    torch.testing.assert_close(grid[0, :16], grid[3, :16])  # same row -> same first half
    with pytest.raises(ValueError, match="multiple of 4"):
        sinusoidal_2d(2, 2, 30)


def test_attention_ignores_padded_keys():
    torch.manual_seed(0)
    attention = Attention(16, 4).eval()
    q, kv = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    pad = torch.tensor([[False, False, False, True, True]] * 2)
    out = attention(q, kv, kv, key_padding_mask=pad)
    kv_changed = kv.clone()
    kv_changed[:, 3:] = 99.0
    torch.testing.assert_close(out, attention(q, kv_changed, kv_changed, key_padding_mask=pad))
    torch.testing.assert_close(out, attention(q, kv[:, :3], kv[:, :3]))


@pytest.mark.parametrize("pre_norm", [False, True])
def test_encoder_decoder_shapes(pre_norm):
    encoder = TransformerEncoder(2, 32, 4, 64, pre_norm=pre_norm)
    decoder = TransformerDecoder(2, 32, 4, 64, pre_norm=pre_norm)
    memory = encoder(torch.randn(2, 7, 32), pos=torch.randn(1, 7, 32))
    out = decoder(torch.zeros(2, 5, 32), memory, pos=torch.randn(1, 5, 32), is_causal=True)
    assert memory.shape == (2, 7, 32) and out.shape == (2, 5, 32)


def test_conv_encoder_feature_size_matches_output():
    encoder = ConvImageEncoder((16, 32, 32))
    features = encoder(torch.rand(2, 3, 45, 60))
    assert features.shape == (2, 32, *encoder.feature_size((45, 60))) == (2, 32, 6, 8)


def test_resize_and_mlp():
    images = torch.rand(2, 3, 3, 40, 50)
    assert resize_images(images, (20, 25)).shape == (2, 3, 3, 20, 25)
    assert resize_images(images, (40, 50)) is images
    assert MLP(4, [8, 8], 2)(torch.zeros(5, 4)).shape == (5, 2)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        MLP(4, [8], 2, act="swish")
