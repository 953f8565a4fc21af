"""Every mistake on a command line, found before anything exists: ``python -m tsllm.train`` calls this first.

The config is composed as Hydra will compose it, once per value of every sweep axis (the command line's
``a,b,c`` and, with ``-m``, the experiment's ``hydra.sweeper.params``), every group's typed config is built
(tsllm.config), and every dataset is found on disk: all before Hydra creates a run or sweep folder. Each
mistake is one line that names the key, the value and what is expected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from tsllm.config import (
    ConfigError,
    DataConfig,
    DiagnosticsConfig,
    LLMConfig,
    NullLoggerConfig,
    TrainConfig,
    WandbLoggerConfig,
    align_config,
    describe_keys,
    schema_of,
)
from tsllm.data import DataError, locate, resolve_dataset_set
from tsllm.data.sets import RESOLVER_NAME
from tsllm.llm.loading import quantization_problem

_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--experimental-rerun"}
_OTHER_CONFIG = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}
#: Top-level keys a composed config may hold: the groups, and the few plain values conf/train.yaml declares.
ROOT_KEYS = ("data", "encoder", "reader", "llm", "train", "logger", "diagnostics", "seed", "sweep_name", "grid",
             "datasets")
_LOGGERS = {"tsllm.tracking.NullTracker": NullLoggerConfig, "tsllm.tracking.WandbTracker": WandbLoggerConfig}


def check_command_line(conf_dir: str, argv: list[str]) -> str | None:
    """The first mistake of a `tsllm.train` command line as one line, or None. What this check cannot judge
    (another config file, a sweeper's interval) is left to Hydra."""
    overrides, multirun = _overrides(argv)
    if overrides is None:
        return None
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as e:
        return str(e).splitlines()[0]
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    axes: dict[str, list[str]] = {}
    for o in parsed:
        if o.is_sweep_override():
            try:
                axes[o.get_key_element()] = list(o.sweep_string_iterator())
            except Exception:  # noqa: BLE001 - an interval (Optuna) has no list of values: its sweeper checks it
                continue
    first = [*fixed, *(f"{k}={v[0]}" for k, v in axes.items())]
    cfg, problem = compose_checked(conf_dir, first)
    if problem is not None:
        return problem
    if multirun:
        try:
            declared = experiment_axes(cfg, {o.get_key_element() for o in parsed})
        except DataError as e:
            return f"datasets: {str(e).splitlines()[0]}"
        for key, values in declared.items():
            axes.setdefault(key, values)
    for key, values in axes.items():
        if key == "data.name":
            continue  # every name is found below; composing once per name would only repeat the first check
        for value in values[1:]:
            _, problem = compose_checked(conf_dir, [*fixed, *(f"{k}={v[0]}" for k, v in axes.items() if k != key),
                                                    f"{key}={value}"])
            if problem is not None:
                return problem
    return dataset_problem(axes.get("data.name", [cfg.data.name]), cfg.data.root)


def _overrides(argv: list[str]) -> tuple[list[str] | None, bool]:
    """(the overrides on a command line, whether it sweeps); None when it names another config to judge."""
    overrides, skip_next, multirun = [], False, False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg.split("=", 1)[0] in _OTHER_CONFIG:
            return None, False
        elif arg in ("-m", "--multirun"):
            multirun = True
        elif arg.startswith("-"):
            skip_next = arg in _FLAGS_WITH_VALUE and "=" not in arg
        else:
            overrides.append(arg)
    return overrides, multirun


def experiment_axes(cfg: DictConfig, given: Iterable[str],
                    datasets: Callable[[Any, Any], list[str]] = resolve_dataset_set) -> dict[str, list[str]]:
    """The sweep axes an experiment declares (``hydra.sweeper.params``) that the command line leaves alone.

    A dataset set (``${tsllm_datasets:...}``) expands through ``datasets`` (names, root): by default every name
    must be on disk (a DataError names the missing); the planner passes one that sizes the rest from a table.
    """
    params = cfg.hydra.sweeper.get("params") if "hydra" in cfg else None
    if not params:
        return {}
    parser = OverridesParser.create()
    axes = {}
    for key, value in OmegaConf.to_container(params, resolve=False).items():
        if key in given:
            continue
        if RESOLVER_NAME in str(value):
            axes[key] = datasets(OmegaConf.select(cfg, "datasets.names"), cfg.data.root)
            continue
        override = parser.parse_override(f"{key}={value}")
        if not override.is_sweep_override():
            axes[key] = [str(value)]
        elif override.value_type != ValueType.INTERVAL_SWEEP:
            axes[key] = list(override.sweep_string_iterator())
        # an interval (Optuna's search space) has no list of values: its sweeper checks its bounds
    return axes


def compose_checked(conf_dir: str, overrides: list[str]) -> tuple[DictConfig | None, str | None]:
    """(the composed config, None) or (None, its first mistake as one line)."""
    try:
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    except MissingConfigException as e:
        return None, _missing_option(e, overrides)
    except ConfigCompositionException as e:
        return None, _composition_problem(e, overrides, conf_dir)
    except Exception as e:  # noqa: BLE001 - a resolver's own error (a dataset set), already one line
        return None, str(e).splitlines()[0]
    if "queues" in cfg:
        name = cfg.hydra.runtime.choices.get("experiment")
        return None, (f"experiment={name} lists queues of sweeps: run it with python -m tsllm.experiment run {name}, "
                      f"one of its sweeps with the overrides it lists (python -m tsllm.experiment run {name} --dry-run)")
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])  # hydra's own node resolves only in a job
    return cfg, config_problem(job)


