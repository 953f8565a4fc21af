"""UCR/UEA time-series classification data: discovery, parsing and model-ready splits."""

from tsllm.data.formats import LAYOUTS, DataError, RawSplit, list_datasets, read_raw
from tsllm.data.splits import MISSING_STRATEGIES, NORMALISATIONS, DatasetSplits, Split, load_ucr

__all__ = [
    "LAYOUTS",
    "MISSING_STRATEGIES",
    "NORMALISATIONS",
    "DataError",
    "DatasetSplits",
    "RawSplit",
    "Split",
    "list_datasets",
    "load_ucr",
    "read_raw",
]
