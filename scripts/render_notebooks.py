"""Execute the notebooks of results/notebooks/ headless against a tidy table; save their figures and themselves.

Each executed notebook (with its outputs) is written beside the PNG figures it saves, in one folder:
./tsllm-results/figures by default, the folder `python -m tsllm.results` writes its tidy table beside.
The notebooks in git stay without outputs. The committed evidence under results/ is never written unless
--evidence says so, as the evidence scripts do when they regenerate the figures the README shows.
    python -m tsllm.results my_runs && python scripts/render_notebooks.py 01 03   # ./tsllm-results/figures
    python scripts/render_notebooks.py --tidy my/tidy.csv --figures my/figures 01
    python scripts/render_notebooks.py --tidy results/evidence16/tidy.csv --figures results/evidence16/figures --evidence 01 03
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tsllm.results import DEFAULT_OUT

REPO = Path(__file__).resolve().parents[1]
EVIDENCE = REPO / "results"
log = logging.getLogger("render_notebooks")


def render(notebook: Path, tidy: Path, figures: Path) -> Path:
    """Execute one notebook against ``tidy``, its figures saved into ``figures``; returns the executed copy.

    The copy is written even when a cell fails (then with the error in its outputs), and the error re-raised.
    """
    env = {**os.environ, "TSLLM_TIDY": str(tidy), "TSLLM_SAVE_FIGS": "1", "TSLLM_FIG_DIR": str(figures),
           "MPLBACKEND": "Agg"}
    nb = nbformat.read(notebook, as_version=4)
    figures.mkdir(parents=True, exist_ok=True)
    executed = figures / notebook.name
    try:
        NotebookClient(nb, kernel_name="python3", timeout=600,
                       resources={"metadata": {"path": str(notebook.parent)}}).execute(env=env)
    finally:
        nbformat.write(nb, executed)
    return executed


def main(argv: list[str] | None = None) -> int:
    """Render the notebooks named by prefix (default: all); 2 when the folder is committed evidence unasked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tidy", default=str(DEFAULT_OUT / "tidy.csv"),
                        help=f"the tidy table to read (default: {DEFAULT_OUT}/tidy.csv, what tsllm.results writes)")
    parser.add_argument("--figures", default=str(DEFAULT_OUT / "figures"),
                        help=f"folder for the figures and the executed notebooks (default: {DEFAULT_OUT}/figures)")
    parser.add_argument("--evidence", action="store_true",
                        help="allow --figures under the committed results/ folder (regenerating the evidence)")
    parser.add_argument("prefixes", nargs="*", help="notebook name prefixes (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tidy, figures = Path(args.tidy).resolve(), Path(args.figures).resolve()
    if figures.is_relative_to(EVIDENCE) and not args.evidence:
        print(f"error: --figures {args.figures} is under {EVIDENCE}, the committed evidence; pass --evidence to "
              "regenerate it on purpose, or choose another folder", file=sys.stderr)
        return 2
    notebooks = [p for p in sorted((REPO / "results" / "notebooks").glob("*.ipynb"))
                 if not args.prefixes or p.name.startswith(tuple(args.prefixes))]
    if not notebooks:
        print(f"error: no notebook in results/notebooks starts with {' or '.join(args.prefixes)}", file=sys.stderr)
        return 2
    for path in notebooks:
        executed = render(path, tidy, figures)
        log.info("executed %s against %s: %s", path.relative_to(REPO), tidy, executed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
