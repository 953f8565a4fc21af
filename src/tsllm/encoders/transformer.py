"""Transformer encoder: patch embedding + pre-norm Transformer layers.

Shapes with the defaults (patch_len=8, d_model=128, num_layers=3, nhead=4, dim_feedforward=256)::

    [B, C, T] -> replicate-pad the end to P*8 steps, P = ceil(length / 8) -> [B, C, P*8]
              -> split into P patches -> [B, P, C*8] -> Linear(C*8, 128) + learned position -> [B, P, 128]
              -> 3 x TransformerEncoderLayer(pre-norm, 4 heads, FFN 256, dropout 0.1) -> LayerNorm
              -> [B, 128, P] -> adaptive avg pool over patches -> [B, 128, L] -> Linear(128, H) per token
              -> [B, L, H]

With fewer patches than tokens (T=24 gives 3 patches for L=16), pooling upsamples. Series shorter
than ``length`` are accepted (the position table is truncated); longer ones are rejected.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tsllm.encoders.layers import TimeSeriesEncoder, TokenHead

__all__ = ["TransformerEncoder"]


class TransformerEncoder(TimeSeriesEncoder):
    """Non-overlapping patches -> Transformer encoder -> pooled to L tokens."""

    test_params: ClassVar[dict] = {"d_model": 16, "num_layers": 1, "nhead": 2, "dim_feedforward": 32}

    def __init__(
        self,
        in_channels: int,
        length: int,
        latent_dim: int,
        num_tokens: int = 16,
        *,
        patch_len: int = 8,
        d_model: int = 128,
        num_layers: int = 3,
        nhead: int = 4,
        dim_feedforward: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(in_channels, length, latent_dim, num_tokens)
        self.patch_len = patch_len
        self.max_patches = math.ceil(length / patch_len)
        self.patch_embed = nn.Linear(in_channels * patch_len, d_model)
        self.pos_embed = nn.Parameter(torch.empty(1, self.max_patches, d_model))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, batch_first=True, norm_first=True
        )
        # Pre-norm layers leave the residual stream unnormalised, hence the final LayerNorm.
        # Nested tensors only apply with padding masks (none here) and warn under norm_first.
        self.layers = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.head = TokenHead(d_model, num_tokens, latent_dim)

    def encode(self, x: Tensor) -> Tensor:
        batch, channels, steps = x.shape
        num_patches = math.ceil(steps / self.patch_len)
        if num_patches > self.max_patches:
            raise ValueError(f"TransformerEncoder was built for length {self.length}, got T={steps}")
        # Replicate rather than zero padding: a run of zeros would be a fake level shift in the data.
        x = F.pad(x, (0, num_patches * self.patch_len - steps), mode="replicate")
        patches = x.reshape(batch, channels, num_patches, self.patch_len).transpose(1, 2)
        tokens = self.patch_embed(patches.reshape(batch, num_patches, channels * self.patch_len))
        hidden = self.layers(tokens + self.pos_embed[:, :num_patches])
        return self.head(hidden.transpose(1, 2))
