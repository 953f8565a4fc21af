"""Experiment trackers: a no-op one and Weights & Biases (offline unless told otherwise).

conf/logger/*.yaml names the class and its arguments; the run calls start, log per epoch, finish.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class NullTracker:
    """Tracks nothing; the run record on disk is still written."""

    def start(self, *, name: str, run_id: str, config: dict[str, Any], run_dir: Path) -> None:
        """Open the run."""

    def log(self, row: dict[str, float], step: int) -> None:
        """Per-epoch metrics."""

    def finish(self, summary: dict[str, Any], status: str = "finished") -> None:
        """Close the run with its summary."""


class WandbTracker(NullTracker):
    """A W&B run per training run: config, per-epoch metrics and the summary.

    The run id is the run's config hash, so a resumed run continues its W&B run instead of starting a
    second one, and runs of one sweep share a group, so W&B's sweep views work once synced.
    """

    def __init__(self, project: str = "tsllm", mode: str = "offline", group: str | None = None,
                 tags: list[str] | None = None, entity: str | None = None) -> None:
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode={mode!r}: expected offline, online or disabled")
        self.project, self.mode, self.group, self.entity = project, mode, group, entity
        self.tags = list(tags or [])
        self.run = None

    def start(self, *, name: str, run_id: str, config: dict[str, Any], run_dir: Path) -> None:
        import wandb

        self.run = wandb.init(
            project=self.project, entity=self.entity, mode=self.mode, group=self.group, tags=self.tags,
            name=name, id=run_id, resume="allow", config=config, dir=str(run_dir),
            settings=wandb.Settings(console="off", silent=True),
        )

    def log(self, row: dict[str, float], step: int) -> None:
        if self.run is not None:
            self.run.log(row, step=step)

    def finish(self, summary: dict[str, Any], status: str = "finished") -> None:
        if self.run is None:
            return
        for k, v in summary.items():
            self.run.summary[k] = v
        self.run.finish(exit_code=0 if status == "finished" else 1)
        self.run = None
