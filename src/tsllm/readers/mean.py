"""The no-LLM reader: the mean over the latent tokens (optionally with the LLM's BOS embedding)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from tsllm.config import ARM
from tsllm.llm import BackboneError, input_embeddings
from tsllm.readers.base import Reader, ReaderContext, ReaderOptions, Shuffle, shuffle_option


@dataclass
class MeanOptions(ReaderOptions):
    """conf/reader/mean.yaml"""

    _target_: str = "tsllm.readers.MeanReader"
    name: str = "mean"
    shuffle_latents: Shuffle = shuffle_option()  # a mean has no order: kept for a uniform control grid
    bos: bool = field(default=False, metadata=ARM)  # pool the LLM's BOS embedding too (the study's TS_CLS_NoLLM)


class MeanReader(Reader):
    """``[B, L, H] -> [B, H]``: the mean over L.

    ``bos=True`` is the study's no-LLM control (``TS_CLS_NoLLM``): the frozen BOS embedding of the
    configured LLM is pooled together with the latents, ``mean([bos; z_1..z_L])``.
    """

    Options: ClassVar[type[MeanOptions]] = MeanOptions

    def __init__(self, *, num_tokens: int, seed: int = 0, shuffle_latents: str | None = None,
                 bos_embedding: torch.Tensor | None = None) -> None:
        super().__init__(num_tokens=num_tokens, seed=seed, shuffle_latents=shuffle_latents)
        self.register_buffer("bos", bos_embedding, persistent=False)

    @classmethod
    def loads_llm(cls, options: MeanOptions) -> bool:
        return options.bos

    @classmethod
    def from_context(cls, ctx: ReaderContext, options: MeanOptions) -> MeanReader:
        emb = None
        if options.bos:
            llm, tokenizer = ctx.llm()
            if tokenizer.bos_token_id is None:
                raise BackboneError(f"reader.bos=true but llm {ctx.spec.name!r} has no BOS token")
            emb = input_embeddings(llm).weight[tokenizer.bos_token_id].detach().float().clone()
        return cls(num_tokens=ctx.num_tokens, seed=ctx.seed, shuffle_latents=options.shuffle_latents,
                   bos_embedding=emb)

    def read(self, latents: Tensor) -> Tensor:
        if self.bos is not None:
            latents = torch.cat([self.bos.to(latents.dtype).expand(latents.shape[0], 1, -1), latents], dim=1)
        return latents.float().mean(dim=1)
