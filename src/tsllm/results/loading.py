"""Run records -> one tidy table: read, validate, identify cells, label arms, filter, write.

Every number comes from ``record.json`` files (never from logs). A record that is failed, unfinished or
malformed is listed once and skipped; nothing is written before every record has been read and checked.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterable, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import pandas as pd

from tsllm.identity import ARM_GROUPS, ARM_SETTINGS, identify, without
from tsllm.records import RECORD, RunRecord, canonical, config_hash

logger = logging.getLogger("tsllm.results")

# The record's scalar fields, as train writes them (tsllm.records.RunRecord), in this column order. The
# record's own arm label becomes ``run_arm``; ``arm`` is that label qualified within a table (label_runs).
SCALAR_KEYS = RunRecord.columns()
ACCURACY_KEYS = ("val_acc", "test_acc", "test_acc_last_epoch", "study_best_test_acc",
                 "study_min_train_loss_test_acc")
DATA_KEYS = ("n_train", "n_val", "n_test", "num_classes", "sha256", "leaks_test")
COST_KEYS = ("flops_per_step", "llm_tokens_per_step", "seconds_per_epoch", "peak_rss_mib", "peak_accelerator_mib")
ARM_NAME_KEYS = ("reader.name", "mode.name")
# Keys that say which data a run saw; the dataset column (name, plus checksum when ambiguous) stands for them.
DATASET_KEYS = ("data.name", "data.root")
INT_COLUMNS = ("seed", "num_tokens", "num_kernels", "best_epoch", "epochs_run", "resumed_from_epoch", "epochs",
               "trainable_params", "frozen_params", "data_n_train", "data_n_val", "data_n_test", "data_num_classes")
TIDY_COLUMNS = (
    *SCALAR_KEYS, "run_arm", "sweep", "epochs", "trainable_params", "frozen_params", "git_sha", "device",
    "data_name", *(f"data_{k}" for k in DATA_KEYS), *(f"cost_{k}" for k in COST_KEYS), "variant", "path",
)

_warned: set[str] = set()


def warn_once(message: str, *args: Any) -> None:
    """Log a warning unless the same text was already logged (tables recompute the same groups often)."""
    text = message % args if args else message
    if text not in _warned:
        _warned.add(text)
        logger.warning(text)


def _get(mapping: Any, *keys: str) -> Any:
    """``mapping[k1][k2]...`` or None when any level is missing or not a dict."""
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``{"train.lr": 1e-3, ...}``; lists become JSON text so they compare and store as one value."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | tuple) else value
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def validate(record: Any) -> str | None:
    """Why ``record`` cannot be used (one line), or None when it is a finished, well-formed run record."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if "status" not in record:
        return "not a run record (no 'status')"
    if record["status"] != "finished":
        return f"status {record['status']!r}" + (f": {record['error']}" if record.get("error") else "")
    config = record.get("config")
    if not isinstance(config, dict):
        return "no 'config' object"
    if not isinstance(_get(config, "data", "name"), str):
        return "config key 'data.name' missing or not a string"
    seed = config.get("seed", record.get("seed"))
    if not isinstance(seed, int) or isinstance(seed, bool):
        return f"config key 'seed' is {seed!r} (expected an integer)"
    lr = _get(config, "train", "lr")
    if lr is not None and not _is_number(lr):
        return f"config key 'train.lr' is {lr!r} (expected a number)"
    if record.get("test_acc") is None:
        return "finished without 'test_acc'"
    try:
        identify(config)
    except Exception as e:  # noqa: BLE001 - a reader class that no longer exists, or options it no longer takes
        return f"cannot tell its arm ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    for key in ACCURACY_KEYS:
        value = record.get(key)
        if value is not None and not (_is_number(value) and 0 <= value <= 1):
            return f"key {key!r} is {value!r} (expected a number in [0, 1])"
    return None


def _read(path: Path) -> tuple[Any, str | None]:
    """The parsed record (None if not readable JSON) and why it is not usable (None when it is)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"not readable JSON ({e})"
    return record, validate(record)


def _outside_selection(record: Any, where: Sequence[tuple[str, str]], sweeps: Sequence[str]) -> bool:
    """Whether a record skipped as unusable (running, failed) says it is of another sweep or ``where``,
    so a report of one sweep does not count another's runs in flight. Records without a config always count."""
    config = record.get("config") if isinstance(record, dict) else None
    if not isinstance(config, dict):
        return False
    if sweeps and config.get("sweep_name") not in sweeps:
        return True
    flat = flatten(config)
    return any(key in flat and not _matches(flat[key], wanted) for key, wanted in where)


