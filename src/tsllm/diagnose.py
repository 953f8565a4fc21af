"""`python -m tsllm.diagnose RUN_DIR [RUN_DIR ...] [--level basic|full]`: diagnostics of finished runs.

Loads each run's selected checkpoint and the data its record names, writes diagnostics.json (and, at
level full, a t-SNE PNG) into the run directory. Given a hybrid run and the standalone run of the same
encoder, dataset and seed, level full also records the CKA between them. `--table OUT.csv` collects the
scalar summaries of every diagnosed run under the given directories into one tidy table.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tsllm.diagnostics import (
    DiagnosticsError,
    cross_run_cka,
    diagnostics_table,
    is_llm_reader,
    load_run,
    not_applicable_message,
    run_diagnostics,
)
from tsllm.diagnostics.runner import write

log = logging.getLogger("tsllm.diagnose")


def _pair_key(record: dict) -> tuple:
    return record.get("dataset"), record.get("encoder"), record.get("seed"), record.get("num_tokens")


def diagnose(run_dirs: list[Path], level: str = "basic", max_series: int | None = 1000) -> dict[Path, dict]:
    """Diagnose each run; pairs hybrid and standalone runs of the same encoder, dataset and seed for CKA."""
    loaded = {d: load_run(d) for d in run_dirs}  # all bad inputs surface before any work
    results = {}
    for d, (model, data, _record) in loaded.items():
        if not is_llm_reader(model.reader):
            log.warning(not_applicable_message(d))
        results[d] = run_diagnostics(model, data, d, level, max_series=max_series)
        log.info("%s: diagnostics (%s) -> %s", d, level, d / "diagnostics.json")
    if level == "full":
        standalone = {_pair_key(r): (d, m, data) for d, (m, data, r) in loaded.items() if r.get("mode") == "standalone"}
        for d, (model, data, record) in loaded.items():
            twin = standalone.get(_pair_key(record)) if is_llm_reader(model.reader) else None
            if twin is not None:
                results[d]["cka_vs_standalone"] = {"run_dir": str(twin[0]),
                                                   **cross_run_cka((model, data), twin[1:], max_series=max_series)}
                write(d, results[d])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsllm.diagnose", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="finished run directories (record.json + checkpoint)")
    parser.add_argument("--level", choices=("basic", "full"), default="basic")
    parser.add_argument("--max-series", type=int, default=1000, help="at most this many series per split")
    parser.add_argument("--table", type=Path, default=None,
                        help="also write the tidy diagnostics table (.csv or .parquet) of every run under RUN_DIRs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        diagnose(args.run_dirs, args.level, args.max_series)
    except DiagnosticsError as e:
        log.error("%s", e)
        return 2
    if args.table is not None:
        import pandas as pd

        table = pd.concat([diagnostics_table(d) for d in args.run_dirs]).drop_duplicates("run_dir")
        args.table.parent.mkdir(parents=True, exist_ok=True)
        (table.to_parquet if args.table.suffix == ".parquet" else table.to_csv)(args.table, index=False)
        log.info("%d runs -> %s", len(table), args.table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
