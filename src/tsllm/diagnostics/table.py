"""The tidy diagnostics table: one row per run, identity columns + scalar summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tsllm.diagnostics.runner import FILE, summary_scalars
from tsllm.records import read_record

IDENTITY = ("dataset", "encoder", "mode", "llm", "seed", "lr", "num_tokens", "test_acc", "val_acc")


def diagnostics_table(root: str | Path) -> pd.DataFrame:
    """Every run under root that has a diagnostics.json: run identity + `diag_*` scalars, one row each."""
    rows = []
    for path in sorted(Path(root).rglob(FILE)):
        record = read_record(path.parent) or {}
        llm_cfg = record.get("config", {}).get("llm", {})
        row = {"run_dir": str(path.parent), **{k: record.get(k) for k in IDENTITY},
               "llm_weights": llm_cfg.get("weights") if record.get("mode") != "standalone" else None}
        row.update(summary_scalars(json.loads(path.read_text())))
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["run_dir", *IDENTITY, "llm_weights"])