def _tidy_row(record: dict[str, Any], path: Path) -> dict[str, Any]:
    row = {key: record.get(key) for key in SCALAR_KEYS}
    config = canonical(record["config"])
    # What the run is: stored by train (tsllm.identity), computed by the same function for older records.
    identity = identify(config)
    # The config is the fallback for keys an older record may not have lifted to the top level.
    fallbacks = {
        "dataset": _get(config, "data", "name"), "encoder": _get(config, "encoder", "name"),
        "mode": identity.mode, "lr": _get(config, "train", "lr"), "num_tokens": _get(config, "encoder", "num_tokens"),
        "seed": config.get("seed"), "reader": _get(config, "reader", "name"),
    }
    for key, value in fallbacks.items():
        if row[key] is None:
            row[key] = value
    row.update(
        run_arm=record.get("arm") or identity.arm,
        cell=record.get("cell") or identity.cell,
        context=record.get("context") or identity.context,
        sweep=config.get("sweep_name"),
        epochs=_get(config, "train", "epochs"),
        trainable_params=_get(record, "params", "trainable"),
        frozen_params=_get(record, "params", "frozen"),
        git_sha=_get(record, "env", "git", "sha"),
        device=_get(record, "env", "device"),
        data_name=_get(config, "data", "name"),
        path=_shown(path),
    )
    row.update({f"data_{k}": _get(record, "data", k) for k in DATA_KEYS})
    row.update({f"cost_{k}": _get(record, "cost", k) for k in COST_KEYS})
    # Scalar diagnostics (diag_*), computed after selection: columns to read, never to select on.
    row.update({k: v for k, v in _diagnostic_scalars(record, path).items() if isinstance(v, int | float)})
    flat = flatten(config)
    flat.pop("seed", None)
    row.update({k: v for k, v in flat.items() if "." in k})  # top-level scalars (seed, sweep_name) are columns
    return row


