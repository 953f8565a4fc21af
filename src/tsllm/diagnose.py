"""`python -m tsllm.diagnose RUN_DIR [RUN_DIR ...] [--level basic|full] [--force]`: diagnostics of finished runs.

Loads each run's selected checkpoint and the data its record names, writes diagnostics.json (and, at
level full, a t-SNE PNG) into the run directory and prints the numbers that matter. Without ``--level``
a run is diagnosed at the level it already has (basic when it has none). Richer diagnostics are never
replaced by poorer ones (full by basic) unless ``--force`` is given; a CKA against the standalone twin,
computed on the same weights, is kept when the twin is not given this time. Given a hybrid run and the
standalone run of the same encoder, dataset and seed, level full also records the CKA between them.
``--table OUT.csv`` collects the scalar summaries of every diagnosed run under the given directories.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from tsllm.diagnostics import (
    FILE,
    DiagnosticsError,
    cross_run_cka,
    diagnostics_table,
    is_llm_reader,
    load_run,
    not_applicable_message,
    run_diagnostics,
    summary_scalars,
)
from tsllm.diagnostics.runner import write

log = logging.getLogger("tsllm.diagnose")
RICHNESS = {"none": 0, "basic": 1, "full": 2}
CARRIED = "cka_vs_standalone"  # computed on the same weights with a twin run: kept when no twin is given


def _pair_key(record: dict) -> tuple:
    return record.get("dataset"), record.get("encoder"), record.get("seed"), record.get("num_tokens")


def existing(run_dir: Path) -> dict[str, Any]:
    """The run's diagnostics.json ({} when it has none or it cannot be read)."""
    try:
        return json.loads((run_dir / FILE).read_text())
    except (OSError, ValueError):
        return {}


def diagnose(run_dirs: list[Path], level: str | None = None, max_series: int | None = 1000,
             force: bool = False) -> dict[Path, dict]:
    """Diagnose each run; pairs hybrid and standalone runs of the same encoder, dataset and seed for CKA.

    ``level=None`` keeps each run's own level (basic when it has none). A run whose diagnostics are richer
    than ``level`` is left as it is unless ``force``; its existing diagnostics are returned.
    """
    loaded = {d: load_run(d) for d in run_dirs}  # all bad inputs surface before any work
    results, computed = {}, set()
    for d, (model, data, _record) in loaded.items():
        before = existing(d)
        have = before.get("level", "none")
        want = level or (have if have != "none" else "basic")
        if RICHNESS[want] < RICHNESS[have] and not force:
            log.warning("%s: keeps its %s diagnostics (asked for %s; --force replaces them)", d, have, want)
            results[d] = before
            continue
        if not is_llm_reader(model.reader):
            log.warning(not_applicable_message(d))
        results[d] = run_diagnostics(model, data, d, want, max_series=max_series)
        computed.add(d)
        if CARRIED in before and want == "full":
            results[d][CARRIED] = before[CARRIED]
            write(d, results[d])
    full = [d for d in computed if results[d].get("level") == "full"]
    standalone = {_pair_key(r): (d, m, data) for d, (m, data, r) in loaded.items() if r.get("mode") == "standalone"}
    for d in full:
        model, data, record = loaded[d]
        twin = standalone.get(_pair_key(record)) if is_llm_reader(model.reader) else None
        if twin is not None:
            results[d][CARRIED] = {"run_dir": str(twin[0]),
                                   **cross_run_cka((model, data), twin[1:], max_series=max_series)}
            write(d, results[d])
    return results


def summary_line(run_dir: Path, diag: dict[str, Any]) -> str:
    """One line of the numbers that matter: norm ratio, nearest-word cosine, collapse, probe by layer."""
    s = summary_scalars(diag)
    parts = [f"{run_dir}: {diag.get('level', 'none')}"]

    def add(label: str, key: str, fmt: str) -> None:
        if f"diag_{key}" in s:
            parts.append(f"{label} {s[f'diag_{key}']:{fmt}}")

    add("norm ratio", "norm_ratio_median", ".2f")
    add("nearest-word cosine", "top1_cosine", ".3f")
    add("collapse cosine", "collapse_cosine", ".3f")
    curve = (diag.get("probes") or {}).get("read") or []
    if curve:
        chosen = (diag.get("probes") or {}).get("read_chosen_without_test") or {}
        where = f" (chosen without TEST: layer {chosen['layer']}, {chosen['test']:.3f})" if chosen.get("layer") \
            is not None else ""
        parts.append("probe by layer " + " ".join(f"{a:.2f}" for a in curve) + where)
    if CARRIED in diag:
        add("CKA read vs standalone", "cka_standalone_read_vs_standalone_pooled", ".3f")
    if len(parts) == 1:
        parts.append("no LLM reads the latents: nothing to diagnose")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsllm.diagnose", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="finished run directories (record.json + checkpoint)")
    parser.add_argument("--level", choices=("basic", "full"), default=None,
                        help="default: the level each run already has (basic when it has none)")
    parser.add_argument("--force", action="store_true", help="replace richer diagnostics with poorer ones")
    parser.add_argument("--max-series", type=int, default=1000, help="at most this many series per split")
    parser.add_argument("--table", type=Path, default=None,
                        help="also write the tidy diagnostics table (.csv or .parquet) of every run under RUN_DIRs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        results = diagnose(args.run_dirs, args.level, args.max_series, force=args.force)
    except DiagnosticsError as e:
        log.error("%s", e)
        return 2
    for d, diag in results.items():
        print(summary_line(d, diag))
    if args.table is not None:
        import pandas as pd

        table = pd.concat([diagnostics_table(d) for d in args.run_dirs]).drop_duplicates("run_dir")
        args.table.parent.mkdir(parents=True, exist_ok=True)
        (table.to_parquet if args.table.suffix == ".parquet" else table.to_csv)(args.table, index=False)
        log.info("%d runs -> %s", len(table), args.table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
