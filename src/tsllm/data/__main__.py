"""Command line: ``python -m tsllm.data list [ROOT] [--set SPEC]``."""

from __future__ import annotations

import argparse
import sys

from tsllm.data.formats import DataError, list_datasets
from tsllm.data.sets import SET_KEYWORDS, resolve_dataset_set


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m tsllm.data", description="Inspect UCR/UEA dataset roots."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser(
        "list",
        help="print 'NAME<TAB>LAYOUT' for each dataset found, or the names of a dataset set",
    )
    listing.add_argument(
        "root", nargs="?", default=None, help="archive root (default: sktime's shipped datasets)"
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
            return 0
        datasets = list_datasets(args.root)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, layout in datasets.items():
        print(f"{name}\t{layout}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
