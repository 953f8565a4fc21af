"""`python -m tsllm.reproduce RUN_DIR [RUN_DIR ...]`: re-run a record's exact config and compare what it reports.

A run's weights are not committed: its record is the evidence, and this is how a record is checked. The
record's resolved config is re-run in a temporary directory (no tracker, no diagnostics: neither changes a
number) with the CPU threads the run used, and the re-run's test accuracy, the other reported figures and
every epoch of the history are compared with the record's, exactly. Any difference is named, and the exit
status is 1; a record whose config no longer gives its own hash (edited since the run) fails at once.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from tsllm.records import RECORD, config_hash, read_record, source_digest

log = logging.getLogger("tsllm.reproduce")
#: What a record reports beside its history; compared exactly (timing and cost are not numbers of the run).
REPORTED = ("test_acc", "test_loss", "test_acc_last_epoch", "val_acc", "val_loss", "best_epoch", "epochs_run",
            "selection", "stop_reason", "train_acc_last_epoch", "study_best_test_acc", "study_min_train_loss_test_acc")
#: Threads of a record that does not say: every committed evidence sweep ran with OMP_NUM_THREADS=1.
THREADS_IF_UNRECORDED = 1


class ReproduceError(ValueError):
    """A run directory that cannot be re-run: one line."""


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _figures(record: dict[str, Any], again: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(name, the record's value, the re-run's) of every reported figure and every epoch's history entry."""
    pairs = [(key, record[key], again.get(key)) for key in REPORTED if key in record]
    for i, (a, b) in enumerate(zip(record.get("history") or [], again.get("history") or [], strict=False)):
        pairs += [(f"history[{i}].{key}", a.get(key), b.get(key)) for key in sorted(set(a) | set(b))]
    return pairs


def _relative(a: Any, b: Any) -> float | None:
    """|a - b| / |a| of two floats (None for anything else)."""
    if not (isinstance(a, float) and isinstance(b, float)):
        return None
    return abs(a - b) / abs(a) if a != 0 else (0.0 if b == 0 else math.inf)


def loss_drift(record: dict[str, Any], again: dict[str, Any]) -> tuple[float, str | None]:
    """The largest relative difference of a loss between a record and its re-run, and where (0.0, None if none)."""
    drifts = [(d, name) for name, a, b in _figures(record, again)
              if name.endswith("loss") and (d := _relative(a, b)) is not None and d > 0]
    return max(drifts, default=(0.0, None))


def compare(record: dict[str, Any], again: dict[str, Any], rtol: float = 0.0) -> list[str]:
    """Every difference between a record and its re-run, one line each ([] when they agree).

    Losses may differ by a relative ``rtol``; every other figure (accuracies, epochs, selection) must be equal.
    """
    diffs = []
    if record.get("data", {}).get("sha256") != again.get("data", {}).get("sha256"):
        diffs.append(f"data: the dataset files differ (sha256 {record.get('data', {}).get('sha256')} in the record, "
                     f"{again.get('data', {}).get('sha256')} now)")
    old, new = record.get("history") or [], again.get("history") or []
    if len(old) != len(new):
        diffs.append(f"history: {len(old)} epochs in the record, {len(new)} re-run")
    for name, a, b in _figures(record, again):
        if _same(a, b):
            continue
        drift = _relative(a, b) if name.endswith("loss") else None
        if drift is None or not drift <= rtol:  # a NaN against a number is a difference at any rtol
            diffs.append(f"{name}: {a!r} in the record, {b!r} re-run")
    return diffs


def reproduce(run_dir: str | Path, *, keep: str | Path | None = None,
              rtol: float = 0.0) -> tuple[list[str], dict[str, Any]]:
    """(differences, the re-run's record) of a finished run re-run from its record's config.

    ``keep``: re-run into this folder instead of a temporary one (to look at its files afterwards);
    ``rtol``: the relative difference allowed to losses (:func:`compare`).
    """
    from tsllm.train import run

    run_dir = Path(run_dir)
    record = read_record(run_dir) if run_dir.is_dir() else None
    if record is None:
        raise ReproduceError(f"{run_dir}: no {RECORD} (not a tsllm run directory)")
    if record.get("status") != "finished" or "config" not in record:
        raise ReproduceError(f"{run_dir}: the run is {record.get('status')!r}, not finished: nothing to compare")
    if config_hash(record["config"]) != record.get("config_hash"):
        return [f"config: it hashes to {config_hash(record['config'])}, the record says {record.get('config_hash')}: "
                "edited since the run (or written by a tsllm whose config hash differed)"], {}
    cfg = OmegaConf.create(record["config"])
    cfg.logger = {"_target_": "tsllm.tracking.NullTracker"}
    cfg.diagnostics = {"level": "none", "batch_size": 64, "max_series": 1000}
    threads = record.get("threads") or THREADS_IF_UNRECORDED
    cfg.train.threads = threads
    ran = record.get("env", {}).get("source", {}).get("sha256")
    if ran is not None and ran != source_digest()["sha256"]:
        log.info("%s: the tsllm source differs from the one the run ran (env.source); the numbers decide", run_dir)
    with tempfile.TemporaryDirectory(prefix="tsllm-reproduce-") as tmp:
        target = Path(keep) if keep is not None else Path(tmp) / "run"
        again = run(cfg, run_dir=target)
    return compare(record, again, rtol), again


def cpu_note(record: dict[str, Any], again: dict[str, Any]) -> str | None:
    """Why a re-run on another CPU may differ, when the two CPUs differ or the record does not name its own."""
    ran, now = record.get("env", {}).get("cpu"), again.get("env", {}).get("cpu")
    if ran == now:
        return None
    return (f"the run was on {ran or 'a CPU its record does not name (written before records did)'}, the re-run "
            f"on {now}: float kernels differ between CPUs in their last bits, and training carries that on")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsllm.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="finished run directories (record.json)")
    parser.add_argument("--keep", type=Path, default=None, help="re-run into this folder (one run directory only)")
    parser.add_argument("--rtol", type=float, default=0.0,
                        help="relative difference allowed to losses (a re-run on another CPU); default 0: exact")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    if args.keep is not None and len(args.run_dirs) > 1:
        parser.error("--keep takes one run directory")
    failed = 0
    for run_dir in args.run_dirs:
        start = time.perf_counter()
        try:
            diffs, again = reproduce(run_dir, keep=args.keep, rtol=args.rtol)
        except ReproduceError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        record = read_record(run_dir)
        if diffs:
            failed += 1
            print(f"{run_dir}: DIFFERS in {len(diffs)} place(s)")
            for line in diffs[:50]:
                print(f"  {line}")
            if len(diffs) > 50:
                print(f"  ... and {len(diffs) - 50} more")
            if again and (note := cpu_note(record, again)):
                print(f"  note: {note}")
        else:
            drift, where = loss_drift(record, again)
            how = "exactly" if where is None else (f"within --rtol {args.rtol:g}: every figure but the losses exactly, "
                                                   f"the losses by at most {drift:.2g} relative ({where})")
            print(f"{run_dir}: reproduced {how}: test_acc {again['test_acc']:.4f}, {len(again.get('history') or [])} "
                  f"epochs of history, {again.get('threads')} thread(s), {time.perf_counter() - start:.0f} s")
            if where is not None and (note := cpu_note(record, again)):
                print(f"  note: {note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
