"""Config types: one typed schema per config group, and what Hydra is told of them.

Each group's YAML lists its schema first in its defaults (``- schema_<name>``), so a wrong type or an
unknown key fails while the config is composed, before any run folder exists. The groups whose options
are plug-ins take their types from the plug-in itself: an encoder's config is its constructor's keyword
arguments (:func:`encoder_schema`), a reader's is the ``Options`` dataclass it declares. Options fixed to a
set are ``Literal`` types; OmegaConf has none, so Hydra is given a copy with their base type and
:meth:`Checked.from_cfg` checks the set when a run builds its typed config (``tsllm.preflight`` does so
for every group before anything is created).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf

from tsllm.data import MISSING_STRATEGIES, NORMALISATIONS

#: Field metadata of a setting that names a run's arm when it is off its default (``tsllm.identity``).
ARM = {"arm": True}


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints(cls)``, evaluated once per class: every config built (thousands when the
    results load their records) would otherwise re-evaluate the string annotations."""
    return typing.get_type_hints(cls)


T = TypeVar("T", bound="Checked")


class ConfigError(ValueError):
    """A config value or key that cannot be used: one line naming the key, the value and what is expected."""


def plain(cfg: Any) -> Any:
    """A DictConfig/ListConfig as plain containers (resolved); anything else as it is."""
    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def literal_values(hint: Any) -> tuple[Any, ...]:
    """The values a ``Literal`` hint (or an optional one) allows; () when the hint is no Literal."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    if _is_union(hint):
        return tuple(v for arg in typing.get_args(hint) for v in literal_values(arg))
    return ()


def _is_union(hint: Any) -> bool:
    return isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union


@dataclass
class Checked:
    """Base of every group's type: built from a config with its keys and fixed option sets checked."""

    #: Where the type's keys sit in the config (for messages: ``train.lr``, ``reader.prompt``).
    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = type_hints(type(self))
        for f in fields(self):
            allowed = literal_values(hints[f.name])
            value = getattr(self, f.name)
            if allowed and value not in allowed and not (value is None and _optional(hints[f.name])):
                raise ConfigError(f"{self.section}.{f.name}={value!r}: expected one of "
                                  f"{', '.join(str(v) for v in allowed)}")

    @classmethod
    def from_cfg(cls: type[T], cfg: Any) -> T:
        """Build from a DictConfig or dict; an unknown key is an error naming the known ones."""
        given = dict(plain(cfg))
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ConfigError(f"{', '.join(f'{cls.section}.{k}' for k in unknown)}: unknown key; "
                              f"{describe_keys(cls.section, given.get('name'), known)}")
        hints = type_hints(cls)
        for name, value in given.items():
            nested = _dataclass_in(hints[name])
            if nested is not None and isinstance(value, dict):
                given[name] = nested.from_cfg(value)
        return cls(**given)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Each field's default (None where the field has none)."""
        out = {}
        for f in fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
            else:
                out[f.name] = None
        return out


def describe_keys(section: str, name: Any, keys: Sequence[str]) -> str:
    """``encoder inception takes num_tokens, num_kernels, ...``: what a group option takes (its name aside).

    ``data.name`` is the dataset, a key like any other, not the name of the group's option.
    """
    if section == "data":
        return f"data takes {', '.join(keys)}"
    takes = [k for k in keys if k not in ("name", "_target_")]
    return f"{section}{f' {name}' if isinstance(name, str) else ''} takes {', '.join(takes) or 'no options'}"


def _optional(hint: Any) -> bool:
    return _is_union(hint) and type(None) in typing.get_args(hint)


