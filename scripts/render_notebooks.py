"""Execute notebooks in results/notebooks/ headless and save their figures as PNG under results/figures/.

The notebooks in git stay without outputs; this renders the figures the README shows.
    python scripts/render_notebooks.py --tidy results/tidy.csv 01 03
    python scripts/render_notebooks.py --tidy results/grid/tidy.csv 02
    python scripts/render_notebooks.py --tidy results/evidence16/tidy.csv --figures results/evidence16/figures 01 03
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("render_notebooks")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tidy", default=str(REPO / "results" / "tidy.csv"), help="the tidy table to read")
    parser.add_argument("--figures", default=None,
                        help="folder the figures go to (default: $TSLLM_FIG_DIR, else results/figures)")
    parser.add_argument("prefixes", nargs="*", help="notebook name prefixes (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.update(TSLLM_TIDY=str(Path(args.tidy).resolve()), TSLLM_SAVE_FIGS="1", MPLBACKEND="Agg")
    if args.figures:
        os.environ["TSLLM_FIG_DIR"] = str(Path(args.figures).resolve())
    for path in sorted((REPO / "results" / "notebooks").glob("*.ipynb")):
        if args.prefixes and not path.name.startswith(tuple(args.prefixes)):
            continue
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, kernel_name="python3", timeout=600,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        log.info("executed %s against %s", path.relative_to(REPO), args.tidy)


if __name__ == "__main__":
    main()
