"""The no-LLM reader: the mean over the latent tokens (optionally with the LLM's BOS embedding)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tsllm.backbone import BackboneError, input_embeddings
from tsllm.readers.base import Reader, ReaderContext


class MeanReader(Reader):
    """``[B, L, H] -> [B, H]``: the mean over L.

    ``bos=True`` is the study's no-LLM control (``TS_CLS_NoLLM``): the frozen BOS embedding of the
    configured LLM is pooled together with the latents, ``mean([bos; z_1..z_L])``.
    """

    context_args = frozenset({"num_tokens", "seed", "bos_embedding"})

    def __init__(self, *, num_tokens: int, seed: int = 0, shuffle_latents: str | None = None,
                 align: dict | None = None, bos_embedding: torch.Tensor | None = None) -> None:
        super().__init__(num_tokens=num_tokens, seed=seed, shuffle_latents=shuffle_latents, align=align)
        self.register_buffer("bos", bos_embedding, persistent=False)

    @classmethod
    def from_context(cls, ctx: ReaderContext, *, bos: bool = False, **args: Any) -> MeanReader:
        emb = None
        if bos:
            llm, tokenizer = ctx.llm()
            if tokenizer.bos_token_id is None:
                raise BackboneError(f"reader.bos=true but llm {ctx.spec.name!r} has no BOS token")
            emb = input_embeddings(llm).weight[tokenizer.bos_token_id].detach().float().clone()
        return cls(num_tokens=ctx.num_tokens, seed=ctx.seed, bos_embedding=emb, **args)

    def read(self, latents: Tensor) -> Tensor:
        if self.bos is not None:
            latents = torch.cat([self.bos.to(latents.dtype).expand(latents.shape[0], 1, -1), latents], dim=1)
        return latents.float().mean(dim=1)