def _diagnostic_scalars(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """A run's scalar diagnostics: those its record holds, updated by the diagnostics.json beside it.

    The file is at least as complete: the run writes it with its record, and ``python -m tsllm.diagnose``
    rewrites it afterwards (e.g. ``--level full`` after a run that computed the basic level)."""
    scalars = dict(record.get("diagnostics") or {})
    file = path.parent / "diagnostics.json"
    if not file.is_file():
        return scalars
    from tsllm.diagnostics import summary_scalars

    try:
        return {**scalars, **summary_scalars(json.loads(file.read_text()))}
    except (ValueError, KeyError, TypeError) as e:
        warn_once("%s: unreadable diagnostics (%s); the record's are used", file, e)
        return scalars


def _shown(path: Path) -> str:
    """The record's path relative to the working directory when below it, so committed tables travel."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _semantic(key: str, config: dict[str, Any]) -> bool:
    """Whether ``key`` counts in the config hash (probing records.config_hash, not a copy of its rules)."""
    return config_hash(config) != config_hash(without(config, key))


def text_of(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "null"
    return f"{value:g}" if isinstance(value, float) else str(value)


def varying_keys(df: pd.DataFrame) -> list[str]:
    """Config columns (dotted) whose values differ across the rows of ``df``."""
    return [c for c in df.columns if "." in c and df[c].map(text_of).nunique() > 1]


def _qualified(base: pd.Series, df: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """``base`` suffixed with ``[k=v, ...]`` for the ``keys`` that vary among rows sharing that base and encoder.

    Rows of different encoders never share a table cell, so a key that only tells encoders apart (ResNet's
    kernel sizes against Inception's) names nothing.

    A key a row leaves unset (null) is not named in that row's label: the others name it, so labels
    stay distinct, and the plain arm reads ``llm`` rather than ``llm[llm.num_layers=null]``.
    """
    labels = base.astype(str).copy()
    for (name, _), rows in df.groupby([base, df["encoder"].fillna("")], sort=False):
        quals = [k for k in keys if rows[k].map(text_of).nunique() > 1]
        if quals:
            named = rows[quals].apply(
                lambda r: ", ".join(f"{k}={text_of(v)}" for k, v in r.items() if text_of(v) != "null"), axis=1)
            labels.loc[rows.index] = named.map(lambda text, name=name: f"{name}[{text}]" if text else str(name))
    return labels


def leaks_test(value: Any) -> bool:
    """Whether a record's ``data.leaks_test`` says the run saw TEST statistics (a description, or older True)."""
    return value is True or (isinstance(value, str) and value not in ("", "False", "None"))


def label_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Set ``arm`` and ``variant`` from the config keys that vary in ``df``; returns ``df``.

    ``arm`` is the run's own label (``tsllm.identity``, stored as ``run_arm``) qualified by
    every reader/mode/LLM key (and :data:`ARM_SETTINGS`) that varies among its runs
    (``hybrid[llm.weights=random]``); ``variant`` is the encoder qualified by every other
    varying key (``inception[train.lr=0.0001]``), flagged when the run's data leaks TEST. Rows of one
    (variant, arm) therefore differ only in dataset and seed: nothing else is ever averaged.
    """
    if df.empty:
        return df.assign(arm=pd.Series(dtype=object), variant=pd.Series(dtype=object))
    varying = [k for k in varying_keys(df) if k not in ARM_NAME_KEYS and k not in DATASET_KEYS]
    arm_keys = [k for k in varying if k.split(".")[0] in ARM_GROUPS or k in ARM_SETTINGS]
    setting_keys = [k for k in varying if k not in arm_keys and k != "encoder.name"]
    own = df["run_arm"] if "run_arm" in df else pd.Series(None, index=df.index, dtype=object)
    df["arm"] = _qualified(own, df, arm_keys)
    variant = _qualified(df["encoder"], df, setting_keys)
    # Records say how they leak (a text such as "normalise=study_global_minmax: ..."); older ones True.
    leaks = df["data_leaks_test"].map(leaks_test)
    df["variant"] = variant.where(~leaks, variant + " (leaks TEST)")
    return df


def _matches(value: Any, wanted: str) -> bool:
    if _is_number(value) and not (isinstance(value, float) and math.isnan(value)):
        try:
            return math.isclose(float(value), float(wanted), rel_tol=1e-9)
        except ValueError:
            return False
    return text_of(value) == wanted or (value is None and wanted in ("", "None", "null"))


def parse_where(items: Sequence[str]) -> list[tuple[str, str]]:
    """``["train.lr=1e-3", ...]`` -> ``[("train.lr", "1e-3"), ...]``; a malformed item raises ValueError."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--where {item!r}: expected key=value, e.g. llm.weights=random")
        pairs.append((key.strip(), value.strip()))
    return pairs


def select(df: pd.DataFrame, where: Sequence[tuple[str, str]] = (), sweeps: Sequence[str] = ()) -> pd.DataFrame:
    """Rows matching every ``key=value`` (a tidy column or a dotted config key) and one of ``sweeps``."""
    mask = pd.Series(True, index=df.index)
    for key, wanted in where:
        if key not in df.columns:
            dotted = sorted(c for c in df.columns if "." in c)
            raise ValueError(f"--where {key}={wanted}: no column {key!r} (config keys: {', '.join(dotted[:12])}"
                             f"{', ...' if len(dotted) > 12 else ''}; or a tidy column such as dataset, arm)")
        mask &= df[key].map(lambda v, w=wanted: _matches(v, w))
    if sweeps:
        mask &= df["sweep"].isin(list(sweeps))
    return df[mask].copy()


def finish(df: pd.DataFrame, semantic: set[str] | None = None) -> pd.DataFrame:
    """Keep the config columns that vary (and count in the config hash), type the table, label the arms."""
    keep = [c for c in df.columns if "." not in c or semantic is None or c in semantic]
    df = df[keep]
    df = df[[c for c in df.columns if "." not in c] + varying_keys(df)].copy()
    return label_runs(_typed(df))


def load_records(paths: str | Path | Iterable[str | Path], where: Sequence[tuple[str, str]] = (),
                 sweeps: Sequence[str] = ()) -> pd.DataFrame:
    """Every usable ``record.json`` below ``paths`` (searched recursively) as one tidy row per finished run.

    Failed, unfinished and malformed records are skipped, each named once in a warning and listed in
    ``df.attrs["skipped"]`` (``"path: reason"``). Columns: :data:`TIDY_COLUMNS` plus every config key
    that varies across the selected runs (dotted, e.g. ``llm.weights``). ``where``/``sweeps`` filter
    as :func:`select`.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    files: dict[Path, None] = {}  # ordered set: overlapping arguments must not count a run twice
    for base in map(Path, paths):
        if base.is_file():
            files[base.resolve()] = None
        elif base.is_dir():
            files.update(dict.fromkeys(sorted(p.resolve() for p in base.rglob(RECORD))))
        else:
            warn_once("no such file or directory: %s", base)
    rows, skipped, semantic = [], [], set()
    probed: set[str] = set()
    for path in files:
        record, reason = _read(path)
        if reason is not None:
            if not _outside_selection(record, where, sweeps):
                skipped.append(f"{path}: {reason}")
            continue
        rows.append(_tidy_row(record, path))
        config = canonical(record["config"])
        for key in flatten(config):
            if key not in probed and "." in key:
                probed.add(key)
                if _semantic(key, config):
                    semantic.add(key)
    for line in skipped:
        warn_once("skipping %s", line)
    extra = sorted({k for row in rows for k in row} - set(TIDY_COLUMNS))
    df = pd.DataFrame(rows, columns=[*TIDY_COLUMNS, *extra])
    df = _consistent(_disambiguated(df))
    df = finish(select(df, where, sweeps), semantic)
    df.attrs["skipped"] = skipped
    logger.info("loaded %d finished runs; skipped %d", len(df), len(skipped))
    return df


def _disambiguated(df: pd.DataFrame) -> pd.DataFrame:
    """Suffix a dataset name with its checksum where one name stands for several different files."""
    shas = df.groupby("data_name")["data_sha256"].nunique()
    ambiguous = df["data_name"].isin(shas[shas > 1].index)
    if ambiguous.any():
        df.loc[ambiguous, "dataset"] = df.loc[ambiguous, "data_name"] + "@" + df.loc[ambiguous, "data_sha256"].str[:8]
        warn_once("datasets with several checksums kept apart: %s",
                  ", ".join(sorted(df.loc[ambiguous, "dataset"].unique())))
    return df


def _consistent(df: pd.DataFrame) -> pd.DataFrame:
    """One type per config column (mixed values become text), so CSV and parquet store them alike."""
    for column in (c for c in df.columns if "." in c):
        kinds = {type(v) for v in df[column] if v is not None and not (isinstance(v, float) and math.isnan(v))}
        numeric = all(issubclass(k, Real) and not issubclass(k, bool) for k in kinds)
        if len(kinds) > 1 and not numeric:
            df[column] = df[column].map(lambda v: None if v is None else v if isinstance(v, str) else json.dumps(v))
    return df


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    # Nullable integers keep num_kernels=6 from printing as 6.0 next to the NaN of other encoders.
    for column in INT_COLUMNS:
        if column in df:
            df[column] = pd.to_numeric(df[column], errors="coerce").round().astype("Int64")
    return df


def wall_hours(df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(each run's wall hours over every session that ran it, whether that figure is only a lower bound).

    ``wall_seconds`` is the finishing process's; the sessions before it add ``earlier_sessions_seconds``
    (to their last checkpoint). A run resumed from a checkpoint that kept no session times (older records)
    counts its last session only: a lower bound, flagged.
    """
    earlier = pd.to_numeric(df["earlier_sessions_seconds"], errors="coerce")
    resumed = pd.to_numeric(df["resumed_from_epoch"], errors="coerce").fillna(0) > 0
    hours = (pd.to_numeric(df["wall_seconds"], errors="coerce") + earlier.fillna(0)) / 3600
    return hours, resumed & earlier.isna()


def load_tidy(path: str | Path) -> pd.DataFrame:
    """Read a tidy table written by the CLI (``.csv`` or ``.parquet``)."""
    path = Path(path)
    return _typed(pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path))


def tidy_files(df: pd.DataFrame) -> dict[str, bytes]:
    """``tidy.csv`` (always) and ``tidy.parquet`` (when pyarrow imports) as bytes, built before anything is written."""
    out = {"tidy.csv": df.to_csv(index=False).encode()}
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        logger.info("pyarrow not importable: tidy.parquet not written")
    else:
        buffer = io.BytesIO()
        df.to_parquet(buffer, index=False)
        out["tidy.parquet"] = buffer.getvalue()
    return out


def write_tidy(df: pd.DataFrame, out: str | Path) -> list[Path]:
    """Write :func:`tidy_files` into ``out``; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, blob in tidy_files(df).items():
        (out / name).write_bytes(blob)
        written.append(out / name)
    return written
