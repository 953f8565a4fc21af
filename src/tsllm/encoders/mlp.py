"""MLP encoder: the fully connected baseline of Wang et al. (2017), ending in ``num_tokens`` tokens.

Shapes with the defaults (hidden=500, depth=3)::

    [B, C, T] -> flatten -> [B, C*T]
      -> dropout 0.1 -> Linear(C*T, 500) -> ReLU
      -> dropout 0.2 -> Linear(500, 500) -> ReLU
      -> dropout 0.2 -> Linear(500, 500) -> ReLU
      -> dropout 0.3 -> Linear(500, L*H) -> reshape [B, L, H]

The MLP has no time axis left to pool, so it emits one token by default (``num_tokens=1``).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from tsllm.encoders.layers import TimeSeriesEncoder

__all__ = ["MLPEncoder"]

# Wang et al.'s dropout rates, fixed: the family's knobs (its config) are the width and depth.
DROPOUT_INPUT, DROPOUT_HIDDEN, DROPOUT_OUTPUT = 0.1, 0.2, 0.3


class MLPEncoder(TimeSeriesEncoder):
    """Wang et al. (2017) MLP over the flattened series; needs the exact ``length`` at build time."""

    test_params: ClassVar[dict] = {"hidden": 16, "depth": 2}

    def __init__(
        self,
        in_channels: int,
        length: int,
        latent_dim: int,
        num_tokens: int = 1,
        *,
        hidden: int = 500,
        depth: int = 3,
    ) -> None:
        super().__init__(in_channels, length, latent_dim, num_tokens)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * length
        for i in range(depth):
            layers += [
                nn.Dropout(DROPOUT_INPUT if i == 0 else DROPOUT_HIDDEN),
                nn.Linear(width, hidden),
                nn.ReLU(),
            ]
            width = hidden
        layers += [nn.Dropout(DROPOUT_OUTPUT), nn.Linear(hidden, num_tokens * latent_dim)]
        self.net = nn.Sequential(*layers)

    def encode(self, x: Tensor) -> Tensor:
        if x.shape[2] != self.length:
            raise ValueError(f"MLPEncoder was built for length {self.length}, got T={x.shape[2]}")
        return self.net(x).reshape(x.shape[0], self.num_tokens, self.latent_dim)
