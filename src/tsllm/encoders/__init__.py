"""Time-series encoder families: ``x [B, C, T] -> latents [B, L, H]``.

Every class takes ``(in_channels, length, latent_dim, num_tokens=..., *, <family knobs>)`` and has a
``test_params`` class attribute with tiny knob values. :func:`build_encoder` looks a family up by name.
Our own families (``mlp`` ... ``transformer``) are the default; ``study_*`` are the study's networks.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tsllm.encoders.cnn import CNNEncoder
from tsllm.encoders.inception import InceptionEncoder
from tsllm.encoders.layers import TimeSeriesEncoder
from tsllm.encoders.mlp import MLPEncoder
from tsllm.encoders.resnet import ResNetEncoder
from tsllm.encoders.study_attention import StudyAttentionEncoder
from tsllm.encoders.study_cnn import StudyCNNEncoder
from tsllm.encoders.study_inception import StudyInceptionEncoder
from tsllm.encoders.study_mlp import StudyMLPEncoder
from tsllm.encoders.study_resnet import StudyResNetEncoder
from tsllm.encoders.transformer import TransformerEncoder

__all__ = [
    "ENCODERS",
    "CNNEncoder",
    "InceptionEncoder",
    "MLPEncoder",
    "ResNetEncoder",
    "StudyAttentionEncoder",
    "StudyCNNEncoder",
    "StudyInceptionEncoder",
    "StudyMLPEncoder",
    "StudyResNetEncoder",
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
    # The study's public code, layer by layer (STUDY.md); ours above stay the default.
    "study_inception": StudyInceptionEncoder,
    "study_cnn": StudyCNNEncoder,
    "study_resnet": StudyResNetEncoder,
    "study_mlp": StudyMLPEncoder,
    "study_attention": StudyAttentionEncoder,
}


def build_encoder(name: str, *, in_channels: int, length: int, latent_dim: int, **kwargs: Any) -> nn.Module:
    """Instantiate the encoder registered as ``name``; ``kwargs`` are ``num_tokens`` and family knobs."""
    try:
        cls = ENCODERS[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; registered: {', '.join(sorted(ENCODERS))}") from None
    return cls(in_channels, length, latent_dim, **kwargs)
