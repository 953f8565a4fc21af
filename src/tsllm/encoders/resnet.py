"""ResNet encoder: the time-series ResNet of Wang et al. (2017).

Shapes with the defaults (channels=(64, 128, 128), kernel_sizes=(8, 5, 3))::

    [B, C, T] -> block 1: conv(k=8)-BN-ReLU -> conv(k=5)-BN-ReLU -> conv(k=3)-BN
                          (+ 1x1 conv-BN shortcut of x) -> ReLU              -> [B, 64, T]
              -> block 2 (same, 64 -> 128, 1x1 conv-BN shortcut)             -> [B, 128, T]
              -> block 3 (same, 128 -> 128, identity shortcut)               -> [B, 128, T]
              -> adaptive avg pool over time -> [B, 128, L] -> Linear(128, H) per token -> [B, L, H]

All convs keep the length ('same' padding, asymmetric for the even kernel 8). Wang et al. end with
global average pooling; here time is pooled to L positions instead, to give the LLM L tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor, nn

from tsllm.encoders.layers import ConvBNReLU, Residual, TimeSeriesEncoder, TokenHead

__all__ = ["ResNetEncoder"]


class ResNetEncoder(TimeSeriesEncoder):
    """One residual block per entry of ``channels``; each block is one conv-BN(-ReLU) per kernel size."""

    test_params: ClassVar[dict] = {"channels": (4, 8, 8)}

    def __init__(
        self,
        in_channels: int,
        length: int,
        latent_dim: int,
        num_tokens: int = 16,
        *,
        channels: Sequence[int] = (64, 128, 128),
        kernel_sizes: Sequence[int] = (8, 5, 3),
    ) -> None:
        super().__init__(in_channels, length, latent_dim, num_tokens)
        if not channels or not kernel_sizes:
            raise ValueError("channels and kernel_sizes must be non-empty")
        blocks: list[nn.Module] = []
        width = in_channels
        for out in channels:
            # The last conv of a block leaves out its ReLU: it comes after adding the shortcut.
            body = nn.Sequential(
                *(
                    ConvBNReLU(width if i == 0 else out, out, k, relu=i < len(kernel_sizes) - 1)
                    for i, k in enumerate(kernel_sizes)
                )
            )
            blocks.append(Residual(body, width, out))
            width = out
        self.blocks = nn.Sequential(*blocks)
        self.head = TokenHead(width, num_tokens, latent_dim)

    def encode(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(x))
