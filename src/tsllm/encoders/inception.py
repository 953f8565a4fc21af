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

__all__ = ["InceptionEncoder", "MultiScaleConv", "multi_scale_kernels"]


class MultiScaleConv(nn.Module):
    """Parallel 'same' convs (kernel sizes 1, 3, ..., 2n-1 unless given), averaged, then BN."""

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: list[int]) -> None:
        super().__init__()
        # Odd kernels with padding k//2 keep the length, so branches can be averaged elementwise.
        # No conv bias: the BatchNorm after the average absorbs it.
        self.branches = nn.ModuleList(
            nn.Conv1d(in_channels, out_channels, k, padding=k // 2, bias=False) for k in kernel_sizes
        )
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(torch.stack([branch(x) for branch in self.branches]).mean(dim=0))


def multi_scale_kernels(num_kernels: int, kernel_sizes: list[int] | None) -> list[int]:
    """The branch kernel sizes: 1, 3, ..., 2n-1 by default, or an explicit list of n odd sizes.

    An explicit list is the multi-scale ablation. Parameters grow with the summed kernel sizes, so a fair
    pair has equal sums: six kernels of size 7 (single-scale) and 1, 3, 5, 9, 11, 13 (multi-scale) both
    have 42 taps per channel pair. (The default 1, 3, ..., 11 has 36: it is not the same size as 6 x 7.)
    """
    if kernel_sizes is None:
        return [2 * i + 1 for i in range(num_kernels)]
    sizes = list(kernel_sizes)
    if len(sizes) != num_kernels:
        raise ValueError(f"encoder.kernel_sizes has {len(sizes)} sizes but encoder.num_kernels={num_kernels}: "
                         "give one size per kernel")
    if any(k < 1 or k % 2 == 0 for k in sizes):
        raise ValueError(f"encoder.kernel_sizes={sizes}: expected odd sizes >= 1 ('same' padding)")
    return sizes


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
        kernel_sizes: list[int] | None = None,
    ) -> None:
        super().__init__(in_channels, length, latent_dim, num_tokens)
        if num_kernels < 1 or num_blocks < 1:
            raise ValueError(f"num_kernels and num_blocks must be >= 1, got {num_kernels}, {num_blocks}")
        kernel_sizes = multi_scale_kernels(num_kernels, kernel_sizes)
        blocks: list[nn.Module] = []
        width = in_channels
        for _ in range(num_blocks):
            body = MultiScaleConv(width, channels, kernel_sizes)
            blocks.append(Residual(body, width, channels) if residual else nn.Sequential(body, nn.ReLU()))
            width = channels
        self.blocks = nn.Sequential(*blocks)
        self.head = TokenHead(channels, num_tokens, latent_dim)

    def encode(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(x))
