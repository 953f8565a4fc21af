"""Experiment trackers: a no-op one and Weights & Biases (offline unless told otherwise).

conf/logger/*.yaml names the class and its arguments; the run calls start, log per epoch, finish.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

SWEEP_NAME_MAX = 80


def run_labels(cfg: Any, dataset: str, arm: str, mode: str, cell: str) -> tuple[str, list[str]]:
    """A run's name and tags: dataset, encoder, mode, the arm (reader and control), LLM, its weights, the cell
    (tsllm.identity: the runs of a sweep that differ in anything but the seed differ in it), seed.

    Standalone runs have no LLM; a run under a random-weight LLM is told apart from a pretrained one.
    """
    parts = {"dataset": dataset, "encoder": cfg.encoder.name, "mode": mode, "arm": arm}
    if mode != "standalone":
        parts["llm"] = cfg.llm.name
        parts["weights"] = cfg.llm.weights
    parts["cell"] = cell[:8]
    parts["seed"] = str(cfg.seed)
    name = "-".join(v if k != "seed" else f"s{v}" for k, v in parts.items())
    return name, [f"{k}:{v}" for k, v in parts.items()]


SWEEP_ENV = "TSLLM_SWEEP_NAME"


def sweep_name_from_overrides(overrides: list[str], excluded: list[str] | set[str]) -> str:
    """A folder name made of the command line's overrides, e.g. `encoder=mlp_seed=0,1`; "default" if none."""
    kept = sorted(o.lstrip("+~") for o in overrides
                  if (key := o.split("=", 1)[0].lstrip("+~")) not in excluded and not key.startswith("hydra"))
    if not kept:
        return "default"
    name = re.sub(r"[^A-Za-z0-9._=,+-]", "-", "_".join(kept))
    if len(name) > SWEEP_NAME_MAX:  # long grids: a readable head and a hash of the whole
        name = f"{name[:SWEEP_NAME_MAX - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return name


class SweepNameCallback(Callback):
    """Names a sweep (or run) that no experiment names, from its command-line overrides.

    conf/train.yaml reads `sweep_name` from the environment variable this sets before the launcher
    resolves the sweep folder; jobs inherit it (joblib, submitit, SLURM), so every cell of a sweep
    shares one folder and W&B group while unrelated sweeps do not pile into multirun/default.
    """

    def _set(self, config: DictConfig) -> None:
        excluded = config.hydra.job.config.override_dirname.exclude_keys
        os.environ[SWEEP_ENV] = sweep_name_from_overrides(list(config.hydra.overrides.task), set(excluded))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._set(config)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._set(config)


class NullTracker:
    """Tracks nothing; the run record on disk is still written."""

    def start(self, *, name: str, run_id: str, config: dict[str, Any], run_dir: Path,
              tags: list[str] | None = None) -> None:
        """Open the run; `tags` add to the tracker's configured ones."""

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

    def start(self, *, name: str, run_id: str, config: dict[str, Any], run_dir: Path,
              tags: list[str] | None = None) -> None:
        import wandb

        self.run = wandb.init(
            project=self.project, entity=self.entity, mode=self.mode, group=self.group,
            tags=[*self.tags, *(t for t in tags or [] if t not in self.tags)],
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
