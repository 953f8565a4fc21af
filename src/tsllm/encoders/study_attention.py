"""The study's "attention" encoder (its code's fifth family; the paper's Transformer row), layer by layer.

Shapes with the defaults (channels=(512, 1024, 2048)), for ``x [B, C, T]``::

    [B, C, T] -> conv(k=3, s=2, p=1) -> LayerNorm over channels -> PReLU -> dropout 0.2 -> [B, 512, ceil(T/2)]
              -> the same to 1024, 2048, then H channels                                -> [B, H, T'], T' = ceil(T/16)
              -> q = Conv1x1(H, H)(x);  w = softmax over time of Conv1x1(H, H)(x);  x = q * w  -> [B, H, T']
              -> adaptive avg pool over time -> [B, H, L] -> [B, L, H]

One PReLU (a single learned slope) is shared by all four conv layers, as in the study's code. The
gate conv (w) has no bias: a per-channel constant is the same at every time step and the softmax over
time removes it, so a bias there would add H parameters that cannot change the output. The study's
code is one-channel; here the first conv takes the C input channels.

Unlike :class:`~tsllm.encoders.transformer.TransformerEncoder` (ours: patch embedding, multi-head
self-attention layers), there is no self-attention here: a learned softmax weighting over time.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import ClassVar

from torch import Tensor, nn

from tsllm.encoders.layers import TimeSeriesEncoder, resample_time, stack_widths

__all__ = ["ChannelLayerNorm", "StudyAttentionEncoder"]


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of ``[B, C, T]`` (each time step normalised on its own)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class StudyAttentionEncoder(TimeSeriesEncoder):
    """Stride-2 conv layers up to H channels, then a softmax-over-time gate, pooled to L tokens."""

    test_params: ClassVar[dict] = {"channels": (4, 8)}

    def __init__(
        self,
        in_channels: int,
        length: int,
        latent_dim: int,
        num_tokens: int = 16,
        *,
        channels: Sequence[int] = (512, 1024, 2048),
        dropout: float = 0.2,
    ) -> None:
        super().__init__(in_channels, length, latent_dim, num_tokens)
        self.act = nn.PReLU()  # one module, hence one slope, reused after every conv
        self.dropout = nn.Dropout(dropout)
        widths = stack_widths(in_channels, channels, latent_dim)
        self.convs = nn.ModuleList(nn.Conv1d(c_in, c_out, 3, stride=2, padding=1) for c_in, c_out in pairwise(widths))
        self.norms = nn.ModuleList(ChannelLayerNorm(c_out) for c_out in widths[1:])
        self.query = nn.Conv1d(latent_dim, latent_dim, 1)
        self.gate = nn.Conv1d(latent_dim, latent_dim, 1, bias=False)

    def encode(self, x: Tensor) -> Tensor:
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = self.dropout(self.act(norm(conv(x))))
        x = self.query(x) * self.gate(x).softmax(dim=2)
        return resample_time(x, self.num_tokens).transpose(1, 2)
