"""Command line: ``python -m tsllm.data list [ROOT]``."""

from __future__ import annotations

import argparse
import sys

from tsllm.data.formats import DataError, list_datasets


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m tsllm.data", description="Inspect UCR/UEA dataset roots."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="print 'NAME<TAB>LAYOUT' for each dataset found")
    listing.add_argument(
        "root", nargs="?", default=None, help="archive root (default: sktime's shipped datasets)"
    )
    args = parser.parse_args(argv)

    try:
        datasets = list_datasets(args.root)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, layout in datasets.items():
        print(f"{name}\t{layout}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
