"""UCR/UEA time-series classification data: discovery, parsing, model-ready splits and dataset sets."""

from __future__ import annotations

from tsllm.data.formats import (
    LAYOUTS,
    OFFLINE_PACKAGES,
    RawSplit,
    Source,
    data_sources,
    find_datasets,
    list_datasets,
    locate,
    read_raw,
)
from tsllm.data.names import NAMES_2015, UCR2015_85, DataError, canonical_name
from tsllm.data.sets import register_resolvers, resolve_dataset_set
from tsllm.data.splits import (
    LEAKS_TEST,
    MISSING_STRATEGIES,
    NORMALISATIONS,
    DatasetSplits,
    Split,
    load_ucr,
)

__all__ = [
    "LAYOUTS",
    "LEAKS_TEST",
    "MISSING_STRATEGIES",
    "NAMES_2015",
    "NORMALISATIONS",
    "OFFLINE_PACKAGES",
    "UCR2015_85",
    "DataError",
    "DatasetSplits",
    "RawSplit",
    "Source",
    "Split",
    "canonical_name",
    "data_sources",
    "find_datasets",
    "list_datasets",
    "load_ucr",
    "locate",
    "read_raw",
    "register_resolvers",
    "resolve_dataset_set",
]
