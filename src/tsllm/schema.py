"""Typed schemas for the config groups train, data, llm and logger, registered in Hydra's ConfigStore.

Each group's YAML names its schema in its defaults list, so a wrong type (`train.lr=abc`) or an unknown
key fails while the config is composed: before any run folder is created or any model is built.
`check_overrides` turns such a failure into one line naming the key, the value and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from tsllm.backbone import LLMSpec
from tsllm.loop import TrainConfig


@dataclass
class DataSchema:
    """conf/data/*.yaml"""

    name: str = "GunPoint"
    root: str | None = None
    normalise: str = "znorm"
    val_fraction: float = 0.2
    missing: str = "interpolate"


@dataclass
class NullLoggerSchema:
    """conf/logger/none.yaml"""

    _target_: str = "tsllm.tracking.NullTracker"


@dataclass
class WandbLoggerSchema:
    """conf/logger/wandb.yaml: the arguments of tsllm.tracking.WandbTracker."""

    _target_: str = "tsllm.tracking.WandbTracker"
    project: str = "tsllm"
    mode: str = "offline"
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    entity: str | None = None


SCHEMAS = {("train", "schema_train"): TrainConfig, ("data", "schema_data"): DataSchema, ("llm", "schema_llm"): LLMSpec,
           ("logger", "schema_none"): NullLoggerSchema, ("logger", "schema_wandb"): WandbLoggerSchema}


def register_schemas() -> None:
    """Make the schemas available to the defaults lists of conf/train, conf/data and conf/logger."""
    cs = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        cs.store(group=group, name=name, node=node)


def describe_config_error(error: BaseException, override: str | None) -> str:
    """One line for a composition failure: the key, the value given and the expected type or keys."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    cause = error.__cause__ if error.__cause__ is not None else error
    full_key = getattr(cause, "full_key", None) or ""
    first = (str(cause).splitlines() or [type(cause).__name__])[0]
    what = override or full_key
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and "." in full_key:
        group = full_key.rsplit(".", 1)[0]
        schema = next((n for (g, _), n in SCHEMAS.items() if g == group), None)
        if schema is None and group == "llm":
            from tsllm.backbone import LLMSpec

            schema = LLMSpec
        if schema is not None:
            return f"{what}: unknown key; {group} takes {', '.join(f.name for f in fields(schema))}"
    return f"{what}: {first}" if what else first


_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--experimental-rerun"}
_OTHER_CONFIG = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}


def check_overrides(conf_dir: str, argv: list[str]) -> str | None:
    """Compose the command line's config as Hydra will (first value of each sweep); the first error as
    one line, or None. Anything this check cannot judge is left to Hydra itself."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    overrides, skip_next = [], False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg.split("=", 1)[0] in _OTHER_CONFIG:
            return None
        elif arg.startswith("-"):
            skip_next = arg in _FLAGS_WITH_VALUE and "=" not in arg
        else:
            overrides.append(arg)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException:
        return None
    first, others = [], []  # every sweep value is checked once, with the others at their first value
    for o in parsed:
        if not o.is_sweep_override():
            first.append(o.input_line)
            continue
        try:
            values = list(o.sweep_string_iterator())[:MAX_CHECKED_VALUES]
        except Exception:  # interval sweeps (Optuna) have no list of values; the sweeper checks them
            continue
        key = o.get_key_element()
        first.append(f"{key}={values[0]}")
        others += [(len(first) - 1, f"{key}={v}") for v in values[1:]]
    for where, value in [(None, None), *others]:
        single = list(first)
        if where is not None:
            single[where] = value
        problem = _compose_problem(conf_dir, single)
        if problem is not None:
            return problem
    return None


MAX_CHECKED_VALUES = 20


def _compose_problem(conf_dir: str, overrides: list[str]) -> str | None:
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    try:
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
    except ConfigCompositionException as e:
        text = str(e)
        override = next((o for o in overrides if o in text or o.lstrip("+~").split("=", 1)[0] in text), None)
        return describe_config_error(e, override)
    except Exception:
        return None
    try:
        TrainConfig.from_cfg(cfg.train)
    except ValueError as e:
        return str(e)
    return _llm_problem(cfg) or reader_problem(OmegaConf.to_container(cfg.reader, resolve=True))


def _llm_problem(cfg: Any) -> str | None:
    """The llm group is checked too: a missing path (llm=custom) or an unknown key, in one line."""
    from omegaconf import OmegaConf

    from tsllm.backbone import BackboneError, LLMSpec

    try:
        spec = LLMSpec.from_cfg(OmegaConf.to_container(cfg.llm, resolve=True))
    except BackboneError as e:
        return str(e)
    if spec.name_or_path is None and spec.random_config is None:
        return f"llm.name_or_path is required for llm={spec.name}: e.g. llm.name_or_path=/path/to/model"
    return None


def reader_problem(reader_cfg: Any) -> str | None:
    """A reader's arguments checked against its class before anything is built: an unknown key, or a value
    of the wrong simple type (int, float, bool, str), as one line naming key, value and expected type."""
    import inspect
    import typing

    from hydra.utils import get_class

    args = dict(reader_cfg)
    target = args.pop("_target_", None)
    args.pop("name", None)
    try:
        cls = get_class(target)
    except Exception:  # noqa: BLE001 - an unknown class is reported when the reader is built
        return None
    # What the config may set: from_context's own keywords and, where it passes the rest on (**args), the
    # constructor's, less those the run supplies (the class's context_args).
    accepted: dict[str, Any] = {}
    for fn, skip in ((cls.from_context, {"cls", "ctx"}), (cls.__init__, {"self", *cls.context_args})):
        hints = typing.get_type_hints(fn)
        params = inspect.signature(fn).parameters.values()
        for p in params:
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in skip:
                accepted.setdefault(p.name, hints.get(p.name))
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    for key, value in args.items():
        if key not in accepted:
            known = ", ".join(sorted(accepted))
            return f"reader.{key}: unknown key for reader {reader_cfg.get('name')}; it takes {known}"
        expected = _simple_types(accepted[key])
        if expected and value is not None and not isinstance(value, expected) \
                and not (float in expected and isinstance(value, int) and not isinstance(value, bool)):
            names = " or ".join(t.__name__ for t in expected)
            return f"reader.{key}={value!r}: expected {names}"
    return None


def _simple_types(hint: Any) -> tuple[type, ...]:
    """The simple types a hint allows (int, float, bool, str), or () when it is anything richer."""
    import types
    import typing

    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    simple = tuple(t for t in options if t in (int, float, bool, str))
    richer = [t for t in options if t not in (int, float, bool, str, type(None))]
    return () if richer else simple
