"""UCR/UEA time-series classification data: discovery, parsing, model-ready splits and dataset sets."""

from __future__ import annotations

from tsllm.data.formats import LAYOUTS, DataError, RawSplit, list_datasets, read_raw
from tsllm.data.sets import (
    NAMES_2015,
    UCR2015_85,
    canonical_name,
    register_resolvers,
    resolve_dataset_set,
)
from tsllm.data.splits import MISSING_STRATEGIES, NORMALISATIONS, DatasetSplits, Split, load_ucr

__all__ = [
    "LAYOUTS",
    "MISSING_STRATEGIES",
    "NAMES_2015",
    "NORMALISATIONS",
    "UCR2015_85",
    "DataError",
    "DatasetSplits",
    "RawSplit",
    "Split",
    "canonical_name",
    "list_datasets",
    "load_ucr",
    "read_raw",
    "register_resolvers",
    "resolve_dataset_set",
]
