"""The study's Inception encoder (its code's ``sl_encoder``), layer by layer.

Shapes with the defaults (num_tokens L=16, num_kernels n=6, num_blocks=4), for ``x [B, C, T]``::

    [B, C, T] -> block 1: 6 parallel 'same' convs C -> 16, k = 1, 3, ..., 11, each + dropout 0.2
                          -> mean over branches (no activation) -> LayerNorm over time (T) -> [B, 16, T]
              -> blocks 2-4: the same, 16 -> 16                                          -> [B, 16, T]
              -> Linear(T, H) on each channel's whole series                             -> [B, 16, H]

The token count *is* the block width: each of the L channels becomes one token. The study's code is
one-channel; here the first block's convs take the C input channels. Because the LayerNorm's shape and
the final Linear are both T, the encoder only accepts the ``length`` it was built for.

Differences from :class:`~tsllm.encoders.inception.InceptionEncoder` (ours): no BatchNorm, activation
or residual; a LayerNorm over time; the width tied to L; and H reached from the time axis, not pooled.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from tsllm.encoders.layers import TimeSeriesEncoder

__all__ = ["StudyInceptionBlock", "StudyInceptionEncoder"]


class StudyInceptionBlock(nn.Module):
    """``num_kernels`` parallel 'same' convs (k = 1, 3, ..., 2n-1), dropout on each, averaged, LayerNorm(T)."""

    def __init__(self, in_channels: int, out_channels: int, num_kernels: int, length: int, dropout: float) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv1d(in_channels, out_channels, 2 * i + 1, padding=i) for i in range(num_kernels)
        )
        for conv in self.branches:
            nn.init.kaiming_normal_(conv.weight, mode="fan_out")
            nn.init.zeros_(conv.bias)
        self.dropout = nn.Dropout(dropout)
        # Normalises each channel over its time steps (normalized_shape T), as the study does.
        self.norm = nn.LayerNorm(length)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(torch.stack([self.dropout(branch(x)) for branch in self.branches]).mean(dim=0))


class StudyInceptionEncoder(TimeSeriesEncoder):
    """The study's Inception: L-wide multi-scale blocks, then Linear(T, H) per channel; one token a channel."""

    test_params: ClassVar[dict] = {"num_kernels": 2}

    def __init__(
        self,
        in_channels: int,
        length: int,
        latent_dim: int,
        num_tokens: int = 16,
        *,
        num_kernels: int = 6,
        num_blocks: int = 4,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(in_channels, length, latent_dim, num_tokens)
        if num_kernels < 1 or num_blocks < 1:
            raise ValueError(f"num_kernels and num_blocks must be >= 1, got {num_kernels}, {num_blocks}")
        self.blocks = nn.Sequential(
            *(
                StudyInceptionBlock(in_channels if i == 0 else num_tokens, num_tokens, num_kernels, length, dropout)
                for i in range(num_blocks)
            )
        )
        self.proj = nn.Linear(length, latent_dim)

    def encode(self, x: Tensor) -> Tensor:
        if x.shape[2] != self.length:
            raise ValueError(f"StudyInceptionEncoder was built for length {self.length}, got T={x.shape[2]}")
        return self.proj(self.blocks(x))
