"""Shared building blocks, written once and composed by the frameworks."""

from librobot_models.layers.mlp import ACTIVATIONS, MLP, activation
from librobot_models.layers.positional import sinusoidal_1d, sinusoidal_2d
from librobot_models.layers.transformer import (
    Attention,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from librobot_models.layers.vision import ConvImageEncoder, resize_images

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "Attention",
    "ConvImageEncoder",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "activation",
    "resize_images",
    "sinusoidal_1d",
    "sinusoidal_2d",
]
