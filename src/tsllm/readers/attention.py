"""Control: one trainable multi-head self-attention layer of width H in place of the LLM (Tan et al. 2024)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from tsllm.readers.base import Reader, ReaderContext, ReadToken


class AttentionReader(Reader):
    """``[z_1..z_L | read] -> MultiheadAttention -> output at the read position -> [B, H]``."""

    context_args = frozenset({"hidden_size", "num_tokens", "seed"})

    def __init__(self, *, hidden_size: int, num_tokens: int, num_heads: int = 8, dropout: float = 0.0,
                 seed: int = 0, shuffle_latents: str | None = None, align: dict | None = None) -> None:
        super().__init__(num_tokens=num_tokens, seed=seed, shuffle_latents=shuffle_latents, align=align)
        if hidden_size % num_heads:
            raise ValueError(f"reader.num_heads={num_heads} must divide the hidden size {hidden_size}")
        self.read_token = ReadToken(hidden_size)
        self.attn = nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, batch_first=True)

    @classmethod
    def from_context(cls, ctx: ReaderContext, **args: Any) -> AttentionReader:
        return cls(hidden_size=ctx.hidden_size, num_tokens=ctx.num_tokens, seed=ctx.seed, **args)

    def read(self, latents: Tensor) -> Tensor:
        x = self.read_token(latents.float())  # (B, L+1, H)
        out, _ = self.attn(x[:, -1:], x, x, need_weights=False)  # only the read position is used
        return out[:, 0]
