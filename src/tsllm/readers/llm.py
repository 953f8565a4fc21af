"""The hybrid reader: ``[prompt | L latents | suffix]`` through a frozen causal LM, one hidden state out.

Controls and options, each one config value: the prompt (the study's text, none, or seeded random ids),
the suffix (one real token, or a text tokenised as the study does), the latents' order and alignment,
LoRA adapters, and (through ``llm.num_layers``) a truncated LLM. With ``prefix_cache`` the prompt's
key/value cache is computed once (it depends on nothing trainable) and each step runs only the latent
and suffix tokens; the result equals the uncached path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tsllm.backbone import cache_kwarg, decoder_of, input_embeddings
from tsllm.readers.align import build_align
from tsllm.readers.base import Reader, ReaderContext

PROMPTS = ("text", "none", "random")


class LLMReader(Reader):
    """``latents [B, L, H] -> [B, H]``: the LLM's last-layer state at the read position (or mean over latents)."""

    context_args = frozenset({"llm", "tokenizer", "num_tokens", "template", "seed"})

    mode = "hybrid"

    def __init__(self, llm: nn.Module, tokenizer: Any, *, num_tokens: int, template: str, prompt: str = "text",
                 prompt_length: int | None = None, suffix: str = "pad", pooling: str = "last",
                 prefix_cache: bool = True, seed: int = 0, shuffle_latents: str | None = None,
                 align: dict | None = None) -> None:
        super().__init__(num_tokens=num_tokens, seed=seed, shuffle_latents=shuffle_latents, align=align)
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
        self._prefix: list[tuple[Tensor, Tensor]] | None = None
        self._prefix_key: tuple | None = None

    @classmethod
    def from_context(cls, ctx: ReaderContext, *, lora: dict | None = None, template: str = "",
                     **args: Any) -> LLMReader:
        llm, tokenizer = ctx.llm()
        if lora:
            llm = add_lora(llm, **lora)
        template = format_prompt(template, num_tokens=ctx.num_tokens, num_classes=ctx.num_classes,
                                 dataset=ctx.dataset)
        reader = cls(llm, tokenizer, num_tokens=ctx.num_tokens, template=template, seed=ctx.seed, **args)
        if lora:
            reader.mode = "lora"
        return reader

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

    def _prefix_kv(self) -> list[tuple[Tensor, Tensor]]:
        """Per-layer (key, value) of the prompt, batch 1, computed once per device and dtype."""
        key = (self.embed.weight.device, self.embed.weight.dtype)
        if self._prefix is None or self._prefix_key != key:
            # Outside inference mode: tensors made under it could not be used by a later training step.
            with torch.inference_mode(False), torch.no_grad():
                out = self.decoder(inputs_embeds=self.embed(self.prompt_ids[None]), use_cache=True)
            cache = getattr(out, self._cache_kwarg, None) or out.past_key_values
            self._prefix = [(layer.keys, layer.values) for layer in cache.layers]
            self._prefix_key = key
        return self._prefix

    def read(self, latents: Tensor) -> Tensor:
        from transformers import DynamicCache

        b, n_lat, _ = latents.shape
        dtype = self.embed.weight.dtype
        suffix = self.embed(self.suffix_ids).expand(b, -1, -1)
        tail = torch.cat([self.align(latents).to(dtype), suffix], dim=1)  # (B, L+S, H)
        p = self.prompt_ids.numel()
        if self.prefix_cache and p > 0:
            cache = DynamicCache(config=self.llm.config)
            for i, (k, v) in enumerate(self._prefix_kv()):
                cache.update(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1), i)
            positions = torch.arange(p, p + tail.shape[1], device=tail.device)[None]
            hidden = self.decoder(inputs_embeds=tail, position_ids=positions, use_cache=True,
                                  **{self._cache_kwarg: cache}).last_hidden_state  # (B, L+S, H)
        else:
            prompt = self.embed(self.prompt_ids).expand(b, -1, -1)
            hidden = self.decoder(inputs_embeds=torch.cat([prompt, tail], dim=1),
                                  use_cache=False).last_hidden_state[:, p:]
        out = hidden[:, -1] if self.pooling == "last" else hidden[:, :n_lat].mean(dim=1)
        return out.float()


