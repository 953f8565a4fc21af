"""Time-series encoder families: ``x [B, C, T] -> latents [B, L, H]``.

Every class takes ``(in_channels, length, latent_dim, num_tokens=..., *, <family knobs>)`` and has a
``test_params`` class attribute with tiny knob values. :func:`build_encoder` looks a family up by name.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tsllm.encoders.cnn import CNNEncoder
from tsllm.encoders.inception import InceptionEncoder
from tsllm.encoders.layers import TimeSeriesEncoder
from tsllm.encoders.mlp import MLPEncoder
from tsllm.encoders.resnet import ResNetEncoder
from tsllm.encoders.transformer import TransformerEncoder

__all__ = [
    "ENCODERS",
    "CNNEncoder",
    "InceptionEncoder",
    "MLPEncoder",
    "ResNetEncoder",
    "TimeSeriesEncoder",
    "TransformerEncoder",
    "build_encoder",
]

ENCODERS: dict[str, type[nn.Module]] = {
    "mlp": MLPEncoder,
    "cnn": CNNEncoder,
    "inception": InceptionEncoder,
    "resnet": ResNetEncoder,
    "transformer": TransformerEncoder,
}


def build_encoder(name: str, *, in_channels: int, length: int, latent_dim: int, **kwargs: Any) -> nn.Module:
    """Instantiate the encoder registered as ``name``; ``kwargs`` are ``num_tokens`` and family knobs."""
    try:
        cls = ENCODERS[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; registered: {', '.join(sorted(ENCODERS))}") from None
    return cls(in_channels, length, latent_dim, **kwargs)
