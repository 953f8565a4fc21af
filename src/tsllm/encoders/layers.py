"""Building blocks shared by the encoder families.

* :class:`TimeSeriesEncoder` -- base class fixing the ``[B, C, T] -> [B, L, H]`` contract.
* :class:`ConvBNReLU` -- Conv1d -> BatchNorm1d -> (ReLU), with "same"-style padding.
* :class:`Residual` -- ``relu(body(x) + shortcut(x))`` with a 1x1 conv + BN shortcut when widths differ.
* :class:`TokenHead` -- resample the time axis to L positions, then project channels to H per token.
* :class:`PoolBNSigmoid` -- the study's CNN/ResNet ending: pool time to L, BatchNorm1d(H), sigmoid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvBNReLU", "PoolBNSigmoid", "Residual", "TimeSeriesEncoder", "TokenHead", "resample_time", "stack_widths"]


class TimeSeriesEncoder(nn.Module):
    """Base class: maps a batch of series ``x [B, C, T]`` to latent tokens ``[B, L, H]``.

    Subclasses implement :meth:`encode`; :meth:`forward` checks the input and keeps the output in
    the input's dtype (the encoder computes in its own parameter dtype, so a float32 encoder can be
    fed a bf16 batch and vice versa).
    """

    #: Tiny family-knob values that keep unit tests fast.
    test_params: ClassVar[dict] = {}

    def __init__(self, in_channels: int, length: int, latent_dim: int, num_tokens: int) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("length", length),
            ("latent_dim", latent_dim),
            ("num_tokens", num_tokens),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.in_channels = in_channels
        self.length = length
        self.latent_dim = latent_dim
        self.num_tokens = num_tokens

    def encode(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Family-specific computation on ``x [B, C, T]`` already in the parameter dtype."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, C, T]`` -> latents ``[B, num_tokens, latent_dim]`` in ``x.dtype``."""
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects input [B, {self.in_channels}, T], got {tuple(x.shape)}"
            )
        param_dtype = next(self.parameters()).dtype
        return self.encode(x.to(param_dtype)).to(x.dtype)


def stack_widths(in_channels: int, channels: Sequence[int], latent_dim: int, knob: str = "channels") -> list[int]:
    """``[C, *channels, H]``: the widths of a stack whose last layer emits H; ``knob`` names it in errors."""
    if not channels or min(channels) < 1:
        raise ValueError(f"encoder.{knob} must be a non-empty list of widths >= 1, got {list(channels)}")
    return [in_channels, *channels, latent_dim]


def resample_time(h: Tensor, num_positions: int) -> Tensor:
    """Resample the last (time) axis of ``h [B, D, T]`` to ``num_positions``.

    Adaptive average pooling handles both directions: when ``T >= num_positions`` each output is the
    mean of a window; when ``T < num_positions`` the windows overlap and positions are repeated, so a
    3-patch transformer or a heavily strided CNN still yields L tokens.
    """
    return F.adaptive_avg_pool1d(h, num_positions)


class TokenHead(nn.Module):
    """``[B, D, T'] -> resample to L -> [B, L, D] -> Linear(D, H) -> [B, L, H]``.

    Projecting to H only here (one Linear per token, shared across tokens) keeps every family small
    even when H is an 8B LLM's hidden size.
    """

    def __init__(self, in_width: int, num_tokens: int, latent_dim: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.proj = nn.Linear(in_width, latent_dim)

    def forward(self, h: Tensor) -> Tensor:
        return self.proj(resample_time(h, self.num_tokens).transpose(1, 2))


class PoolBNSigmoid(nn.Module):
    """``[B, H, T'] -> pool time to L -> BatchNorm1d(H) -> sigmoid -> [B, L, H]`` (values in (0, 1)).

    The ending of the study's CNN and ResNet: the last conv already has H channels, so there is no
    projection; the BatchNorm normalises each of the H channels over batch and tokens.
    """

    def __init__(self, latent_dim: int, num_tokens: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.bn = nn.BatchNorm1d(latent_dim)

    def forward(self, h: Tensor) -> Tensor:
        return torch.sigmoid(self.bn(resample_time(h, self.num_tokens))).transpose(1, 2)


class ConvBNReLU(nn.Module):
    """Conv1d -> BatchNorm1d -> ReLU (the ReLU is optional so residual blocks can add first).

    Padding is ``(k-1)//2`` left and ``k//2`` right, so the output length is ``ceil(T / stride)``:
    "same" at stride 1 (also for even kernels such as ResNet's 8) and never 0 when striding.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, relu: bool = True
    ) -> None:
        super().__init__()
        self.pad = ((kernel_size - 1) // 2, kernel_size // 2)
        # No conv bias: the following BatchNorm's shift makes it redundant.
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, bias=False)
        self.bn = nn.BatchNorm1d(out_channels)
        self.act: nn.Module = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(F.pad(x, self.pad))))


class Residual(nn.Module):
    """``relu(body(x) + shortcut(x))``; the shortcut is a 1x1 conv + BN when widths differ.

    ``body`` should end in a BatchNorm without activation (the ReLU comes after the addition, as in
    Wang et al. 2017 and InceptionTime).
    """

    def __init__(self, body: nn.Module, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = body
        self.shortcut: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else ConvBNReLU(in_channels, out_channels, kernel_size=1, relu=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x))
