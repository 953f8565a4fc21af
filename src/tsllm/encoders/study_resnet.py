"""The study's ResNet encoder, layer by layer.

Shapes with the defaults (channels=(512, 1024, 2048)), for ``x [B, C, T]``; each block halves time::

    [B, C, T] -> block 1: relu( conv3(s=2) -> ReLU -> conv3  +  conv1x1(s=2) -> BN ) -> [B, 512, ceil(T/2)]
              -> block 2 (512 -> 1024), block 3 (1024 -> 2048), block 4 (2048 -> H) -> [B, H, ceil(T/16)]
              -> adaptive avg pool over time -> [B, H, L] -> BatchNorm1d(H) -> sigmoid -> [B, L, H]

The 3-convs have padding 1 and no bias. The study's code also defines a BatchNorm after each 3-conv but
never calls it; only the computation is reproduced here, so those unused modules do not exist (nor count
as parameters). The shortcut's 1x1 conv has no bias: the BatchNorm right after it would cancel one.
The study's code is one-channel; here the first block takes the C input channels.

Differences from :class:`~tsllm.encoders.resnet.ResNetEncoder` (ours, Wang et al. 2017): two convs a
block, stride 2, no BatchNorm in the body, widths 512-2048 with the last block at H itself, a sigmoid end.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from tsllm.encoders.layers import PoolBNSigmoid, TimeSeriesEncoder, stack_widths

__all__ = ["StudyResidualBlock", "StudyResNetEncoder"]


class StudyResidualBlock(nn.Module):
    """``relu(conv3(relu(conv3_s2(x))) + bn(conv1x1_s2(x)))``: halves time, changes width."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)
        self.conv2 = nn.Conv1d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, 1, stride=2, bias=False), nn.BatchNorm1d(out_channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


class StudyResNetEncoder(TimeSeriesEncoder):
    """Stride-2 residual blocks up to H channels, pooled to L tokens, BatchNorm, sigmoid."""

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
        widths = stack_widths(in_channels, channels, latent_dim)
        self.blocks = nn.Sequential(*(StudyResidualBlock(c_in, c_out) for c_in, c_out in pairwise(widths)))
        self.head = PoolBNSigmoid(latent_dim, num_tokens)

    def encode(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(x))
