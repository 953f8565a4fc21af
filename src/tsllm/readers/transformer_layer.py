"""Control: one trainable Transformer encoder layer of width H in place of the LLM (Tan et al. 2024)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from tsllm.readers.base import LayerOptions, Reader, ReaderContext, ReadToken


@dataclass
class TransformerLayerOptions(LayerOptions):
    """conf/reader/transformer_layer.yaml: num_heads, dropout, shuffle_latents and the feed-forward width ratio."""

    _target_: str = "tsllm.readers.TransformerLayerReader"
    name: str = "transformer_layer"
    dropout: float = 0.1
    ffn_ratio: int = 4


class TransformerLayerReader(Reader):
    """``[z_1..z_L | read] -> one pre-norm Transformer layer -> state at the read position -> [B, H]``."""

    Options: ClassVar[type[TransformerLayerOptions]] = TransformerLayerOptions

    def __init__(self, *, hidden_size: int, num_tokens: int, num_heads: int = 8, ffn_ratio: int = 4,
                 dropout: float = 0.1, seed: int = 0, shuffle_latents: str | None = None) -> None:
        super().__init__(num_tokens=num_tokens, seed=seed, shuffle_latents=shuffle_latents)
        if hidden_size % num_heads:
            raise ValueError(f"reader.num_heads={num_heads} must divide the hidden size {hidden_size}")
        self.read_token = ReadToken(hidden_size)
        self.layer = nn.TransformerEncoderLayer(hidden_size, num_heads, dim_feedforward=ffn_ratio * hidden_size,
                                                dropout=dropout, activation="gelu", batch_first=True,
                                                norm_first=True)

    @classmethod
    def from_context(cls, ctx: ReaderContext, options: TransformerLayerOptions) -> TransformerLayerReader:
        return cls(hidden_size=ctx.hidden_size, num_tokens=ctx.num_tokens, num_heads=options.num_heads,
                   ffn_ratio=options.ffn_ratio, dropout=options.dropout, seed=ctx.seed,
                   shuffle_latents=options.shuffle_latents)

    def read(self, latents: Tensor) -> Tensor:
        return self.layer(self.read_token(latents.float()))[:, -1]