def _dataclass_in(hint: Any) -> type[Checked] | None:
    """The Checked dataclass a hint names (directly or as an optional), else None."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    return next((o for o in options if isinstance(o, type) and issubclass(o, Checked)), None)


# --------------------------------------------------------------------------- the groups


@dataclass
class TrainConfig(Checked):
    """conf/train/*.yaml: the one training loop's settings."""

    section: ClassVar[str] = "train"

    epochs: int = 100
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Literal["adam", "adamw"] = "adam"    # the study: AdamW, weight decay 1e-5
    early_stopping: int = 0
    stop_at_train_acc: float | None = None           # stop once an epoch's training accuracy reaches it
    selection: Literal["val", "min_train_loss", "last"] = "val"
    # The autocast of the trainable part (encoder, reader layers, head, loss); llm.dtype is the storage of the
    # frozen weights. Two knobs because they answer two questions (an 8B LLM is stored in bf16 to fit, while
    # the trainable part may compute in fp32); both `auto`s resolve through tsllm.llm.loading.auto_dtype.
    precision: Literal["auto", "fp32", "no", "bf16", "fp16"] = "auto"
    resume: bool = True
    protocol: Literal["val_selected", "study_best_test"] = "val_selected"
    # CPU threads of the run's process: null = the cores given to the process, divided among the jobs of a
    # local parallel sweep (tsllm.loop.resolve_threads). Never changes a number: left out of the config hash.
    threads: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stop_at_train_acc is not None and not 0.0 < self.stop_at_train_acc <= 1.0:
            raise ConfigError(f"train.stop_at_train_acc={self.stop_at_train_acc}: expected null or a value in (0, 1]")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"train.threads={self.threads}: expected null (the cores available) or >= 1")


@dataclass
class DataConfig(Checked):
    """conf/data/*.yaml: which dataset, where, and how its splits are made."""

    section: ClassVar[str] = "data"

    name: str = "GunPoint"
    root: str | None = None
    normalise: Literal[NORMALISATIONS] = "znorm"  # type: ignore[valid-type]
    val_fraction: float = 0.2
    missing: Literal[MISSING_STRATEGIES] = "interpolate"  # type: ignore[valid-type]


DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16", "float64")


@dataclass
class LLMConfig(Checked):
    """conf/llm/*.yaml: where the weights are and how to load them."""

    section: ClassVar[str] = "llm"

    name: str = "custom"
    name_or_path: str | None = None
    gguf_file: str | None = None
    dtype: Literal[DTYPES] = "auto"  # type: ignore[valid-type]
    weights: Literal["pretrained", "random"] = field(default="pretrained", metadata=ARM)
    quantization: Literal["8bit", "4bit"] | None = None
    random_config: dict[str, Any] | None = None
    cache_dir: str | None = None
    num_layers: int | None = field(default=None, metadata=ARM)  # keep the first k layers (truncated-LLM control)


@dataclass
class DiagnosticsConfig(Checked):
    """conf/diagnostics/*.yaml: after selection, never influencing it (tsllm.diagnostics)."""

    section: ClassVar[str] = "diagnostics"

    level: Literal["auto", "none", "basic", "full"] = "auto"
    batch_size: int = 64
    max_series: int = 1000


@dataclass
class NullLoggerConfig(Checked):
    """conf/logger/none.yaml"""

    section: ClassVar[str] = "logger"

    _target_: str = "tsllm.tracking.NullTracker"


@dataclass
class WandbLoggerConfig(Checked):
    """conf/logger/wandb.yaml: the arguments of tsllm.tracking.WandbTracker."""

    section: ClassVar[str] = "logger"

    _target_: str = "tsllm.tracking.WandbTracker"
    project: str = "tsllm"
    mode: Literal["offline", "online", "disabled"] = "offline"
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    entity: str | None = None


# The alignment options of the LLM reader (conf/align/*.yaml, package reader.align), one type per kind.
@dataclass
class AlignNone(Checked):
    """The latents as the encoder made them."""

    section: ClassVar[str] = "reader.align"
    name: Literal["none"] = "none"


@dataclass
class AlignScale(Checked):
    """RMS-normalised latents at the word embeddings' median norm, with a learnable gain per position."""

    section: ClassVar[str] = "reader.align"
    name: Literal["scale"] = "scale"


@dataclass
class AlignPrototypes(Checked):
    """Each latent a mixture of K learned convex combinations of the frozen embedding matrix."""

    section: ClassVar[str] = "reader.align"
    name: Literal["prototypes"] = "prototypes"
    num_prototypes: int = 100
    num_heads: int = 8


@dataclass
class AlignNearest(Checked):
    """At evaluation only, each latent replaced by its nearest word embedding."""

    section: ClassVar[str] = "reader.align"
    name: Literal["nearest"] = "nearest"


ALIGN_TYPES: dict[str, type[Checked]] = {"none": AlignNone, "scale": AlignScale, "prototypes": AlignPrototypes,
                                          "nearest": AlignNearest}


def align_config(cfg: Any) -> Checked:
    """The typed alignment of a reader config's ``align`` node."""
    d = dict(plain(cfg) or {"name": "none"})
    kind = d.get("name", "none")
    if kind not in ALIGN_TYPES:
        raise ConfigError(f"align={kind}: expected one of {', '.join(ALIGN_TYPES)}")
    return ALIGN_TYPES[kind].from_cfg(d)


# --------------------------------------------------------------------------- plug-in groups


#: Constructor arguments an encoder takes from the run, never from its config.
ENCODER_CONTEXT_ARGS = ("self", "in_channels", "length", "latent_dim")


def encoder_schema(name: str, cls: type) -> type[Checked]:
    """An encoder family's config type: ``name`` and its constructor's keyword arguments, as declared there."""
    hints = typing.get_type_hints(cls.__init__)
    specs: list[tuple[str, Any, Any]] = [("name", str, field(default=name))]
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in ENCODER_CONTEXT_ARGS or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue
        default = list(p.default) if isinstance(p.default, tuple) else p.default
        specs.append((p.name, hints.get(p.name, Any), _field_with(default)))
    return dataclasses.make_dataclass(f"{cls.__name__}Config", specs, bases=(Checked,),
                                      namespace={"section": "encoder"})


@dataclass
class NoEncoderConfig(Checked):
    """encoder=none: the raw series go to a reader that reads series itself (mode=text)."""

    section: ClassVar[str] = "encoder"
    name: str = "none"


def _field_with(default: Any) -> Any:
    if default is inspect.Parameter.empty:
        return field(default=None)
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d))
    return field(default=default)


def omegaconf_schema(cls: type[Checked]) -> type:
    """A copy of a config type that OmegaConf can hold: Literal -> its base type, sequences -> lists."""
    hints = type_hints(cls)
    specs = []
    for f in fields(cls):
        kw = {"default": f.default} if f.default is not dataclasses.MISSING else {"default_factory": f.default_factory}
        specs.append((f.name, _omegaconf_type(hints[f.name]), field(**kw)))
    return dataclasses.make_dataclass(cls.__name__, specs)


def _omegaconf_type(hint: Any) -> Any:
    if typing.get_origin(hint) is Literal:
        return type(typing.get_args(hint)[0])
    if _is_union(hint):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = _omegaconf_type(args[0]) if len(args) == 1 else Any
        return typing.Optional[inner] if type(None) in typing.get_args(hint) else inner  # noqa: UP045
    origin = typing.get_origin(hint)
    if origin in (list, tuple, Sequence, typing.Sequence):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return list[_omegaconf_type(args[0])] if args else list  # type: ignore[index]
    if isinstance(hint, type) and issubclass(hint, Checked):
        return Any  # a nested option object (the LLM reader's lora): typed when the reader is built
    if origin is dict:
        return dict[str, Any]
    return hint


def schemas() -> list[tuple[str, str, type[Checked]]]:
    """(group, schema name, type) of every config group and plug-in, as Hydra's ConfigStore holds them."""
    from tsllm.encoders import ENCODERS
    from tsllm.readers import READERS

    fixed = [("train", "schema_train", TrainConfig), ("data", "schema_data", DataConfig),
             ("llm", "schema_llm", LLMConfig), ("diagnostics", "schema_diagnostics", DiagnosticsConfig),
             ("logger", "schema_none", NullLoggerConfig), ("logger", "schema_wandb", WandbLoggerConfig),
             ("encoder", "schema_none", NoEncoderConfig)]
    fixed += [("align", f"schema_{name}", t) for name, t in ALIGN_TYPES.items()]
    fixed += [("encoder", f"schema_{name}", encoder_schema(name, cls)) for name, cls in ENCODERS.items()]
    fixed += [("reader", f"schema_{name}", cls.Options) for name, cls in READERS.items()]
    return fixed


def register_schemas() -> None:
    """Make every schema available to the defaults lists of conf/ (``- schema_<name>``)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for group, name, node in schemas():
        cs.store(group=group, name=name, node=omegaconf_schema(node))


def schema_of(group: str, name: str) -> type[Checked] | None:
    """The type of one group option (``schema_of("encoder", "inception")``), or None."""
    return next((t for g, n, t in schemas() if g == group and n == f"schema_{name}"), None)
