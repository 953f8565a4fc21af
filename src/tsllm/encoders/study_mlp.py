"""The study's MLP encoder, layer by layer.

Shapes with the defaults (hidden=(512, 1024, 2048), num_tokens=1), for ``x [B, C, T]``::

    [B, C, T] -> flatten -> [B, C*T]
              -> Linear(C*T, 512) -> ReLU -> Linear(512, 1024) -> ReLU -> Linear(1024, 2048) -> ReLU
              -> Linear(2048, L*H) -> [B, L, H] -> LayerNorm(H) -> [B, L, H]

The study emits one token (L=1) from a one-channel series; here C channels are flattened together
(C*T inputs), and L > 1 widens the last Linear to L*H with the LayerNorm applied to each token. The
encoder only accepts the ``length`` it was built for.

Differences from :class:`~tsllm.encoders.mlp.MLPEncoder` (ours, Wang et al. 2017): no dropout, widening
layers 512-2048 instead of 500-wide ones, and a LayerNorm on the output.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import ClassVar

from torch import Tensor, nn

from tsllm.encoders.layers import TimeSeriesEncoder, stack_widths

__all__ = ["StudyMLPEncoder"]


class StudyMLPEncoder(TimeSeriesEncoder):
    """Widening Linear-ReLU layers over the flattened series, then Linear to L*H and LayerNorm(H)."""

    test_params: ClassVar[dict] = {"hidden": (8, 16)}

    def __init__(
        self,
        in_channels: int,
        length: int,
        latent_dim: int,
        num_tokens: int = 1,
        *,
        hidden: Sequence[int] = (512, 1024, 2048),
    ) -> None:
        super().__init__(in_channels, length, latent_dim, num_tokens)
        widths = stack_widths(in_channels * length, hidden, num_tokens * latent_dim, knob="hidden")
        layers: list[nn.Module] = [nn.Flatten()]
        for c_in, c_out in pairwise(widths):
            layers += [nn.Linear(c_in, c_out), nn.ReLU()]
        self.net = nn.Sequential(*layers[:-1])  # ReLU between the Linears, none after the last
        self.norm = nn.LayerNorm(latent_dim)

    def encode(self, x: Tensor) -> Tensor:
        if x.shape[2] != self.length:
            raise ValueError(f"StudyMLPEncoder was built for length {self.length}, got T={x.shape[2]}")
        return self.norm(self.net(x).reshape(x.shape[0], self.num_tokens, self.latent_dim))
