"""Named sets of datasets for sweeps.

Names and their 2015/2018 spellings live in :mod:`tsllm.data.names`. A *dataset set* is
what a sweep iterates over; :func:`resolve_dataset_set` expands a spec (``"ucr2015"``,
``"ucr2015_offline"``, ``"shipped"``, ``"all"``, one name, ``"A,B"`` or a list) and checks
every name against the data root before anything is trained. :func:`register_resolvers`
exposes it to Hydra configs as ``${tsllm_datasets:SPEC,ROOT}``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable

from tsllm.data.formats import describe_sources, list_datasets, scan_source, sktime_source
from tsllm.data.names import (  # noqa: F401  (NAMES_2015, folder_candidates: re-exported for callers)
    NAMES_2015,
    UCR2015_85,
    DataError,
    canonical_name,
    closest_names,
    folder_candidates,
)

# Keywords of resolve_dataset_set (matched case-insensitively).
SET_KEYWORDS = ("all", "ucr2015", "ucr2015_offline", "shipped")
RESOLVER_NAME = "tsllm_datasets"
# Names that Hydra's override grammar takes verbatim in a sweep value; others get quoted.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def _tokens(spec) -> list[str]:
    """Spec as a flat list of stripped, non-empty tokens (strings are split on commas)."""
    if spec is None:
        return []
    if isinstance(spec, str):
        items: Iterable = spec.split(",")
    elif isinstance(spec, Iterable):  # list, tuple, OmegaConf ListConfig
        items = spec
    else:
        raise DataError(f"dataset set must be a name, a comma-separated string or a list, got {spec!r}")
    tokens = []
    for item in items:
        if not isinstance(item, str):
            raise DataError(f"dataset names must be strings, got {item!r} in {list(items)!r}")
        tokens.extend(t.strip() for t in item.split(",") if t.strip())
    return tokens


def resolve_dataset_set(spec, root: str | os.PathLike | None = None) -> list[str]:
    """Expand a dataset-set spec into canonical names, all present under ``root``.

    ``spec`` is ``"all"`` (every dataset under ``root``; ``root=None`` = sktime's shipped
    ones and those of the offline archive packages), ``"ucr2015"`` (the 85 of
    :data:`UCR2015_85`), ``"ucr2015_offline"`` (those of the 85 that sktime or the offline
    packages hold), ``"shipped"`` (those of the 85 that ship with sktime), a dataset name in either spelling, a comma-separated string or
    a list/tuple of any of these. Names are deduplicated (by canonical name), order kept;
    keywords expand in sorted order. Raises one :class:`DataError` listing every missing
    name, so a sweep fails before its first run rather than at its 40th.
    """
    tokens = _tokens(spec)
    if not tokens:
        raise DataError(f"empty dataset set {spec!r}; give names or one of {', '.join(SET_KEYWORDS)}")
    available = list_datasets(root)  # folder -> layout; validates the root too
    requested: list[str] = []
    for token in tokens:
        keyword = token.lower()
        if keyword == "all":
            requested.extend(sorted(canonical_name(folder) for folder in available))
        elif keyword == "ucr2015":
            requested.extend(UCR2015_85)
        elif keyword == "ucr2015_offline":
            offline = {canonical_name(folder) for folder in (available if root is None else list_datasets())}
            requested.extend(sorted(offline.intersection(UCR2015_85)))
        elif keyword == "shipped":
            shipped = {canonical_name(folder) for folder in scan_source(sktime_source())}
            requested.extend(sorted(shipped.intersection(UCR2015_85)))
        else:
            requested.append(token)

    names: dict[str, str] = {}  # canonical -> spelling as requested (first one wins)
    for token in requested:
        names.setdefault(canonical_name(token), token)
    missing = [token for token in names.values() if not any(f in available for f in folder_candidates(token))]
    if missing:
        message = (
            f"{len(missing)} of {len(names)} requested datasets are missing from {describe_sources(root)}: "
            f"{', '.join(sorted(missing))}"
        )
        known = {*available, *map(canonical_name, available)}
        hints = [
            f"{name} -> {close[0]}"
            for name in sorted(missing)
            if (close := closest_names(name, known, n=1, cutoff=0.8))
        ]
        if hints:
            message += f" (close matches: {', '.join(hints)})"
        raise DataError(message)
    return list(names)


def _sweep_value(spec, root) -> str:
    """``resolve_dataset_set`` as a Hydra sweep value: names joined by commas."""
    if root is not None and not isinstance(root, str | os.PathLike):
        raise DataError(f"data root must be a path or null, got {root!r}")
    names = resolve_dataset_set(spec, root)
    quoted = []
    for name in names:
        if _PLAIN_NAME.fullmatch(name):
            quoted.append(name)
        elif "'" not in name and "\\" not in name:
            quoted.append(f"'{name}'")
        else:
            raise DataError(f"dataset name {name!r} cannot be written as a Hydra sweep value")
    return ",".join(quoted)


def _sweep_value_or_exit(spec, root) -> str:
    """The sweep value, or one clear line and exit 2: the sweep stops before any job, with no traceback."""
    try:
        return _sweep_value(spec, root)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        # SystemExit passes through OmegaConf and Hydra, which would wrap an Exception in a traceback.
        raise SystemExit(2) from None


def register_resolvers() -> None:
    """Register ``${tsllm_datasets:SPEC,ROOT}`` with OmegaConf (safe to call repeatedly).

    It returns the comma-joined canonical names of :func:`resolve_dataset_set`, for use
    in ``hydra.sweeper.params``; a missing dataset fails the interpolation with the
    :class:`DataError` message on stderr and exit status 2.
    """
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver(RESOLVER_NAME, _sweep_value_or_exit, replace=True)
