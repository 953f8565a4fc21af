"""What reads the encoder's latents: one class a file, chosen by the ``reader`` config group.

Each reader class declares its ``Options`` (the typed config of ``conf/reader/<name>.yaml``), its mode and
whether an LLM reads its latents; :func:`build_reader` builds the class a config names (``_target_``) from
its options and the run's context. :data:`READERS` lists the readers whose config types conf/ knows.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from hydra.utils import get_class

from tsllm.config import ConfigError, plain
from tsllm.readers.attention import AttentionReader
from tsllm.readers.base import Reader, ReaderContext, ReaderOptions
from tsllm.readers.llm import LLMReader
from tsllm.readers.mean import MeanReader
from tsllm.readers.text import TextICLReader, TextProbeReader
from tsllm.readers.transformer_layer import TransformerLayerReader
from tsllm.records import LEGACY_ALIGN

__all__ = [
    "READERS",
    "AttentionReader",
    "LLMReader",
    "MeanReader",
    "Reader",
    "ReaderContext",
    "ReaderOptions",
    "TextICLReader",
    "TextProbeReader",
    "TransformerLayerReader",
    "build_reader",
    "reader_class",
    "reader_options",
]

READERS: dict[str, type[Reader]] = {cls.Options.name: cls for cls in (
    MeanReader, LLMReader, AttentionReader, TransformerLayerReader, TextProbeReader, TextICLReader)}


def reader_class(reader_cfg: Any) -> type[Reader]:
    """The Reader class a ``reader`` config names (``_target_``)."""
    target = plain(reader_cfg)["_target_"]
    cls = get_class(target)
    if not (isinstance(cls, type) and issubclass(cls, Reader)):
        raise ConfigError(f"reader._target_={target!r} is not a tsllm Reader")
    return cls


def reader_options(reader_cfg: Any) -> tuple[type[Reader], ReaderOptions]:
    """(the Reader class a ``reader`` config names, its typed options)."""
    reader = dict(plain(reader_cfg))
    cls = reader_class(reader)
    if "align" not in {f.name for f in fields(cls.Options)} and reader.get("align") == LEGACY_ALIGN:
        reader.pop("align")  # a record from before alignment became the LLM reader's own option
    return cls, cls.Options.from_cfg(reader)


def build_reader(reader_cfg: Any, ctx: ReaderContext) -> Reader:
    """Build the reader a ``reader`` config names, from its typed options and the run's context."""
    cls, options = reader_options(reader_cfg)
    return cls.from_context(ctx, options)
