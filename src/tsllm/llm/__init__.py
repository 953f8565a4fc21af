"""The LLM: loading a causal LM (hub id, local path, GGUF, random config), freezing, dtype and quantisation
(:mod:`.loading`), the one prompt prefix cache (:mod:`.prefix`) and the tokenizer helpers (:mod:`.tokens`).

Everything model-specific (hidden size, dtype, BOS and pad tokens) is read from the loaded model and
tokenizer, never hard-coded, so Llama-3.1-8B on a GPU and SmolLM2-135M on this CPU take the same path.
"""

from tsllm.llm.loading import (
    BackboneError,
    auto_dtype,
    byte_tokenizer,
    cache_kwarg,
    decoder_of,
    freeze,
    hidden_size,
    input_embeddings,
    load_config,
    load_llm,
    num_layers,
    resolve_dtype,
)
from tsllm.llm.prefix import PrefixCache, expanded_cache, prefix_key_values
from tsllm.llm.tokens import (
    format_prompt,
    pad_id_of,
    prompt_ids_for,
    prompt_token_ids,
    suffix_token_ids,
    tokenizer_of,
)

__all__ = [
    "BackboneError",
    "PrefixCache",
    "auto_dtype",
    "byte_tokenizer",
    "cache_kwarg",
    "decoder_of",
    "expanded_cache",
    "format_prompt",
    "freeze",
    "hidden_size",
    "input_embeddings",
    "load_config",
    "load_llm",
    "num_layers",
    "pad_id_of",
    "prefix_key_values",
    "prompt_ids_for",
    "prompt_token_ids",
    "resolve_dtype",
    "suffix_token_ids",
    "tokenizer_of",
]
