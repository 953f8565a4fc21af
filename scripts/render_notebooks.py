"""Execute the notebooks in results/notebooks/ headless and save their figures as PNG under results/figures/.

The notebooks in git stay without outputs; this renders the figures the README shows from the tidy
table named by $TSLLM_TIDY (default results/tidy.csv).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("render_notebooks")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("TSLLM_TIDY", str(REPO / "results" / "tidy.csv"))
    os.environ["TSLLM_SAVE_FIGS"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")
    for path in sorted((REPO / "results" / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, kernel_name="python3", timeout=600,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        log.info("executed %s", path.relative_to(REPO))


if __name__ == "__main__":
    main()
