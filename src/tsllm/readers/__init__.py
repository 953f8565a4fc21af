"""What reads the encoder's latents: one class a file, chosen by the ``reader`` config group.

Each ``conf/reader/*.yaml`` names its class with ``_target_`` plus ``name`` and that class's arguments;
:func:`build_reader` resolves the class and builds it from those arguments and the run's context.
"""

from __future__ import annotations

from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from tsllm.readers.attention import AttentionReader
from tsllm.readers.base import Reader, ReaderContext
from tsllm.readers.llm import LLMReader, prompt_token_ids, suffix_token_ids
from tsllm.readers.mean import MeanReader
from tsllm.readers.text import TextICLReader, TextProbeReader
from tsllm.readers.transformer_layer import TransformerLayerReader

__all__ = [
    "AttentionReader",
    "LLMReader",
    "MeanReader",
    "Reader",
    "ReaderContext",
    "TextICLReader",
    "TextProbeReader",
    "TransformerLayerReader",
    "build_reader",
    "reader_uses_llm",
    "prompt_token_ids",
    "suffix_token_ids",
]


def build_reader(reader_cfg: Any, ctx: ReaderContext) -> Reader:
    """Build the reader a ``reader`` config names (``_target_``), with the run's context."""
    args = OmegaConf.to_container(reader_cfg, resolve=True) if isinstance(reader_cfg, DictConfig) else dict(reader_cfg)
    target = args.pop("_target_")
    args.pop("name", None)
    cls = get_class(target)
    if not (isinstance(cls, type) and issubclass(cls, Reader)):
        raise ValueError(f"reader._target_={target!r} is not a tsllm Reader")
    return cls.from_context(ctx, **args)


def reader_uses_llm(reader_cfg: Any) -> bool:
    """Whether the reader a config names loads the LLM (to read with it, or for its BOS embedding)."""
    cls = get_class(reader_cfg["_target_"])
    return cls.mode != "standalone" or bool(reader_cfg.get("bos", False))
