"""Control: one trainable Transformer encoder layer of width H in place of the LLM (Tan et al. 2024)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from tsllm.readers.base import Reader, ReaderContext, ReadToken


class TransformerLayerReader(Reader):
    """``[z_1..z_L | read] -> one pre-norm Transformer layer -> state at the read position -> [B, H]``."""

    context_args = frozenset({"hidden_size", "num_tokens", "seed"})

    def __init__(self, *, hidden_size: int, num_tokens: int, num_heads: int = 8, ffn_ratio: int = 4,
                 dropout: float = 0.1, seed: int = 0, shuffle_latents: str | None = None,
                 align: dict | None = None) -> None:
        super().__init__(num_tokens=num_tokens, seed=seed, shuffle_latents=shuffle_latents, align=align)
        if hidden_size % num_heads:
            raise ValueError(f"reader.num_heads={num_heads} must divide the hidden size {hidden_size}")
        self.read_token = ReadToken(hidden_size)
        self.layer = nn.TransformerEncoderLayer(hidden_size, num_heads, dim_feedforward=ffn_ratio * hidden_size,
                                                dropout=dropout, activation="gelu", batch_first=True,
                                                norm_first=True)

    @classmethod
    def from_context(cls, ctx: ReaderContext, **args: Any) -> TransformerLayerReader:
        return cls(hidden_size=ctx.hidden_size, num_tokens=ctx.num_tokens, seed=ctx.seed, **args)

    def read(self, latents: Tensor) -> Tensor:
        return self.layer(self.read_token(latents.float()))[:, -1]
