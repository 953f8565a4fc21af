"""What every reader shares: the runtime context it is built from, and the latent-order control.

A reader turns encoder latents ``[B, L, H]`` into one feature vector ``[B, H]`` for the linear head.
Readers are chosen by the ``reader`` config group: each YAML names its class (``_target_``) and only
that class's arguments; :func:`tsllm.readers.build_reader` adds what comes from the run (hidden size,
token count, the loaded LLM) through the class's :meth:`Reader.from_context`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tsllm.backbone import LLMSpec, freeze, load_llm

SHUFFLES = (None, "eval", "train")


@dataclass
class ReaderContext:
    """What a reader may need from the run: sizes, the seed, and the backbone (loaded on first use)."""

    spec: LLMSpec
    hidden_size: int
    num_tokens: int
    num_classes: int
    dataset: str
    seed: int
    run_dir: str | None = None     # where a reader may keep what it computes once (text features)
    data: Any = None               # the dataset, for readers that draw from TRAIN (text_icl's shots)
    _loaded: tuple[nn.Module, Any] | None = field(default=None, repr=False)

    def llm(self) -> tuple[nn.Module, Any]:
        """(frozen LLM, tokenizer), loaded once."""
        if self._loaded is None:
            llm, tokenizer = load_llm(self.spec, seed=self.seed)
            self._loaded = (freeze(llm), tokenizer)
        return self._loaded


class Reader(nn.Module):
    """Base class: ``latents [B, L, H] -> [B, H]``, with the optional latent-order control.

    ``shuffle_latents='eval'`` applies one fixed, seeded permutation of the L tokens at evaluation only
    (does the trained reader depend on their order?); ``'train'`` draws a fresh permutation per batch
    while training (can it learn without order?). Subclasses implement :meth:`read`.
    """

    #: "standalone" (no LLM), "hybrid" (a frozen LLM reads the latents), "lora", "text".
    mode: ClassVar[str] = "standalone"
    #: Constructor arguments that :meth:`from_context` takes from the run, never from the reader config.
    context_args: ClassVar[frozenset[str]] = frozenset({"num_tokens", "seed"})

    def __init__(self, *, num_tokens: int, seed: int = 0, shuffle_latents: str | None = None,
                 align: dict | None = None) -> None:
        super().__init__()
        if shuffle_latents not in SHUFFLES:
            raise ValueError(f"reader.shuffle_latents={shuffle_latents!r}: expected null, eval or train")
        if shuffle_latents is not None and num_tokens < 2:
            raise ValueError(f"reader.shuffle_latents={shuffle_latents} needs at least 2 latent tokens; this encoder "
                             f"gives {num_tokens} (the MLP gives one): there is no order to shuffle")
        if align is not None and align.get("name", "none") != "none" and not self.reads_with_llm():
            raise ValueError(f"align={align['name']} puts latents where an LLM can read them, but reader "
                             f"{type(self).__name__} has no LLM; use reader=llm (mode=hybrid) or align=none")
        self.shuffle_latents = shuffle_latents
        perm = torch.randperm(num_tokens, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("eval_permutation", perm, persistent=False)

    #: True when the reader takes the raw series [B, C, T] itself (encoder=none); False for latents.
    reads_series: ClassVar[bool] = False
    #: True when the reader's output is already class logits [B, K] (no head).
    gives_logits: ClassVar[bool] = False

    @classmethod
    def reads_with_llm(cls) -> bool:
        """Whether latent tokens go into an LLM (what the align options act on)."""
        return cls.mode in ("hybrid", "lora")

    @classmethod
    def from_context(cls, ctx: ReaderContext, **args: Any) -> Reader:
        """Build from the reader config's arguments and the run's context."""
        return cls(num_tokens=ctx.num_tokens, seed=ctx.seed, **args)

    def order(self, latents: Tensor) -> Tensor:
        """The latents in the order the reader sees them."""
        if self.shuffle_latents == "eval" and not self.training:
            return latents[:, self.eval_permutation]
        if self.shuffle_latents == "train" and self.training:
            return latents[:, torch.randperm(latents.shape[1], device=latents.device)]
        return latents

    def read(self, latents: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, latents: Tensor) -> Tensor:
        """latents [B, L, H] -> [B, H] (float32)."""
        return self.read(self.order(latents))


class ReadToken(nn.Module):
    """Append one learned token as the read position: ``[B, L, H] -> [B, L + 1, H]``.

    The trainable control layers read from a position after the latents, as the LLM reads from the suffix.
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(1, 1, hidden_size) * 0.02)

    def forward(self, latents: Tensor) -> Tensor:
        return torch.cat([latents, self.token.expand(latents.shape[0], -1, -1).to(latents.dtype)], dim=1)
