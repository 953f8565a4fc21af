"""Shared test helpers: compose the real Hydra config, then force tiny settings."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from tsllm.train import CONF_DIR

# Nothing may be fetched from a hub in tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")

FAST = ["logger=none", "train.epochs=1", "data.name=ItalyPowerDemand"]


def dev_dependency(module: str) -> ModuleType:
    """Import a module that `tsllm[dev]` installs; fail, never skip, where it is missing.

    The suite runs in the environment scripts/setup.sh makes, which has every extra: a missing one is a broken
    set-up, and a skip would hide the tests of that path (bitsandbytes' did, in CI, until 2026-12-07).
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.fail(f"{module} is not importable ({e}); the suite needs tsllm[dev]: pip install -e '.[dev]'",
                    pytrace=False)


def make_cfg(*overrides: str) -> DictConfig:
    """The real config composed with tiny defaults; later overrides win."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=[*FAST, *overrides])


class CrashAfter:
    """A tracker that raises after a given epoch: an interrupted run, made on purpose."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def start(self, **_) -> None:
        pass

    def log(self, row: dict, step: int) -> None:
        if step >= self.epoch:
            raise KeyboardInterrupt(f"simulated interruption after epoch {step}")

    def finish(self, summary: dict, status: str = "finished") -> None:
        pass


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"
