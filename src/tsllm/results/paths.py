"""Where results are read from and written to (repo root, tidy table, figures, default output)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger("tsllm.results")

# The CLI's default output: under the working directory, never the committed results/ folder, so a plain
# `python -m tsllm.results DIR` cannot overwrite evidence; that takes `--out results` by name.
DEFAULT_OUT = Path("tsllm-results")


def repo_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding pyproject.toml.

    Falls back to the checkout this module lives in, so notebooks run from any folder still find it.
    """
    for base in (Path(start or Path.cwd()).resolve(), Path(__file__).resolve().parent):
        for folder in (base, *base.parents):
            if (folder / "pyproject.toml").is_file():
                return folder
    raise FileNotFoundError(f"no pyproject.toml at or above {start or Path.cwd()}")


def tidy_path() -> Path:
    """The tidy table notebooks read: ``$TSLLM_TIDY``, else ``results/tidy.csv`` under the repo root."""
    if os.environ.get("TSLLM_TIDY"):
        return Path(os.environ["TSLLM_TIDY"]).expanduser()
    return repo_root() / "results" / "tidy.csv"


def figures_dir() -> Path:
    """Where notebooks save figures: ``$TSLLM_FIG_DIR``, else ``results/figures`` under the repo root."""
    if os.environ.get("TSLLM_FIG_DIR"):
        return Path(os.environ["TSLLM_FIG_DIR"]).expanduser()
    return repo_root() / "results" / "figures"


def save_figure(fig: Any, name: str) -> Path | None:
    """Save ``fig`` as ``<figures_dir>/<name>.png`` when ``TSLLM_SAVE_FIGS=1``; returns the path or None."""
    if os.environ.get("TSLLM_SAVE_FIGS") != "1":
        return None
    folder = figures_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    logger.info("saved %s", path)
    return path
