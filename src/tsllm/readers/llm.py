"""The hybrid reader: ``[prompt | L latents | suffix]`` through a frozen causal LM, one hidden state out.

Controls and options, each one config value: the prompt (the study's text, none, or seeded random ids),
the suffix (one real token, or a text tokenised as the study does), the latents' order and alignment,
LoRA adapters, and (through ``llm.num_layers``) a truncated LLM. With ``prefix_cache`` the prompt's
key/value cache is computed once (it depends on nothing trainable) and each step runs only the latent
and suffix tokens; the result equals the uncached path.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from tsllm.config import ARM, Checked
from tsllm.llm import (
    PrefixCache,
    cache_kwarg,
    decoder_of,
    expanded_cache,
    format_prompt,
    input_embeddings,
    prompt_ids_for,
    suffix_token_ids,
)
from tsllm.llm.tokens import PROMPTS
from tsllm.readers.align import build_align
from tsllm.readers.base import Reader, ReaderContext, ReaderOptions, Shuffle, shuffle_option


@dataclass
class LoraOptions(Checked):
    """PEFT LoRA adapters on the LLM (conf/mode/lora.yaml sets them)."""

    section: ClassVar[str] = "reader.lora"

    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05


@dataclass
class LLMOptions(ReaderOptions):
    """conf/reader/llm.yaml; ``align`` is set by the align group (conf/align/, tsllm.config.ALIGN_TYPES)."""

    _target_: str = "tsllm.readers.LLMReader"
    name: str = "llm"
    template: str = "Classify the following data with {num_tokens} features into {num_classes} classes: "
    # text (the template) | none (latents and suffix only) | random (seeded random ids)
    prompt: Literal[PROMPTS] = field(default="text", metadata=ARM)  # type: ignore[valid-type]
    prompt_length: int | None = None   # prompt=random: how many ids in all (null = as many as the template's)
    suffix: str = field(default="pad", metadata=ARM)  # pad | eos (one real token) | a text, tokenised as the study
    pooling: Literal["last", "mean"] = field(default="last", metadata=ARM)  # the read position | mean over latents
    prefix_cache: bool = True           # the prompt depends on nothing trainable: its key/values are computed once
    shuffle_latents: Shuffle = shuffle_option()
    lora: LoraOptions | None = None
    align: Any = field(default_factory=lambda: {"name": "none"}, metadata=ARM)


class LLMReader(Reader):
    """``latents [B, L, H] -> [B, H]``: the LLM's last-layer state at the read position (or mean over latents)."""

    Options: ClassVar[type[LLMOptions]] = LLMOptions
    mode = "hybrid"
    llm_reads_latents = True

    def __init__(self, llm: nn.Module, tokenizer: Any, *, num_tokens: int, template: str, prompt: str = "text",
                 prompt_length: int | None = None, suffix: str = "pad", pooling: str = "last",
                 prefix_cache: bool = True, seed: int = 0, shuffle_latents: str | None = None,
                 align: dict | None = None) -> None:
        super().__init__(num_tokens=num_tokens, seed=seed, shuffle_latents=shuffle_latents)
        if pooling not in ("last", "mean"):
            raise ValueError(f"reader.pooling={pooling!r}: expected last or mean")
        self.llm = llm
        decoder_of(llm), input_embeddings(llm)  # fail at build time, not at the first step
        self.pooling = pooling
        self.frozen = not any(p.requires_grad for p in llm.parameters())
        if prefix_cache and not self.frozen:
            raise ValueError("reader.prefix_cache=true needs a frozen LLM: trainable weights change the prefix")
        self.prefix_cache = prefix_cache
        self._cache_kwarg = cache_kwarg(self.decoder)
        ids = prompt_ids_for(tokenizer, prompt, template, prompt_length=prompt_length, seed=seed)
        self.register_buffer("prompt_ids", ids, persistent=False)
        self.register_buffer("suffix_ids", suffix_token_ids(tokenizer, suffix), persistent=False)
        self.bos_id = tokenizer.bos_token_id
        self.tokenizer = tokenizer  # for diagnostics that decode token ids
        self.align = build_align(align, self.embed, num_tokens=num_tokens, seed=seed)
        self._prefix = PrefixCache()

    @classmethod
    def arm_mode(cls, options: LLMOptions) -> str:
        return "lora" if options.lora else "hybrid"

    @classmethod
    def from_context(cls, ctx: ReaderContext, options: LLMOptions) -> LLMReader:
        llm, tokenizer = ctx.llm()
        if options.lora:
            # Adapters are injected in place: an LLM handed in is shared, so it is copied first.
            llm = add_lora(copy.deepcopy(llm) if ctx.handed_in is not None else llm, **asdict(options.lora))
        template = format_prompt(options.template, num_tokens=ctx.num_tokens, num_classes=ctx.num_classes,
                                 dataset=ctx.dataset)
        return cls(llm, tokenizer, num_tokens=ctx.num_tokens, template=template, prompt=options.prompt,
                   prompt_length=options.prompt_length, suffix=options.suffix, pooling=options.pooling,
                   prefix_cache=options.prefix_cache, seed=ctx.seed, shuffle_latents=options.shuffle_latents,
                   align=options.align)

    # Properties, not attributes: as submodules they would put the whole LLM into state_dict twice.
    @property
    def decoder(self) -> nn.Module:
        return decoder_of(self.llm)

    @property
    def embed(self) -> nn.Embedding:
        return input_embeddings(self.llm)

    @property
    def hidden_size(self) -> int:
        return self.embed.weight.shape[-1]

    @property
    def tokens_per_example(self) -> int:
        """Tokens the LLM runs per series in a training step (the cached prompt is not re-run)."""
        tail = self.eval_permutation.numel() + self.suffix_ids.numel()
        return tail if self.prefix_cache else tail + self.prompt_ids.numel()

    def train(self, mode: bool = True) -> LLMReader:
        super().train(mode)
        if self.frozen:  # a frozen LLM never runs dropout, whatever the loop asks
            self.llm.eval()
        return self

    def align_latents(self, latents: Tensor) -> Tensor:
        """The latent tokens exactly as the LLM reads them (order control, then alignment)."""
        return self.align(self.order(latents))

    def sequence(self, latents: Tensor) -> tuple[Tensor, dict[str, slice]]:
        """The whole input ``[prompt | latents | suffix]`` as embeddings, and where each part lies.

        For diagnostics: the forward pass uses the prefix cache instead of re-running the prompt.
        """
        b = latents.shape[0]
        dtype = self.embed.weight.dtype
        tokens = self.align_latents(latents).to(dtype)
        p, n, s = self.prompt_ids.numel(), tokens.shape[1], self.suffix_ids.numel()
        parts = [self.embed(self.prompt_ids).expand(b, -1, -1), tokens, self.embed(self.suffix_ids).expand(b, -1, -1)]
        spans = {"prompt": slice(0, p), "latents": slice(p, p + n), "suffix": slice(p + n, p + n + s)}
        if p and self.bos_id is not None and int(self.prompt_ids[0]) == self.bos_id:
            spans["bos"] = slice(0, 1)
        return torch.cat(parts, dim=1), spans

    def read(self, latents: Tensor) -> Tensor:
        b, n_lat, _ = latents.shape
        dtype = self.embed.weight.dtype
        suffix = self.embed(self.suffix_ids).expand(b, -1, -1)
        tail = torch.cat([self.align(latents).to(dtype), suffix], dim=1)  # (B, L+S, H)
        p = self.prompt_ids.numel()
        if self.prefix_cache and p > 0:
            kv = self._prefix.get(self.decoder, self.embed.weight, inputs_embeds=self.embed(self.prompt_ids[None]))
            cache = expanded_cache(kv, b, self.llm.config)
            positions = torch.arange(p, p + tail.shape[1], device=tail.device)[None]
            hidden = self.decoder(inputs_embeds=tail, position_ids=positions, use_cache=True,
                                  **{self._cache_kwarg: cache}).last_hidden_state  # (B, L+S, H)
        else:
            prompt = self.embed(self.prompt_ids).expand(b, -1, -1)
            hidden = self.decoder(inputs_embeds=torch.cat([prompt, tail], dim=1),
                                  use_cache=False).last_hidden_state[:, p:]
        out = hidden[:, -1] if self.pooling == "last" else hidden[:, :n_lat].mean(dim=1)
        return out.float()


def add_lora(llm: nn.Module, r: int, alpha: int, dropout: float, target_modules: list[str]) -> nn.Module:
    """Wrap the LLM with PEFT LoRA adapters; only the adapters become trainable."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        bias="none")
    peft_model = get_peft_model(llm, config)
    # The reader calls the inner transformers model; PEFT injected the adapters into it in place.
    return peft_model.base_model.model
