"""Control: one trainable multi-head self-attention layer of width H in place of the LLM (Tan et al. 2024)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from tsllm.readers.base import LayerOptions, Reader, ReaderContext, ReadToken


@dataclass
class AttentionOptions(LayerOptions):
    """conf/reader/attention.yaml: num_heads, dropout, shuffle_latents."""

    _target_: str = "tsllm.readers.AttentionReader"
    name: str = "attention"


class AttentionReader(Reader):
    """``[z_1..z_L | read] -> MultiheadAttention -> output at the read position -> [B, H]``."""

    Options: ClassVar[type[AttentionOptions]] = AttentionOptions

    def __init__(self, *, hidden_size: int, num_tokens: int, num_heads: int = 8, dropout: float = 0.0,
                 seed: int = 0, shuffle_latents: str | None = None) -> None:
        super().__init__(num_tokens=num_tokens, seed=seed, shuffle_latents=shuffle_latents)
        if hidden_size % num_heads:
            raise ValueError(f"reader.num_heads={num_heads} must divide the hidden size {hidden_size}")
        self.read_token = ReadToken(hidden_size)
        self.attn = nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, batch_first=True)

    @classmethod
    def from_context(cls, ctx: ReaderContext, options: AttentionOptions) -> AttentionReader:
        return cls(hidden_size=ctx.hidden_size, num_tokens=ctx.num_tokens, num_heads=options.num_heads,
                   dropout=options.dropout, seed=ctx.seed, shuffle_latents=options.shuffle_latents)

    def read(self, latents: Tensor) -> Tensor:
        x = self.read_token(latents.float())  # (B, L+1, H)
        out, _ = self.attn(x[:, -1:], x, x, need_weights=False)  # only the read position is used
        return out[:, 0]
