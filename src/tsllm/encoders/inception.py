"""Inception encoder: the study's multi-scale convolution blocks (after InceptionTime, Fawaz et al. 2020).

Shapes with the defaults (num_blocks=3, num_kernels=6, channels=64, residual=True)::

    [B, C, T] -> block 1: 6 parallel convs k=1,3,5,7,9,11 ('same') -> 6 x [B, 64, T]
                          -> mean over branches -> BN -> (+ 1x1 conv-BN shortcut of x) -> ReLU -> [B, 64, T]
              -> block 2, block 3 (identity shortcut)                                            -> [B, 64, T]
              -> adaptive avg pool over time -> [B, 64, L] -> Linear(64, H) per token -> [B, L, H]

Unlike InceptionTime, branch outputs are averaged rather than concatenated, as in the study, so the
block width stays ``channels`` whatever the number of kernels.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from tsllm.encoders.layers import Residual, TimeSeriesEncoder, TokenHead

__all__ = ["InceptionEncoder", "MultiScaleConv"]


class MultiScaleConv(nn.Module):
    """``num_kernels`` parallel 'same' convs with kernel sizes 1, 3, ..., 2n-1, averaged, then BN."""

    def __init__(self, in_channels: int, out_channels: int, num_kernels: int) -> None:
        super().__init__()
        # Odd kernels with padding k//2 keep the length, so branches can be averaged elementwise.
        # No conv bias: the BatchNorm after the average absorbs it.
        self.branches = nn.ModuleList(
            nn.Conv1d(in_channels, out_channels, 2 * i + 1, padding=i, bias=False) for i in range(num_kernels)
        )
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(torch.stack([branch(x) for branch in self.branches]).mean(dim=0))


class InceptionEncoder(TimeSeriesEncoder):
    """Stacked multi-scale (averaged) convolution blocks with residual connections, pooled to L tokens."""

    test_params: ClassVar[dict] = {"num_kernels": 2, "channels": 4, "num_blocks": 2}

    def __init__(
        self,
        in_channels: int,
        length: int,
        latent_dim: int,
        num_tokens: int = 16,
        *,
        num_kernels: int = 6,
        channels: int = 64,
        num_blocks: int = 3,
        residual: bool = True,
    ) -> None:
        super().__init__(in_channels, length, latent_dim, num_tokens)
        if num_kernels < 1 or num_blocks < 1:
            raise ValueError(f"num_kernels and num_blocks must be >= 1, got {num_kernels}, {num_blocks}")
        blocks: list[nn.Module] = []
        width = in_channels
        for _ in range(num_blocks):
            body = MultiScaleConv(width, channels, num_kernels)
            blocks.append(Residual(body, width, channels) if residual else nn.Sequential(body, nn.ReLU()))
            width = channels
        self.blocks = nn.Sequential(*blocks)
        self.head = TokenHead(channels, num_tokens, latent_dim)

    def encode(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(x))
