"""Shared building blocks, written once and composed by the frameworks and the action heads."""

from librobot_models.layers.attention import Attention, AttentionConfig, KVCache, attention_mask
from librobot_models.layers.encoders import (
    LSTMHistoryEncoder,
    MLPStateEncoder,
    TransformerHistoryEncoder,
    TransformerStateEncoder,
)
from librobot_models.layers.fusion import CrossAttentionFusion, FiLM
from librobot_models.layers.mlp import ACTIVATIONS, MLP, GatedLinear, GeGLU, SwiGLU, activation
from librobot_models.layers.norms import NORMS, TokenGroupNorm, norm
from librobot_models.layers.positional import (
    alibi_bias,
    alibi_slopes,
    apply_rotary,
    sinusoidal_1d,
    sinusoidal_2d,
)
from librobot_models.layers.transformer import (
    Sublayer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from librobot_models.layers.vision import ConvImageEncoder, ImageTokenizer, resize_images

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "NORMS",
    "Attention",
    "AttentionConfig",
    "ConvImageEncoder",
    "CrossAttentionFusion",
    "FiLM",
    "GatedLinear",
    "GeGLU",
    "ImageTokenizer",
    "KVCache",
    "LSTMHistoryEncoder",
    "MLPStateEncoder",
    "Sublayer",
    "SwiGLU",
    "TokenGroupNorm",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "TransformerHistoryEncoder",
    "TransformerStateEncoder",
    "activation",
    "alibi_bias",
    "alibi_slopes",
    "apply_rotary",
    "attention_mask",
    "norm",
    "resize_images",
    "sinusoidal_1d",
    "sinusoidal_2d",
]
