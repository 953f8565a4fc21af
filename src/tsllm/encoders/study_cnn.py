"""The study's CNN encoder, layer by layer.

Shapes with the defaults (channels=(512, 1024, 2048)), for ``x [B, C, T]``::

    [B, C, T] -> conv(k=3, s=2, p=1) -> ReLU -> [B, 512, ceil(T/2)]
              -> conv(k=3, s=2, p=1) -> ReLU -> [B, 1024, ceil(T/4)]
              -> conv(k=3, s=2, p=1) -> ReLU -> [B, 2048, ceil(T/8)]
              -> conv(k=3, s=2, p=1) -> ReLU -> [B, H, ceil(T/16)]
              -> adaptive avg pool over time -> [B, H, L] -> BatchNorm1d(H) -> sigmoid -> [B, L, H]

Outputs lie in (0, 1). The study's code is one-channel; here the first conv takes the C input channels.
Differences from :class:`~tsllm.encoders.cnn.CNNEncoder` (ours): no BatchNorm between convs, widths
512-2048 with the last conv at H itself (ours stays narrow and projects to H with a Linear), a sigmoid end.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import ClassVar

from torch import Tensor, nn

from tsllm.encoders.layers import PoolBNSigmoid, TimeSeriesEncoder, stack_widths

__all__ = ["StudyCNNEncoder"]


class StudyCNNEncoder(TimeSeriesEncoder):
    """Stride-2 Conv-ReLU layers up to H channels, pooled to L tokens, BatchNorm, sigmoid."""

    test_params: ClassVar[dict] = {"channels": (4, 8)}

    def __init__(
        self,
        in_channels: int,
        length: int,
        latent_dim: int,
        num_tokens: int = 16,
        *,
        channels: Sequence[int] = (512, 1024, 2048),
    ) -> None:
        super().__init__(in_channels, length, latent_dim, num_tokens)
        layers: list[nn.Module] = []
        for c_in, c_out in pairwise(stack_widths(in_channels, channels, latent_dim)):
            layers += [nn.Conv1d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        self.head = PoolBNSigmoid(latent_dim, num_tokens)

    def encode(self, x: Tensor) -> Tensor:
        return self.head(self.convs(x))
