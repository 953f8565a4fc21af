"""CNN encoder: the study's strided convolution stack.

Shapes with the defaults (channels=64, num_blocks=3, kernel_size=7)::

    [B, C, T] -> conv(k=7, s=2)-BN-ReLU -> [B, 64, ceil(T/2)]
              -> conv(k=7, s=2)-BN-ReLU -> [B, 128, ceil(T/4)]
              -> conv(k=7, s=2)-BN-ReLU -> [B, 256, ceil(T/8)]
              -> adaptive avg pool over time -> [B, 256, L] -> Linear(256, H) per token -> [B, L, H]

Each block halves time and doubles width; lengths round up so a T=24 series keeps 3 steps
(pooling then upsamples to L).
"""

from __future__ import annotations

from itertools import pairwise
from typing import ClassVar

from torch import Tensor, nn

from tsllm.encoders.layers import ConvBNReLU, TimeSeriesEncoder, TokenHead

__all__ = ["CNNEncoder"]


class CNNEncoder(TimeSeriesEncoder):
    """Stride-2 Conv-BN-ReLU blocks doubling the width from ``channels``, pooled to L tokens."""

    test_params: ClassVar[dict] = {"channels": 4, "num_blocks": 2, "kernel_size": 3}

    def __init__(
        self,
        in_channels: int,
        length: int,
        latent_dim: int,
        num_tokens: int = 16,
        *,
        channels: int = 64,
        num_blocks: int = 3,
        kernel_size: int = 7,
    ) -> None:
        super().__init__(in_channels, length, latent_dim, num_tokens)
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        widths = [in_channels] + [channels * 2**i for i in range(num_blocks)]
        self.blocks = nn.Sequential(
            *(ConvBNReLU(c_in, c_out, kernel_size, stride=2) for c_in, c_out in pairwise(widths))
        )
        self.head = TokenHead(widths[-1], num_tokens, latent_dim)

    def encode(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(x))