def prompt_token_ids(tokenizer: Any, prompt: str) -> Tensor:
    """Prompt ids with the tokenizer's own special-token rules: one BOS if it uses one, never two."""
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]
    if not ids:
        raise ValueError("reader.template produced no tokens")
    return torch.tensor(ids, dtype=torch.long)


def prompt_ids_for(tokenizer: Any, prompt: str, template: str, *, prompt_length: int | None = None,
                   seed: int = 0) -> Tensor:
    """The prompt the LLM reads first: the template's tokens, nothing, or seeded random ids.

    ``random`` keeps the tokenizer's BOS (when the template starts with it) and fills the rest with
    non-special ids drawn with ``seed``: as many as the template has (or ``prompt_length`` in all).
    """
    if prompt not in PROMPTS:
        raise ValueError(f"reader.prompt={prompt!r}: expected one of {', '.join(PROMPTS)}")
    if prompt == "none":
        return torch.zeros(0, dtype=torch.long)
    real = prompt_token_ids(tokenizer, template)
    if prompt == "text":
        return real
    length = real.numel() if prompt_length is None else prompt_length
    if length < 1:
        raise ValueError(f"reader.prompt=random with reader.prompt_length={length}: expected at least 1 token")
    keep_bos = tokenizer.bos_token_id is not None and int(real[0]) == tokenizer.bos_token_id
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    pool = torch.arange(len(tokenizer))
    pool = pool[~torch.isin(pool, special)]
    draw = torch.randint(len(pool), (length - int(keep_bos),), generator=torch.Generator().manual_seed(seed))
    ids = pool[draw]
    return torch.cat([real[:1], ids]) if keep_bos else ids


def suffix_token_ids(tokenizer: Any, suffix: str) -> Tensor:
    """The read position's tokens: ``pad`` or ``eos`` (one real token), or a text tokenised as the study does.

    A text goes through ``tokenizer(text)`` with its special tokens, so the study's ``"[PAD]"`` becomes the
    same ids its code fed the LLM (a second BOS and the text pieces for a Llama-3 tokenizer).
    """
    if not isinstance(suffix, str):
        raise ValueError(f"reader.suffix={suffix!r} is not a text; on the command line quote it: 'reader.suffix=\"[PAD]\"'")
    if suffix in ("pad", "eos"):
        tok_id = tokenizer.eos_token_id if suffix == "eos" or tokenizer.pad_token_id is None else tokenizer.pad_token_id
        if tok_id is None:
            raise ValueError(f"reader.suffix={suffix}: the tokenizer has no such token")
        return torch.tensor([tok_id], dtype=torch.long)
    if not suffix:
        raise ValueError("reader.suffix is empty: expected pad, eos or a non-empty text")
    return torch.tensor(tokenizer(suffix, add_special_tokens=True)["input_ids"], dtype=torch.long)


def format_prompt(template: str, *, num_tokens: int, num_classes: int, dataset: str) -> str:
    """Fill the prompt template; it may name {num_tokens}, {num_classes} and {dataset}."""
    try:
        return template.format(num_tokens=num_tokens, num_classes=num_classes, dataset=dataset)
    except KeyError as e:
        raise ValueError(f"reader.template names {e}, expected only {{num_tokens}}, {{num_classes}}, {{dataset}}") from None


def add_lora(llm: nn.Module, r: int, alpha: int, dropout: float, target_modules: list[str]) -> nn.Module:
    """Wrap the LLM with PEFT LoRA adapters; only the adapters become trainable."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        bias="none")
    peft_model = get_peft_model(llm, config)
    # The reader calls the inner transformers model; PEFT injected the adapters into it in place.
    return peft_model.base_model.model