def config_problem(cfg: DictConfig) -> str | None:
    """Every group's typed config built from a composed config: the first problem as one line, or None."""
    from tsllm.identity import identify

    extra = sorted(set(cfg) - set(ROOT_KEYS))
    if extra:
        return f"{extra[0]}: unknown top-level key; the config takes {', '.join(ROOT_KEYS)}"
    try:
        TrainConfig.from_cfg(cfg.train)
        DataConfig.from_cfg(cfg.data)
        DiagnosticsConfig.from_cfg(cfg.diagnostics)
        _LOGGERS.get(cfg.logger.get("_target_"), NullLoggerConfig).from_cfg(cfg.logger)
        encoder = schema_of("encoder", cfg.encoder.name)
        if encoder is None:
            return f"encoder.name={cfg.encoder.name}: no registered encoder of that name (tsllm.encoders.ENCODERS)"
        encoder.from_cfg(cfg.encoder)
        spec = LLMConfig.from_cfg(cfg.llm)
        if spec.name_or_path is None and spec.random_config is None:
            return f"llm.name_or_path is required for llm={spec.name}: e.g. llm.name_or_path=/path/to/model"
        if identify(cfg).uses_llm and (problem := quantization_problem(spec.quantization)) is not None:
            return problem
        identify(cfg)  # the reader's options, typed
        if "align" in cfg.reader:
            align_config(cfg.reader.align)
    except (ConfigError, ValueError, TypeError) as e:
        return str(e).splitlines()[0]
    return None


def dataset_problem(names: Iterable[str], root: str | None) -> str | None:
    """The first dataset a run or sweep names that is not on disk, as one line; None when all are found."""
    for name in names:
        try:
            locate(name, root)
        except DataError as e:
            return f"data.name={name}: {str(e).splitlines()[0]}"
    return None


def _missing_option(e: MissingConfigException, overrides: list[str]) -> str:
    """``encoder=gur: no such option; encoder takes cnn, inception, ...`` (schemas are not options)."""
    text = str(e)
    group = next((o.split("=", 1)[0].lstrip("+~") for o in overrides
                  if "=" in o and f"'{o.split('=', 1)[0].lstrip('+~')}/" in text), None)
    options = [o for o in (e.options or []) if not o.startswith("schema_")]
    given = next((o.lstrip("+~") for o in overrides if group and o.lstrip("+~").startswith(f"{group}=")), None)
    if group is None or not options:
        return text.splitlines()[0]
    return f"{given}: no such option; {group} takes {', '.join(options)}"


def _composition_problem(e: ConfigCompositionException, overrides: list[str], conf_dir: str) -> str:
    """One line for a failed composition: an unknown key with the keys its group takes, or a wrong type."""
    cause = e.__cause__ if e.__cause__ is not None else e
    full_key = getattr(cause, "full_key", None) or ""
    text = str(e)
    if "Key 'align' not in" in text:
        given = next((o for o in overrides if o.lstrip("+~").startswith("align=")), "align")
        return (f"{given}: this reader has no LLM to align; align applies to reader=llm (mode=hybrid|lora), "
                "or leave align out")
    override = next((o for o in overrides if full_key and o.lstrip("+~").split("=", 1)[0] == full_key), None)
    if "not in" in str(cause) and "." in full_key:
        group = full_key.rsplit(".", 1)[0]
        return f"{override or full_key}: unknown key; {_keys_of(group, overrides, conf_dir)}"
    first = (str(cause).splitlines() or [type(cause).__name__])[0]
    return f"{override or full_key}: {first}" if (override or full_key) else first


def _keys_of(group: str, overrides: list[str], conf_dir: str) -> str:
    """What a group's current config takes (composed without the offending override), for the message."""
    try:
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            cfg = compose(config_name="train", overrides=[o for o in overrides if not o.lstrip("+~").startswith(group)])
        node: Any = OmegaConf.select(cfg, group)
        return describe_keys(group, node.get("name"), [str(k) for k in node])
    except Exception:  # noqa: BLE001 - the keys only help the message
        return f"see conf/{group.split('.')[0]}/"
