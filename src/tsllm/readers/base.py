"""What every reader shares: its declaration, the runtime context it is built from, the latent-order control.

A reader turns encoder latents ``[B, L, H]`` into one feature vector ``[B, H]`` for the linear head.
Each reader class declares, once, what it is: its ``Options`` (the typed config of ``conf/reader/<name>.yaml``,
with every default, the settings that name an arm marked ``ARM``), its ``mode`` and whether an LLM reads
its latents. The arm label of a run is computed from that declaration alone (``tsllm.identity``), and
:func:`tsllm.readers.build_reader` builds the class from its options and the run's context (hidden size,
token count, the loaded LLM) through :meth:`Reader.from_context`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from tsllm.config import ARM, Checked, LLMConfig
from tsllm.llm import freeze, load_llm

Shuffle = Literal["eval", "train"] | None


@dataclass
class ReaderOptions(Checked):
    """Every reader's config: the class (``_target_``) and its name; subclasses add the reader's options."""

    section: ClassVar[str] = "reader"

    _target_: str = ""
    name: str = ""


def shuffle_option() -> Any:
    """The latent-order control, an option of every reader of latents (null | eval | train); names the arm."""
    return field(default=None, metadata=ARM)


@dataclass
class LayerOptions(ReaderOptions):
    """The trainable control layers of width H that stand in for the LLM (attention, transformer_layer)."""

    num_heads: int = 8
    dropout: float = 0.0
    shuffle_latents: Shuffle = shuffle_option()


@dataclass
class ReaderContext:
    """What a reader may need from the run: sizes, the seed, and the backbone (loaded on first use)."""

    spec: LLMConfig
    hidden_size: int
    num_tokens: int
    num_classes: int
    dataset: str
    seed: int
    run_dir: str | None = None     # where a reader may keep what it computes once (text features)
    data: Any = None               # the dataset, for readers that draw from TRAIN (text_icl's shots)
    # (LLM, tokenizer) handed in by the caller (tsllm.build): shared, so a reader that changes it copies it first.
    handed_in: tuple[nn.Module, Any] | None = field(default=None, repr=False)
    _loaded: tuple[nn.Module, Any] | None = field(default=None, repr=False)

    def llm(self) -> tuple[nn.Module, Any]:
        """(frozen LLM, tokenizer): the one handed in, or loaded once."""
        if self.handed_in is not None:
            return self.handed_in
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

    #: The reader's typed config: its name, options and their defaults.
    Options: ClassVar[type[ReaderOptions]] = ReaderOptions
    #: "standalone" (no LLM), "hybrid" (a frozen LLM reads the latents), "lora", "text".
    mode: ClassVar[str] = "standalone"
    #: True when latent tokens go into an LLM (what the align options and the LLM diagnostics act on).
    llm_reads_latents: ClassVar[bool] = False
    #: True when the reader takes the raw series [B, C, T] itself (encoder=none); False for latents.
    reads_series: ClassVar[bool] = False
    #: True when the reader's output is already class logits [B, K] (no head).
    gives_logits: ClassVar[bool] = False

    @classmethod
    def arm_mode(cls, options: ReaderOptions) -> str:
        """The mode of a run with these options (the LLM reader's is lora when it has adapters)."""
        return cls.mode

    @classmethod
    def loads_llm(cls, options: ReaderOptions) -> bool:
        """Whether a reader with these options needs the LLM (to read with it, or for its BOS embedding)."""
        return cls.mode != "standalone"

    def __init__(self, *, num_tokens: int, seed: int = 0, shuffle_latents: str | None = None) -> None:
        super().__init__()
        if shuffle_latents is not None and num_tokens < 2:
            raise ValueError(f"reader.shuffle_latents={shuffle_latents} needs at least 2 latent tokens; this encoder "
                             f"gives {num_tokens} (the MLP gives one): there is no order to shuffle")
        self.shuffle_latents = shuffle_latents
        perm = torch.randperm(num_tokens, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("eval_permutation", perm, persistent=False)

    @classmethod
    def from_context(cls, ctx: ReaderContext, options: Any) -> Reader:  # pragma: no cover - abstract
        """Build from the reader's options and the run's context."""
        raise NotImplementedError

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
