"""A finished run rebuilt from its directory: record, data and the selected checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from tsllm.data import DataError, DatasetSplits
from tsllm.loop import BEST
from tsllm.records import RECORD, read_record

log = logging.getLogger(__name__)


class DiagnosticsError(ValueError):
    """Bad input to the diagnostics: one line naming the run directory and what is wrong."""


def load_run(run_dir: str | Path) -> tuple[nn.Module, DatasetSplits, dict[str, Any]]:
    """(model with its selected weights, the same data splits, the record) of a finished run."""
    from tsllm.build import build, load_data

    run_dir = Path(run_dir)
    record = read_record(run_dir) if run_dir.is_dir() else None
    if record is None:
        raise DiagnosticsError(f"{run_dir}: no {RECORD} (not a tsllm run directory)")
    if not (run_dir / BEST).is_file():
        raise DiagnosticsError(f"{run_dir}: no {BEST} (the run never saved a selected checkpoint)")
    if record.get("status") != "finished":
        raise DiagnosticsError(f"{run_dir}: the run is {record.get('status')!r}, not finished (selection not done)")
    if "config" not in record:
        raise DiagnosticsError(f"{run_dir}/{RECORD}: no 'config' key (a record from an older tsllm?)")
    cfg = OmegaConf.create(record["config"])
    try:
        data = load_data(cfg)
    except DataError as e:
        held = record.get("data", {}).get("files", {}).get("train") or f"data.root={cfg.data.root}"
        raise DiagnosticsError(f"{run_dir}: dataset {cfg.data.name!r} cannot be found at the path the record "
                               f"holds ({held}): {str(e).splitlines()[0]}") from None
    recorded = record.get("data", {}).get("sha256")
    if recorded is not None and recorded != data.meta.get("sha256"):
        raise DiagnosticsError(f"{run_dir}: the dataset files at {data.meta.get('files', {}).get('train')} "
                               "changed since the run (checksum differs from the record)")
    model = build(cfg, data=data, run_dir=run_dir).model  # seeded as the run was: a random LLM is the same
    try:
        model.load_trainable_state(torch.load(run_dir / BEST, map_location="cpu", weights_only=True))
    except RuntimeError as e:  # another architecture than the record describes
        raise DiagnosticsError(f"{run_dir}/{BEST} does not fit the model the record describes ({e})") from None
    return model.eval(), data, record
