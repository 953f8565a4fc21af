"""Tokenizer helpers shared by every reader that talks to an LLM: the prompt, the read position, padding.

Special tokens follow each tokenizer's own rules (a Llama-3 tokenizer adds ``<|begin_of_text|>`` itself,
SmolLM2's adds none), so the same code serves every backbone; tests/test_llama3_prompt.py checks the
Llama-3 path with an offline tokenizer that has its special tokens.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

PROMPTS = ("text", "none", "random")


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


def pad_id_of(tokenizer: Any) -> int:
    """Any id works under the mask; prefer the tokenizer's pad token, then its eos, then 0."""
    for tok_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tok_id is not None:
            return int(tok_id)
    return 0


def tokenizer_of(llm_cfg: Any) -> Any | None:
    """The tokenizer of a run's LLM (for decoding token ids), or None when it cannot be loaded here."""
    from tsllm.config import LLMConfig
    from tsllm.llm.loading import byte_tokenizer, convert_gguf, resolve_location

    spec = LLMConfig.from_cfg(llm_cfg)
    if spec.random_config is not None:
        return byte_tokenizer()
    try:
        from transformers import AutoTokenizer

        location = resolve_location(spec.name_or_path)
        if spec.gguf_file:  # the run converted it already; this finds the converted folder
            location = str(convert_gguf(location, spec.gguf_file, spec.cache_dir))
        return AutoTokenizer.from_pretrained(location)
    except Exception as e:  # any loading failure (offline, gated) only costs the decoded strings
        log.warning("No tokenizer for %s (%s)", spec.name, type(e).__name__)
        return None
