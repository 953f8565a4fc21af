"""The one prompt prefix cache: a prefix every example shares is run through the LLM once.

A prefix that depends on nothing trainable (the hybrid reader's prompt, the text arm's few-shot examples)
gives the same keys and values for every example, so they are computed once (batch 1) and expanded to
each batch; only the tokens after it are run. Positions continue from the prefix, so the result equals
running the whole sequence (tests/test_hybrid.py and tests/test_text.py check it, in fp32 and bf16).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tsllm.llm.loading import cache_kwarg

KeyValues = list[tuple[Tensor, Tensor]]


def prefix_key_values(decoder: nn.Module, **prefix: Tensor) -> KeyValues:
    """Per-layer (key, value) of a prefix, batch 1: ``input_ids=[1, P]`` or ``inputs_embeds=[1, P, H]``.

    Computed outside inference mode (tensors made under it could not serve a later training step) and
    without gradients (the prefix depends on nothing trainable).
    """
    with torch.inference_mode(False), torch.no_grad():
        out = decoder(**prefix, use_cache=True)
    cache = getattr(out, cache_kwarg(decoder), None) or out.past_key_values
    return [(layer.keys, layer.values) for layer in cache.layers]


def expanded_cache(key_values: KeyValues, batch: int, config: Any) -> Any:
    """A fresh ``DynamicCache`` holding the prefix for each of ``batch`` rows (views, no copies)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    for layer, (k, v) in enumerate(key_values):
        cache.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), layer)
    return cache


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast computes in on this device type now, None where it is off (or has none: meta)."""
    if not torch.amp.is_autocast_available(device_type) or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


class PrefixCache:
    """The key/values of one prefix, kept per (device, dtype, autocast) they were computed in."""

    def __init__(self) -> None:
        self._kv: KeyValues | None = None
        self._key: tuple | None = None

    def get(self, decoder: nn.Module, weight: Tensor, **prefix: Tensor) -> KeyValues:
        """The prefix's key/values, computed on first use and again only if the weights moved or changed dtype,
        or autocast changed: keys made under bf16 autocast would carry its rounding into an fp32 pass."""
        key = (weight.device, weight.dtype, autocast_dtype(weight.device.type))
        if self._kv is None or self._key != key:
            self._kv, self._key = prefix_key_values(decoder, **prefix), key
        return self._kv
